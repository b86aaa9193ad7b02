"""HTTP/2 header blocks: HPACK decoding of requests (cached, validated by protocols/request_head.py, which
HTTP/3 shares), and response encoding.

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

import hpack
from hpack.table import HeaderTable

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import Exchange, Headers
from bascule.protocols.fields import check_field
from bascule.protocols.h2 import frames as fr
from bascule.protocols.request_head import CONNECTION_SPECIFIC, check_request_field, parse_request
from bascule.protocols.request_head import MalformedRequest as MalformedRequest  # re-exported: the wire's names
from bascule.protocols.request_head import RequestHead as RequestHead

CACHE_ENTRIES = 64
_HIGH_BYTES = bytes(range(0x81, 0xFF))  # one-byte indexed fields (index 1..126)
_UPGRADE_ONLY = CONNECTION_SPECIFIC | {b"http2-settings", b"te"}  # HTTP/1.1 fields of an h2c upgrade
_STATIC_NAMES: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_NAMES.setdefault(_name, _i)
_STATUS_INDEX = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}


class HeaderBlockTooLarge(fr.ConnectionError_):
    """The decoded header list is over the limit (an HPACK bomb, or just too large): decoding stopped part
    way, so the HPACK state is lost too; the connection ends (ENHANCE_YOUR_CALM)."""

    def __init__(self, message: str) -> None:
        super().__init__(fr.ENHANCE_YOUR_CALM, f"header list over limit_request_header_size ({message})")


class CompressionError(fr.ConnectionError_):
    """The block could not be decoded: the connection's HPACK state is lost (COMPRESSION_ERROR)."""

    def __init__(self, message: str) -> None:
        super().__init__(fr.COMPRESSION_ERROR, f"HPACK: {message}")


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
            check_request_field(name, value)
        return fields


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
    if lname in CONNECTION_SPECIFIC:
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
