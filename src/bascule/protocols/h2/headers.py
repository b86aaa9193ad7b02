"""HTTP/2 header blocks: HPACK decoding of requests (cached), their validation, and response encoding.

Decoding uses the ``hpack`` library (the one ``h2`` uses), which owns the dynamic table, Huffman codes and
the header-list-size bound that stops HPACK bombs. It costs ~20 us per request even when every field is an
index into the tables, so :class:`RequestDecoder` keeps the *validated* result of each block made only of
one-byte indexed fields: such a block never changes the dynamic table, so the same bytes mean the same
request for as long as the table is unchanged, and any other block (the only kind that can change it)
clears the cache. Clients that repeat requests (browsers, h2load, gRPC) hit it almost always.

Responses are encoded without the dynamic table (literal fields "without indexing", names from the
static table where it has them): stateless, so a block costs a join of a few bytes objects, and nothing
depends on the client's SETTINGS_HEADER_TABLE_SIZE.
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

import hpack
from hpack.table import HeaderTable

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import Exchange, Headers
from bascule.protocols.fields import check_field
from bascule.protocols.h2 import frames as fr

CACHE_ENTRIES = 64
_HIGH_BYTES = bytes(range(0x81, 0xFF))  # one-byte indexed fields (index 1..126)
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")  # RFC 9113 8.2.1: lowercase tokens only
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
# What llhttp refuses in an HTTP/1.1 request-target, refused in :path too (one request, one answer on both
# wires): whitespace, control characters, DEL, and bytes outside ASCII (clients percent-encode them).
_BAD_PATH = re.compile(rb"[^\x21-\x7e]")
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                  b"upgrade"))
_UPGRADE_ONLY = _CONNECTION_SPECIFIC | {b"http2-settings", b"te"}  # HTTP/1.1 fields of an h2c upgrade
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT")}
_PROXY_FIELDS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                           b"x-forwarded-prefix", b"forwarded"))  # as HTTP/1.1's (h1/connection.py)
_STATIC_NAMES: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_NAMES.setdefault(_name, _i)
_STATUS_INDEX = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}


class MalformedRequest(Exception):
    """A request the rules of RFC 9113 8.1-8.3 call malformed: a stream error of type PROTOCOL_ERROR."""


class HeaderBlockTooLarge(fr.ConnectionError_):
    """The decoded header list is over the limit (an HPACK bomb, or just too large): decoding stopped part
    way, so the HPACK state is lost too; the connection ends (ENHANCE_YOUR_CALM)."""

    def __init__(self, message: str) -> None:
        super().__init__(fr.ENHANCE_YOUR_CALM, f"header list over limit_request_header_size ({message})")


class CompressionError(fr.ConnectionError_):
    """The block could not be decoded: the connection's HPACK state is lost (COMPRESSION_ERROR)."""

    def __init__(self, message: str) -> None:
        super().__init__(fr.COMPRESSION_ERROR, f"HPACK: {message}")


class RequestHead(NamedTuple):
    """A validated request head: what a stream needs to become an exchange."""

    method: str
    raw_path: bytes
    query: bytes
    headers: Headers  # regular fields (cookies joined, host from :authority), shared: copy before handing out
    content_length: int | None
    protocol: bytes | None  # :protocol of an extended CONNECT (RFC 8441)
    expect_continue: bool
    forwarded: bool = False  # a field a proxy sets (X-Forwarded-*, Forwarded): the stream asks ctx.forwarded


