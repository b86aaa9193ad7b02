"""Strict HTTP/1.1 request checks on top of llhttp: the cases its strict mode still lets through.

llhttp (strict, with one lenient flag on: spaces after a chunk size, see below) already refuses bare CR and
LF line ends, obs-fold, whitespace before the colon, CTL/NUL/DEL in names and values, signed/hex/underscored
or listed Content-Length values and chunk sizes, CL together with TE, ``chunked`` not last, and missing
chunk terminators. What it accepts and we must not (found by feeding it each case; the corpus under
tests/corpus/bad keeps them out):

- Transfer-Encoding on HTTP/1.0, codings other than ``chunked`` (501: we implement no other), and
  obfuscated lists (empty elements);
- fields in a chunked body's trailer section, which llhttp reports through ``on_header`` exactly like
  head fields: left alone they would land in the *next* request's headers;
- ``*`` as the target of anything but OPTIONS, a fragment in an absolute-form target, CONNECT (we are no
  proxy) and SOURCE (the ICE protocol llhttp also speaks).

And one it refuses too bluntly: a method it does not know (``FOOBAR``, ``get``) is "invalid" to llhttp like
garbage is (``G@T``); RFC 9110 9.1 asks for 501 for the first and 400 for the second (unknown_method).
Passing such a request to the app instead would mean re-feeding a fresh parser with a stand-in method from
the exact start of the request, which httptools does not report (see unknown_method).

Every function here is called only on a slow path, when a test the hot path makes anyway flagged the
request (a framing header was seen, a trailer field arrived, a method outside the common seven), so
ordinary requests pay nothing for them; new_parser runs once per connection.

Chunk extensions (RFC 9112 7.1.1: ``*( BWS ";" BWS name [ BWS "=" BWS value ] )``), as llhttp 9 (httptools
0.9) reads them, found by feeding it each case:

- ``5;name=value``, ``5;a;b="c d"``: accepted in strict mode.
- ``5 ;name=value`` (BWS before ``;``): strict mode refuses it ("Invalid character in chunk size"); the
  ``lenient_spaces_after_chunk_size`` flag, which new_parser turns on, accepts SP/HTAB after the size
  followed by ``;`` or CRLF. Its side effect: ``5 `` CRLF (whitespace and no extension, outside the grammar)
  is read as 5, as nginx, HAProxy, h2o and Apache do, so no front end reads another size there; ``5 x``,
  ``5 0`` and a bare LF stay refused.
- ``5; name=value``, ``5;name =value``, ``5;name= value`` (BWS after ``;`` or around ``=``): refused in
  every mode ("Invalid character in chunk extensions"): llhttp's ``chunk_extensions`` state errors on SP
  unconditionally and ``chunk_extension_name``/``_value`` take only token characters. httptools calls no
  chunk-extension callback and does not expose where an error occurred, so we cannot skip that whitespace
  ourselves without parsing chunked framing in Python. Accepting them needs an llhttp change (SP/HTAB
  skipping states after ``;`` and around ``=``, ideally behind a new lenient flag) and an httptools
  release exposing it; tests/protocols/h1/test_http1.py pins today's refusal so the change is noticed.

Deliberately left to llhttp, because catching them needs a scan of every received chunk (measured: each
``bytes in`` test costs ~2,500 instructions, 3% of a request) and none of them changes where a message
ends: repeated spaces between the parts of the request line (RFC 9112 3 lets recipients split on
whitespace), ``RTSP/1.x`` in place of ``HTTP/1.x`` (served with the same framing rules), and a fragment
in an origin-form target (handed to the app inside the path).
"""

from __future__ import annotations

import re
from typing import Final

import httptools

from bascule.errors import ProtocolError
from bascule.protocols.exchange import Headers

#: Header fields a trailer section must not carry (RFC 9110 6.5.1): framing, routing, request modifiers,
#: authentication, content metadata, and the fields that name other fields.
FORBIDDEN_TRAILERS = frozenset((
    b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive", b"upgrade", b"te",
    b"trailer", b"expect", b"max-forwards", b"cache-control", b"pragma", b"range", b"if-match",
    b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range", b"authorization",
    b"proxy-authorization", b"cookie", b"set-cookie", b"content-type", b"content-encoding",
    b"content-range", b"content-location", b"proxy-connection",
))
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")  # a lower-cased token (RFC 9110 5.6.2)


