"""Access-log lines: one per request, every client-supplied field escaped.

A request target or User-Agent may carry CR, LF, ESC or other control bytes; written raw they would forge
extra log lines or colour a terminal. Every byte outside printable ASCII (and the backslash and double
quote) is written as ``\\xHH``, so one request is always exactly one line.

The log is one request observer (context.RequestObserver), registered with --access-log: a line per
exchange that got a response (complete or given up), none for one whose client went away first.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Protocol


class Logged(Protocol):
    """What a log line reads of a request (an Exchange has it all; a Protocol so any record will do)."""

    method: str
    raw_path: bytes
    query_string: bytes
    http_version: str
    status: int
    client: tuple[str, int] | None
    headers: list[tuple[bytes, bytes]]
    proxied: bool  # a trusted proxy named the client: ``peer`` is the connection's
    peer: tuple[str, int] | None


class Finished(Logged, Protocol):
    """What the observer reads of a finished exchange besides the logged fields."""

    start_time: float
    sent: int
    dropped: bool


class AccessLog:
    """The access log as a request observer: formats and writes one line when a request finishes."""

    def __init__(self, template: str, loop: asyncio.AbstractEventLoop, logger: logging.Logger,
                 error_log: logging.Logger) -> None:
        self.template = template
        self.loop = loop
        self.logger = logger
        self.error_log = error_log

    def request_started(self, ex: Finished) -> None:
        """Nothing to write yet: the line is written when the request finishes."""

    def request_finished(self, ex: Finished) -> None:
        if ex.dropped:
            return  # the client went away before a response: no line (as before the observers)
        try:
            line = format_access(self.template, ex, ex.sent, self.loop.time() - ex.start_time)
        except Exception:  # a broken template must never break a response
            self.error_log.exception("access_log_format could not be applied")
            return
        self.logger.info(line)


_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _hex(match: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % match.group()[0]


def escape(value: bytes) -> str:
    """Printable-ASCII rendering of untrusted bytes, with everything else as \\xHH."""
    return _UNSAFE.sub(_hex, value).decode("ascii")


def _header(ex: Logged, name: bytes) -> str:
    for key, value in ex.headers:
        if key == name:
            return escape(value)
    return "-"


def _address(address: tuple[str, int] | None) -> str:
    if not address:
        return "-"
    host = address[0]
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def format_access(template: str, ex: Logged, nbytes: int, duration: float) -> str:
    """Fill the access-log template for one finished request."""
    target = ex.raw_path + (b"?" + ex.query_string if ex.query_string else b"")
    method = escape(ex.method.encode("latin-1", "replace"))
    target_s = escape(target)
    # {client}: the connection's peer, as gunicorn's %(h)s, even where a trusted proxy named another client
    # ({app_client}, what the app sees): a log line never depends on a header a client could have sent
    client = _address(ex.peer if ex.proxied else ex.client)
    return template.format(
        client=client,
        app_client=_address(ex.client) if ex.proxied else client,
        method=method,
        target=target_s,
        path=escape(ex.raw_path),
        query=escape(ex.query_string),
        http_version=ex.http_version,
        status=ex.status,
        bytes=nbytes,
        duration=duration,
        duration_ms=duration * 1000.0,
        user_agent=_header(ex, b"user-agent"),
        referer=_header(ex, b"referer"),
        request_line=f"{method} {target_s} HTTP/{ex.http_version}",
    )
