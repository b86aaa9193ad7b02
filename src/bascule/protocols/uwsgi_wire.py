"""The uwsgi protocol's request packet (what nginx's ``uwsgi_pass`` sends), sans I/O.

A uwsgi request is a 4-byte header - ``modifier1`` (u8), ``datasize`` (u16, little-endian), ``modifier2``
(u8) - then ``datasize`` bytes of variables, each a (u16le length, name, u16le length, value) pair, then the
request body, raw, exactly ``CONTENT_LENGTH`` bytes (see bascule.cgi.FixedLengthBody). ``modifier1`` 0 is
"a WSGI request with CGI variables", the only kind nginx sends unless told otherwise and the only one a
Python server can serve; the others name uWSGI's plugins (PSGI, Rack, its cluster messages) and are
refused. ``modifier2`` means nothing for modifier1 0: kept on the head, never checked (nginx lets an
operator set it with ``uwsgi_modifier2``, and uWSGI ignores it too). The response is not a uwsgi packet:
it is a plain HTTP/1.x response on the same connection, which nginx reads as it would from an HTTP
upstream; nginx never reuses a uwsgi connection, so the server closes it after the response.

Model: websockets' sans-I/O protocols. :func:`parse` takes the bytes received so far and returns the
:class:`UwsgiHead` and how many bytes it used, or None when more are needed; :class:`UwsgiReader` does the
buffering and hands back the bytes after the packet (the start of the body). Errors are
:class:`UwsgiError`, raised as soon as the bytes received allow (an HTTP client on a uwsgi socket is
refused at its first byte), with a message for the log line; the caller closes the connection and calls
no app. The size of the variable block is bounded by the caller (``max_size``, at most the format's
65535) and so is their number (``max_vars``): a peer claiming more is refused before its bytes are read.
"""

from __future__ import annotations

from bascule.errors import BasculeError
from bascule.protocols.prefix import PrefixReader

__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_MAX_VARS", "HEADER_SIZE", "UwsgiError", "UwsgiHead", "UwsgiReader",
           "encode_vars", "parse", "parse_vars"]

HEADER_SIZE = 4
DEFAULT_MAX_SIZE = 65535
"""The format's own bound (datasize is 16 bits); nginx refuses to send more ("uwsgi request is too big")."""
DEFAULT_MAX_VARS = 256
"""Variables per request: nginx's stock uwsgi_params are 15, plus one per request header (bascule's HTTP/1.1
limit is 100 headers), plus a deployment's own."""

Pairs = list[tuple[bytes, bytes]]


class UwsgiError(BasculeError):
    """The bytes are not a uwsgi modifier1 0 request packet, or one over the limits. One log line's worth."""


class UwsgiHead:
    """One parsed packet header and its variables (``pairs``, in the order sent, for bascule.cgi)."""

    __slots__ = ("length", "modifier2", "pairs")

    def __init__(self, pairs: Pairs, modifier2: int, length: int) -> None:
        self.pairs = pairs
        self.modifier2 = modifier2
        self.length = length
        """Bytes of the stream the packet took (4 + datasize): the body starts there."""


def parse(data: bytes | bytearray, max_size: int = DEFAULT_MAX_SIZE,
          max_vars: int = DEFAULT_MAX_VARS) -> tuple[UwsgiHead, int] | None:
    """The packet at the start of ``data`` and its length, or None while it is incomplete. Never looks past
    the packet: ``data[length:]`` is the body's."""
    size = len(data)
    if not size:
        return None
    modifier1 = data[0]
    if modifier1 != 0:
        if 0x41 <= modifier1 <= 0x5A:  # "A".."Z": a request line, GET, POST, PRI (HTTP/2)...
            raise UwsgiError(f"not a uwsgi packet (modifier1 {modifier1}: the connection starts with "
                             f"{bytes(data[:8])!r}): an HTTP client on a uwsgi listener? (nginx: uwsgi_pass, "
                             f"not proxy_pass)")
        raise UwsgiError(f"uwsgi packet has modifier1 {modifier1}: only 0 (a WSGI/CGI request) is served here")
    if size < 3:
        return None
    datasize = data[1] | (data[2] << 8)
    if datasize > max_size:
        raise UwsgiError(f"uwsgi packet of {datasize} bytes of variables is over the limit of {max_size}")
    length = HEADER_SIZE + datasize
    if size < length:
        return None
    block: bytes = data if isinstance(data, bytes) else bytes(data[:length])
    pairs = parse_vars(block, HEADER_SIZE, length, max_vars)
    return UwsgiHead(pairs, data[3], length), length


def parse_vars(data: bytes, start: int, end: int, max_vars: int = DEFAULT_MAX_VARS) -> Pairs:
    """The (name, value) pairs in ``data[start:end]``, which they must fill exactly."""
    pairs: Pairs = []
    pos = start
    while pos < end:
        if pos + 2 > end:
            raise UwsgiError("uwsgi variable block ends inside a name's length")
        name_end = pos + 2 + (data[pos] | (data[pos + 1] << 8))
        if name_end + 2 > end:
            raise UwsgiError(f"uwsgi variable name of {name_end - pos - 2} bytes runs past the variable block")
        value_start = name_end + 2
        value_end = value_start + (data[name_end] | (data[name_end + 1] << 8))
        if value_end > end:
            raise UwsgiError(f"uwsgi variable {data[pos + 2:name_end][:64]!r} has a value running "
                             f"{value_end - end} bytes past the variable block")
        if name_end == pos + 2:
            raise UwsgiError("uwsgi variable with an empty name")
        if len(pairs) >= max_vars:
            raise UwsgiError(f"uwsgi packet has more than {max_vars} variables")
        pairs.append((data[pos + 2:name_end], data[value_start:value_end]))
        pos = value_end
    return pairs


class UwsgiReader(PrefixReader[UwsgiHead]):
    """Buffers a connection's first bytes until the packet is complete (protocols/prefix.py).

    ``feed`` returns None while more bytes are needed, then the head; :attr:`leftover` then holds the bytes
    received after it (the first body bytes). Buffered bytes are bounded by 4 + ``max_size``.
    """

    __slots__ = ()

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, max_vars: int = DEFAULT_MAX_VARS) -> None:
        super().__init__(lambda data: parse(data, max_size, max_vars), "the uwsgi packet")


def encode_vars(pairs: Pairs, modifier1: int = 0, modifier2: int = 0) -> bytes:
    """A uwsgi request packet for ``pairs`` (what nginx writes): for tests and tools, not the server."""
    block = b"".join(len(name).to_bytes(2, "little") + name + len(value).to_bytes(2, "little") + value
                     for name, value in pairs)
    if len(block) > 65535:
        raise UwsgiError(f"uwsgi variable block of {len(block)} bytes does not fit in 16 bits")
    return bytes((modifier1,)) + len(block).to_bytes(2, "little") + bytes((modifier2,)) + block
