"""HTTP/1.x response serialization, once: status lines, header blocks, chunked framing, the server's small answers.

Every wire that writes HTTP/1.x heads on a socket uses this module: HTTP/1.1 itself (protocols/h1: responses,
``100 Continue``, the ``101`` to h2c, its own 4xx/5xx for bad requests) and the WebSocket handshake over
HTTP/1.1 (protocols/websocket: the ``101``, the app's denial, the 400/426 for a bad handshake). Next come
the wires that carry raw HTTP/1.x heads (uwsgi). It sits beside the protocol packages rather than in h1/ so
that none of them imports another's: the WebSocket package serializes its handshake here without importing
HTTP/1.1's connection code.

Only serialization lives here: what a head must say (framing, HEAD/204/304) is protocols/semantics.py, and
whether an app's field may be written at all is protocols/fields.py.
"""

from __future__ import annotations

import http
from collections.abc import Iterable
from typing import Any, Final

from bascule.errors import AppProtocolError
from bascule.protocols.fields import check_field, field_block

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
SWITCH_TO_H2C: Final = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
PLAIN_TEXT: Final = b"text/plain; charset=utf-8"

STATUS_LINES: Final[dict[int, bytes]] = {}
"""Status code -> its status line; read directly by the HTTP/1.1 fast path (filled by :func:`status_line`)."""
_FRAMING_NAME_LENGTHS: Final = frozenset((len(b"content-length"), len(b"transfer-encoding"), len(b"connection")))

HEADER_BLOCK_CACHE: Final = 512
_HEADER_BLOCKS: Final[dict[tuple[tuple[bytes, bytes], ...], tuple[bytes, int | None, bool]]] = {}
"""The app's response headers (as sent, hashed by value) -> their checked block, content-length and
whether they say ``connection: close``. Apps send the same few header sets again and again; the loop
and the checks below then run once per set instead of once per response (bounded: cleared when full)."""


def status_line(status: int) -> bytes:
    """'HTTP/1.1 200 OK\\r\\n', cached per status code (an unknown code gets an empty reason phrase)."""
    line = STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        if len(STATUS_LINES) < 1000:
            STATUS_LINES[status] = line
    return line


def header_block(headers: Any) -> tuple[bytes, int | None, bool]:
    """An app's response headers as (checked field lines without the framing fields, its content-length,
    whether it said ``connection: close``), cached per header set. Raises AppProtocolError for a field
    that may not be written, or a content-length that is not a number."""
    try:
        key: tuple[tuple[bytes, bytes], ...] | None = tuple(headers)
        known = _HEADER_BLOCKS.get(key)  # type: ignore[arg-type]
    except TypeError:  # list pairs (ASGI allows any iterable): unhashable, no cache
        key = known = None
    if known is None:
        known = _app_block(headers)
        if key is not None:
            if len(_HEADER_BLOCKS) >= HEADER_BLOCK_CACHE:
                _HEADER_BLOCKS.clear()
            _HEADER_BLOCKS[key] = known
    return known


def _app_block(headers: Any) -> tuple[bytes, int | None, bool]:
    """The app's header lines joined and checked, without the framing fields (those are ours to write).

    ``headers`` is typed Any on purpose: the compiled build checks a declared element type at each pair, and
    an ASGI app may send list pairs (``[[name, value]]``). It runs once per header set (cached above)."""
    content_length: int | None = None
    close = False
    app: list[bytes] = []
    for name, value in headers:
        if len(name) in _FRAMING_NAME_LENGTHS:
            lname = name.lower()
            if lname == b"content-length":
                content_length = content_length_value(value)
                continue  # written by the exchange, once, after the framing decision
            if lname == b"transfer-encoding":
                continue  # framing is ours to choose
            if lname == b"connection":
                close = close or b"close" in value.lower()
                continue
        check_field(name, value)
        app += (name, b": ", value, b"\r\n")
    return b"".join(app), content_length, close


def content_length_value(value: bytes) -> int:
    """An app's content-length field as a number (digits only: no sign, no spaces, no list)."""
    if not value.isdigit():
        raise AppProtocolError(f"the app sent an invalid content-length header: {value!r}")
    return int(value)


def chunk_size(size: int) -> bytes:
    """The size line of a chunk of ``size`` bytes (the chunk is this, the data, then CRLF)."""
    return b"%x\r\n" % size


def trailer_section(trailers: Iterable[Any]) -> bytes:
    """The last chunk with the app's trailer fields (each checked), ending the chunked body."""
    return b"".join((b"0\r\n", field_block(trailers, "trailer"), b"\r\n"))


def simple_response(status: int, fixed: bytes, body: bytes, extra: bytes = b"") -> bytes:
    """A complete plain-text answer from the server itself that closes the connection (a bad request, a
    refused handshake): status line, the server's fixed fields (``fixed``, ending in CRLF), our own
    ``extra`` field lines, then the body."""
    return b"".join((status_line(status), fixed, extra,
                     b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % len(body), body))