def check_framing(headers: Headers, http_version: str) -> int | None:
    """Validate Content-Length / Transfer-Encoding of a request head; return its Content-Length, if any.

    llhttp has already refused CL+TE, duplicate and malformed Content-Length values and ``chunked`` not
    last; what is left is the RFC 9112 6.1 rules it does not enforce.
    """
    length: int | None = None
    codings: list[bytes] = []
    for name, value in headers:
        if name == b"content-length":
            length = int(value.strip(b" \t"))  # digits only: llhttp checked the characters
        elif name == b"transfer-encoding":
            codings += (c.strip(b" \t").lower() for c in value.split(b","))
    if codings:
        if http_version == "1.0":
            raise ProtocolError("Transfer-Encoding is not allowed in an HTTP/1.0 request (RFC 9112 6.1)", 400)
        if not all(codings):
            raise ProtocolError("Transfer-Encoding with an empty list element", 400)
        if codings[-1] != b"chunked" or b"chunked" in codings[:-1]:
            raise ProtocolError("Transfer-Encoding must end with chunked, once (RFC 9112 6.3)", 400)
        for coding in codings[:-1]:
            if coding == b"identity" or not _TOKEN.match(coding):
                raise ProtocolError(f"invalid transfer coding {coding!r}", 400)
            raise ProtocolError(f"transfer coding {coding.decode('latin-1')!r} is not implemented", 501)
    return length