class RequestDecoder:
    """One connection's HPACK decoder plus the cache of validated blocks (see the module docstring)."""

    def __init__(self, max_header_list_size: int, *, connect_protocol: bool) -> None:
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self.connect_protocol = connect_protocol
        self._cache: dict[bytes, RequestHead] = {}

    def decode(self, block: bytes) -> Headers:
        """Decode a block into raw fields; errors that leave the HPACK state unknown end the connection."""
        try:
            fields = self.decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as too_large:  # one name per handler (compiled: one type)
            raise HeaderBlockTooLarge(str(too_large)) from None
        except (hpack.HPACKError, ValueError, IndexError) as exc:
            raise CompressionError(str(exc) or type(exc).__name__) from None
        return [(bytes(name), bytes(value)) for name, value in fields]

    def request(self, block: bytes) -> RequestHead:
        """The validated request head of a HEADERS block (cached when the block cannot change the table)."""
        head = self._cache.get(block)
        if head is not None:
            return head
        cacheable = not block.translate(None, _HIGH_BYTES)
        if not cacheable:
            self._cache.clear()  # this block may change the dynamic table: earlier results may be stale
        head = parse_request(self.decode(block), connect_protocol=self.connect_protocol)
        if cacheable and len(self._cache) < CACHE_ENTRIES:
            self._cache[block] = head
        return head

    def trailers(self, block: bytes) -> Headers:
        """Decode and check a request's trailer section (no pseudo-header fields allowed)."""
        self._cache.clear()
        fields = self.decode(block)
        for name, value in fields:
            if name[:1] == b":":
                raise MalformedRequest(f"pseudo-header field {name!r} in trailers")
            _check_field(name, value)
        return fields


def _check_field(name: bytes, value: bytes) -> None:
    if not name or _BAD_NAME.search(name):
        raise MalformedRequest(f"invalid header field name {name!r}")
    if _BAD_VALUE.search(value):
        raise MalformedRequest(f"invalid value in header field {name!r}")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedRequest(f"connection-specific header field {name!r}")
    if name == b"te" and value != b"trailers":
        raise MalformedRequest("te header field other than 'trailers'")


