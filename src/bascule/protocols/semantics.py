"""HTTP response rules that hold on every wire: which responses carry no content, what length a response
declares and whether the app kept to it, the one-write fast path, the request body limit, the app deadline.

Each wire writes these its own way (HTTP/1.1 as a ``content-length`` line or chunks, HTTP/2 as HPACK fields
and DATA frames), but the rules are HTTP's (RFC 9110), not the wire's, and answers must not depend on the
protocol a client happened to pick. They used to be written once per wire, and had drifted (issue 12: the
length of a HEAD answer was inferred differently on HTTP/1.1 and HTTP/2). Now every wire asks here;
tests/protocols/test_semantics.py sends the same app responses over HTTP/1.1 and HTTP/2 and compares.

Everything is a plain function of ints, bools and bytes (compiled by mypyc): a wire calls them on its hot
path without objects or lookups. Failing is the wire's own: closing an HTTP/1.1 connection, resetting an
HTTP/2 stream; the reason, and the log line that says it, are the same.
"""

from __future__ import annotations

import logging
from typing import Final

from bascule.protocols.exchange import Exchange

TIMEOUT_BODY: Final = b"Gateway Timeout: the app did not answer in time\n"
_log = logging.getLogger("bascule.error")


def bodiless(method: str, status: int) -> bool:
    """A final response without content, whatever the app sends: to HEAD, and 204 and 304 (RFC 9110 6.4.1).
    (1xx are interim and never bodies; each wire deals with them before this.)"""
    return status == 204 or status == 304 or method == "HEAD"


def bodiless_length(status: int, content_length: int | None, end: bool, body: bytes) -> int | None:
    """The Content-Length of a response sent without content (HEAD, 204, 304), the same on every wire.

    A 204 (or 1xx) never has one (RFC 9110 8.6), whatever the app declared. Otherwise what the app
    declared stands. A HEAD answered with the body GET would carry, whole in one message and with no length
    of its own, declares that body's length, as the GET would have (RFC 9110 9.3.2), whatever the status.
    A 304 never gets one inferred: its Content-Length may only be the selected representation's (RFC 9110
    8.6), which only the app knows.
    """
    if status == 204 or status < 200:
        return None
    if content_length is None and end and body and status != 304:
        return len(body)
    return content_length


def expected_length(content_length: int | None, end: bool, trailers: bool, body: bytes) -> int | None:
    """The length a response with content declares: the app's own, else the whole body's when the first
    message ends it (no trailers announced); None when it is streamed without one (chunked on HTTP/1.1,
    DATA frames on HTTP/2, the connection's end on HTTP/1.0)."""
    if content_length is not None:
        return content_length
    if end and not trailers:
        return len(body)
    return None


def one_write(end: bool, trailers: bool, expected: int | None, body: bytes, no_body: bool) -> bool:
    """The fast path: a complete response whose body is exactly its declared length goes out whole, head
    and body in one write, and is finished at once (no framing state kept for later sends)."""
    return end and not trailers and expected == len(body) and not no_body


def length_excess(sent: int, expected: int | None, last: bool) -> int:
    """How far a response is from its declared length: 0 while it keeps to it, else ``sent - expected``:
    above 0 once more bytes were sent than declared (checked on every send, before they are written),
    below 0 when its last message came short. Either way the response cannot be completed: the wire cuts
    it (close, reset) so the client sees an error rather than a truncated or shifted answer. Bytes past the
    declared length are never written; bytes short of it are, before the cut."""
    if expected is None or sent == expected:
        return 0
    if sent > expected or last:
        return sent - expected
    return 0


def log_length_error(ex: Exchange, sent: int, expected: int, then: str) -> None:
    """The error-log line of a broken declared length (``then``: what the wire did about it)."""
    what = "longer" if sent > expected else "shorter"
    sign = ">" if sent > expected else "<"
    _log.error("response body %s than its content-length (%d %s %d) for %s %s; %s", what, sent, sign, expected,
               ex.method, ex.raw_path.decode("latin-1"), then)


def body_over_limit(limit: int, declared: int | None = None) -> str:
    """Why a request body gets 413, on every wire: the answer's text and the log line name the option an
    operator would raise (``declared``: a Content-Length already over it)."""
    body = "request body" if declared is None else f"request body of {declared} bytes"
    return f"{body} is over --limit-request-body ({limit} bytes)"


def answer_timeout(ex: Exchange, timeout: float, then: str) -> None:
    """--timeout-request expired for ``ex``: log it, and answer 504 if the response has not started.

    What comes next is the wire's (``then`` names it for the log: a started response cannot be answered
    any more, so HTTP/1.1 closes the connection and HTTP/2 resets the stream); then the app's later sends
    are dropped and a task-run app is cancelled."""
    started = ex.response_started
    _log.warning("%s %s took longer than timeout_request (%g s): %s", ex.method, ex.raw_path.decode("latin-1"),
                 timeout, "answered 504" if not started else then)
    if not started:
        ex.send_simple(504, TIMEOUT_BODY)