def head_size(url: bytes, headers: Headers) -> int:
    """The bytes a request head's line and fields take on the wire, near enough (CRLF and ": " each)."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


def partial_head_size(data: bytes, url: bytes, headers: Headers) -> int:
    """What a head still incomplete at the end of ``data``, which began within it, holds so far.

    Not ``len(data)``: the read may also carry many complete pipelined requests before the head (a burst of
    small requests would look like one oversized head). Its complete fields are in ``headers``; the field in
    progress (buffered inside httptools) is what follows the last LF. If no field is complete and that LF is
    not the end of this head's request line (``HTTP/1.x`` CR LF), the head is still in its request line,
    which --limit-request-line bounds through ``url``.
    """
    end = data.rfind(b"\n")
    if headers or (end >= 9 and data.startswith(b"HTTP/", end - 9)):
        return head_size(url, headers) + len(data) - end - 1
    return len(url)


def check_head_size(url: bytes, headers: Headers, head_limit: int, field_limit: int) -> None:
    """Measure a head that may be over --limit-request-header-size or hold a field over
    --limit-request-field-size (gunicorn's count: name, ": " and value).

    Called for a head that spanned several reads or arrived in a read longer than the smaller limit: a head
    within one shorter read cannot break either, so ordinary requests are never measured field by field.
    """
    size = len(url)
    for name, value in headers:
        field = len(name) + len(value) + 2
        if field > field_limit:
            raise ProtocolError(f"a header field is longer than --limit-request-field-size ({field_limit} bytes)",
                                431)
        size += field + 2
    if size > head_limit:
        raise ProtocolError(f"request header fields too large (over --limit-request-header-size, "
                            f"{head_limit} bytes)", 431)


def check_trailers(trailers: Headers, limit: int, field_limit: int) -> Headers:
    """Refuse a trailer section that is too long or has a field over --limit-request-field-size; return the
    fields a trailer section may carry, without those it must not (RFC 9110 6.5.1).

    Those are dropped, not refused: RFC 9110 6.5.1 lets a recipient ignore trailer fields it cannot process
    safely, and a client that sends one (Host, Authorization, ...) has not routed or authenticated anything
    with it, since trailers are never merged into the head. HTTP/2 drops them the same way. Content-Length
    and Transfer-Encoding never get here: llhttp refuses them in a trailer section itself (400), and its
    only flags that would let them through relax the head's framing too.
    """
    if len(trailers) > limit:
        raise ProtocolError("too many trailer fields", 431)
    check_head_size(b"", trailers, 1 << 62, field_limit)
    return [(name, value) for name, value in trailers if name not in FORBIDDEN_TRAILERS]


_REQUEST_PARSER: Final = httptools.HttpRequestParser
"""Final, so the compiled module keeps it in a C static: ``httptools.HttpRequestParser`` is an attribute lookup on
the module at each new connection (~280 instructions, callgrind h1close)."""


def new_parser(protocol: object) -> httptools.HttpRequestParser:
    """llhttp as bascule runs it: strict, with the one leniency RFC 9112 asks for.

    RFC 9112 7.1.1 lets whitespace (BWS) precede a chunk extension's ";" ("5 ;name=value"), which recipients
    must accept; strict llhttp refuses it. ``lenient_spaces_after_chunk_size`` allows SP/HTAB after the size,
    then ";" or CRLF (so also "5 " CRLF, read as 5 as nginx, HAProxy and h2o do). BWS after the ";" or
    around "=" stays refused: llhttp has no flag for it (see the module docstring).
    """
    parser = _REQUEST_PARSER(protocol)
    parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)
    return parser


def request_line_version(read: bytes, method: bytes, url: bytes) -> str | None:
    """The HTTP version of a request head from the read it began in, given the method and target llhttp read:
    "1.1" or "1.0", or None where the read does not show it plainly (then ask llhttp).

    Why: httptools' ``get_http_version()`` formats the version anew, ``"{}.{}".format(major, minor)``:
    ~2,300 instructions per request (callgrind), 6% of a keep-alive ``GET /`` in WSGI threads mode. This costs
    a slice and a few comparisons (no ``bytes.find``: its argument parsing alone cost ~1,000).

    Only for the first head completed within a read that began between requests (Phase.IDLE: llhttp at a
    message's start, inside its method, past empty lines, or past the method and its spaces). Every byte that
    places the version is checked: the read must hold ``method SP target SP H`` from its first byte, then the
    CR where ``HTTP/d.d`` ends. So a read that began elsewhere fails (inside the method: the rest of a method and
    a space never start with the method; after the method: the target would have to equal the method and then
    stand again at the method's length plus one), and so does any line llhttp read otherwise: more than one
    space before the target or the version, or HTTP/0.9's ``method SP target CRLF``, which llhttp takes, with
    header fields after it, and where a field value such as ``1.1`` would sit at the version's place.
    """
    m = len(method)
    u = len(url)
    cr = m + u + 10
    if (len(read) <= cr or read[cr] != 13 or read[m] != 32 or read[m + u + 1] != 32 or read[m + u + 2] != 72
            or not read.startswith(method) or read[m + 1:m + u + 1] != url):
        return None
    if read[cr - 3] == 49:  # "1"
        minor = read[cr - 1]
        if minor == 49:
            return "1.1"
        if minor == 48:
            return "1.0"
    return None


SPENT_PARSER: Final = new_parser(object())  # Final: read at each close, a C static compiled
"""What a closed connection holds instead of its parser (which holds the connection's bound callbacks, a
cycle): a parser with no callbacks, never fed."""


class _MessageEnds:
    """A parser protocol that only counts complete messages (for replaying a read, see unknown_method)."""

    def __init__(self) -> None:
        self.count = 0

    def on_message_complete(self) -> None:
        self.count += 1


def _replay(data: bytes) -> tuple[int, bool]:
    """Messages llhttp completes in ``data`` read from a message start, and whether it then stopped at a
    method it does not know."""
    ends = _MessageEnds()
    try:
        new_parser(ends).feed_data(data)
    except httptools.HttpParserInvalidMethodError:
        return ends.count, True
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        # a replay that did not start where the real parser's message did can meet an Upgrade or CONNECT
        # request the real parser never saw (inside a body): HttpParserUpgrade is no HttpParserError
        pass
    return ends.count, False


# a request line whose method is a token (RFC 9110 9.1, 5.6.2): whole, or cut short by the end of the read;
# before it, the CR and LF llhttp skips between messages
_TOKEN_METHOD = rb"[\r\n]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)"
_REQUEST_LINE = re.compile(_TOKEN_METHOD + rb" [!-~]+ HTTP/[0-9]\.[0-9]\r\n")
_REQUEST_LINE_START = re.compile(_TOKEN_METHOD + rb"(?: [!-~]*(?: [!-~]*)?)?\Z")


# The longest read unknown_method replays (~20 llhttp passes over it, bisecting): a longer one gets 400 rather
# than 501, so a client cannot make the server parse a large read twenty times for one refusal.
REPLAY_LIMIT = 16 * 1024


def unknown_method(data: bytes) -> bytes | None:
    """The method llhttp refused as unknown somewhere in the read ``data``, if it is a valid token heading a
    request line (a method we do not implement: 501) rather than garbage or text that is not HTTP (400);
    None then, or if it cannot be found.

    llhttp knows a fixed list of methods and reports any other as "invalid method", token or not, and
    httptools does not say where in the read that happened. So the read is replayed with a counting parser:
    the refused request begins where the last message completed before the error ends (found by bisecting
    prefix lengths, ~log2(len) replays at C speed). The replay assumes the read began at a message start,
    which holds for the first read and for any read on an idle connection; otherwise it finds a wrong spot
    or none, and only the status changes (400 for 501 or back): the request is refused either way. The same
    goes for a method cut by the end of an earlier read: llhttp read "GE" of "GETX" there without error, so
    only "TX" is seen here (still a token), but of "T /" only " /" (400). Only reached on that error, never
    for a served request.
    """
    count, stopped = _replay(data)
    if not stopped:
        return None
    start, end = 0, len(data) if count else 0  # the shortest prefix that completes ``count`` messages
    while start < end:
        middle = (start + end) // 2
        if _replay(data[:middle])[0] >= count:
            end = middle
        else:
            start = middle + 1
    match = _REQUEST_LINE.match(data, start) or _REQUEST_LINE_START.match(data, start)
    return match.group(1) if match else None


def other_method(method: bytes) -> str:
    """A method outside the common seven (llhttp has already refused tokens it does not know)."""
    if method == b"CONNECT":
        raise ProtocolError("CONNECT is not supported: this is an origin server, not a proxy", 501)
    if method == b"SOURCE":
        raise ProtocolError("SOURCE (the ICE protocol) is not HTTP", 400)
    return method.decode("ascii")


def check_target(method: bytes, url: bytes) -> None:
    """Request-target rules for the asterisk form and for fragments (RFC 9112 3.2)."""
    if url == b"*":
        if method != b"OPTIONS":
            raise ProtocolError("the asterisk-form target is only allowed with OPTIONS", 400)
    elif b"#" in url:
        raise ProtocolError("a request target must not carry a fragment", 400)