def parse_request(fields: Headers, *, connect_protocol: bool) -> RequestHead:
    """Validate a decoded request header list (RFC 9113 8.2, 8.3, RFC 8441 4) and split it up."""
    method = scheme = authority = path = protocol = None
    headers: Headers = []
    cookies: list[bytes] = []
    content_length: int | None = None
    host = False
    expect_continue = False
    forwarded = False
    regular = False
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest("pseudo-header field after a regular field")
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            elif name == b":protocol" and protocol is None and connect_protocol:
                protocol = value
            else:
                raise MalformedRequest(f"unknown, duplicated or response pseudo-header field {name!r}")
            continue
        regular = True
        _check_field(name, value)
        if name == b"cookie":
            cookies.append(value)  # RFC 9113 8.2.3: joined into one field for HTTP/1.1-minded apps
            continue
        if name == b"content-length":
            if not value.isdigit() or (content_length is not None and int(value) != content_length):
                raise MalformedRequest("invalid content-length")
            content_length = int(value)
        elif name == b"host":
            host = True
        elif name == b"expect":
            expect_continue = value.lower() == b"100-continue"
        elif name in _PROXY_FIELDS:
            forwarded = True
        headers.append((name, value))
    if method is None:
        raise MalformedRequest("missing :method")
    if _BAD_NAME.search(method.lower()) or not method:
        raise MalformedRequest("invalid :method")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or authority is None:
            raise MalformedRequest("a CONNECT request has :authority and neither :scheme nor :path")
        path = b"/"
    else:
        if protocol is not None and method != b"CONNECT":
            raise MalformedRequest(":protocol on a request other than CONNECT")
        if scheme is None or path is None:
            raise MalformedRequest("missing :scheme or :path")
        # 35 is "#" (an int: `bytes in bytes` raises and clears a TypeError inside CPython 3.11 first)
        if (not path or 35 in path or (path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"))
                or _BAD_PATH.search(path)):
            raise MalformedRequest("invalid :path")
    if authority is not None and not host:
        if _BAD_VALUE.search(authority):
            raise MalformedRequest("invalid :authority")
        headers.insert(0, (b"host", authority))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    raw_path, _, query = path.partition(b"?")
    return RequestHead(_METHODS.get(method) or method.decode("ascii"), raw_path, query, headers, content_length,
                       protocol, expect_continue, forwarded)


def upgrade_request(ex: Exchange, settings: bytes) -> tuple[RequestHead, bytes]:
    """An HTTP/1.1 request with ``Upgrade: h2c`` as stream 1's head, and its decoded HTTP2-Settings payload.

    Raises ValueError when HTTP2-Settings is not base64url of whole settings (the upgrade is then not taken).
    """
    payload = base64.urlsafe_b64decode(settings + b"=" * (-len(settings) % 4))
    if len(payload) % 6:
        raise ValueError("HTTP2-Settings is not a list of settings")
    headers = [(name, value) for name, value in ex.headers if name not in _UPGRADE_ONLY]
    return RequestHead(ex.method, ex.raw_path, ex.query_string, headers, None, None, False, ex.proxied), payload


# -- response encoding --------------------------------------------------------------------------------------

def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: ``value`` with an N-bit prefix, ``first`` holding the representation's flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    n = len(data)
    return (bytes((n,)) if n < 127 else _integer(n, 7, 0)) + data


def literal(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing (RFC 7541 6.2.2), naming the static table entry where one exists."""
    index = _STATIC_NAMES.get(name)
    if index is None:
        return b"\x00" + _string(name) + _string(value)
    return (bytes((index,)) if index < 15 else _integer(index, 4, 0)) + _string(value)


_STATUS_BLOCKS: dict[int, bytes] = {}


def status_field(status: int) -> bytes:
    """The encoded :status field, cached per code."""
    block = _STATUS_BLOCKS.get(status)
    if block is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise AppProtocolError(f"invalid status code {status!r}")
        index = _STATUS_INDEX.get(status)
        block = bytes((0x80 | index,)) if index is not None else b"\x08\x03" + b"%d" % status
        _STATUS_BLOCKS[status] = block
    return block


_FIELDS: dict[tuple[bytes, bytes], bytes] = {}  # (name, value) as the app sent it -> checked HPACK literal
FIELD_CACHE_ENTRIES = 4096


def encode_response_fields(headers: Headers) -> tuple[list[bytes], int | None]:
    """The app's response fields as HPACK literals, and the content-length it declared (if any).

    Connection-specific fields are dropped (HTTP/2 has none); names are lowercased; a name that is not
    a token or a value with CR, LF or NUL raises AppProtocolError, as on HTTP/1.1. Apps repeat the same
    fields (content-type, cache-control...), so each checked and encoded pair is cached: measured at a
    third of the per-request cost of a small response before the cache.
    """
    parts: list[bytes] = []
    content_length: int | None = None
    fields = _FIELDS
    for header in headers:
        try:
            encoded = fields.get(header)
        except TypeError:  # a list pair (ASGI allows any iterable): unhashable
            header = tuple(header)  # type: ignore[assignment]
            encoded = fields.get(header)
        if encoded is None:
            name, value = header
            encoded = _encode_field(name, value)
            if len(fields) >= FIELD_CACHE_ENTRIES:
                fields.clear()
            fields[(name, value)] = encoded
        if encoded:
            if encoded[:2] == CONTENT_LENGTH_PREFIX:
                content_length = int(header[1])
            parts.append(encoded)
    return parts, content_length


CONTENT_LENGTH_PREFIX = literal(b"content-length", b"")[:2]  # static index 28: unique first two bytes
_LENGTHS: dict[int, bytes] = {}


def content_length_field(n: int) -> bytes:
    """The encoded ``content-length: n`` the server adds itself, cached per length."""
    field = _LENGTHS.get(n)
    if field is None:
        field = literal(b"content-length", b"%d" % n)
        if len(_LENGTHS) < 4096:
            _LENGTHS[n] = field
    return field


def _encode_field(name: bytes, value: bytes) -> bytes:
    """One checked field as a literal; b"" for a connection-specific field (dropped)."""
    check_field(name, value)
    lname = name.lower()
    if lname in _CONNECTION_SPECIFIC:
        return b""
    if lname == b"content-length" and not value.isdigit():
        raise AppProtocolError(f"the app sent an invalid content-length header: {value!r}")
    return literal(lname, value)


def encode_fixed(block: bytes) -> bytes:
    """The server's own fields (date, server, --header), given as an HTTP/1.1 block, as HPACK literals."""
    out = []
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            out.append(literal(name.strip().lower(), value.strip()))
    return b"".join(out)


def encode_trailers(trailers: Headers) -> bytes:
    """A response trailer section as an HPACK block."""
    parts, _ = encode_response_fields(trailers)
    return b"".join(parts)
