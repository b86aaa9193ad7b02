"""The SCGI request head (what nginx's ``scgi_pass`` sends), sans I/O.

SCGI (python.ca/scgi/protocol.txt) sends the CGI variables as one netstring: the payload's length in
decimal, ``:``, the payload, ``,``. The payload is NUL-terminated names and values, alternating:
``CONTENT_LENGTH\\0 27\\0 SCGI\\0 1\\0 ...``. ``CONTENT_LENGTH`` must come first (even when 0), ``SCGI`` must be
``1``, and the body follows the comma, raw, exactly ``CONTENT_LENGTH`` bytes (bascule.cgi.FixedLengthBody).
The response is a CGI response (``Status: 200 OK`` and headers: bascule.cgi.response_head), and the
connection closes after it: SCGI carries one request per connection.

Strictness: a netstring length is digits without leading zeros (``0`` alone is allowed, and is then
refused for lack of ``CONTENT_LENGTH``), at most as many as the limit has; the payload ends with a NUL
and holds whole pairs; names are not empty. Errors are :class:`ScgiError`, raised as soon as the bytes
received allow (an HTTP client is refused at its first byte), with a message for the log line.

Model: websockets' sans-I/O protocols, as bascule.protocols.uwsgi_wire: :func:`parse` returns the head and
its length or None while incomplete; :class:`ScgiReader` buffers and hands back the first body bytes.
"""

from __future__ import annotations

from bascule.errors import BasculeError
from bascule.protocols.prefix import PrefixReader

__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_MAX_VARS", "ScgiError", "ScgiHead", "ScgiReader", "encode_head", "parse"]

DEFAULT_MAX_SIZE = 65536
"""Bound on the netstring payload (nginx writes the whole head in one buffer: the variables and every
request header, like an HTTP request head; bascule's HTTP/1.1 head limit is 64 KiB too)."""
DEFAULT_MAX_VARS = 256
"""Variables per request (see bascule.protocols.uwsgi_wire.DEFAULT_MAX_VARS)."""

Pairs = list[tuple[bytes, bytes]]


class ScgiError(BasculeError):
    """The bytes are not an SCGI request head, or one over the limits. One log line's worth."""


class ScgiHead:
    """One parsed head: its variables (``pairs``, in the order sent, for bascule.cgi)."""

    __slots__ = ("length", "pairs")

    def __init__(self, pairs: Pairs, length: int) -> None:
        self.pairs = pairs
        self.length = length
        """Bytes of the stream the netstring took, comma included: the body starts there."""


def parse(data: bytes | bytearray, max_size: int = DEFAULT_MAX_SIZE,
          max_vars: int = DEFAULT_MAX_VARS) -> tuple[ScgiHead, int] | None:
    """The head at the start of ``data`` and its length, or None while it is incomplete. Never looks past
    the comma: ``data[length:]`` is the body's."""
    size = len(data)
    digits_max = len(str(max_size))
    colon = data.find(b":", 0, digits_max + 1)
    digits = data[:colon] if colon >= 0 else data[:digits_max + 1]
    if digits and not digits.isdigit():
        if not digits[:1].isdigit():
            raise ScgiError(f"not an SCGI request (the connection starts with {bytes(data[:8])!r}): an HTTP client "
                            f"on an SCGI listener? (nginx: scgi_pass, not proxy_pass)")
        raise ScgiError(f"SCGI netstring length {bytes(digits[:16])!r} is not decimal digits")
    if len(digits) > 1 and digits[0] == 0x30:
        raise ScgiError(f"SCGI netstring length {bytes(digits)!r} has a leading zero")
    if colon < 0:
        if len(digits) > digits_max:
            raise ScgiError(f"SCGI netstring length has more digits than the limit of {max_size} bytes allows")
        return None
    if colon == 0:
        raise ScgiError("SCGI netstring has no length before its ':'")
    payload_size = int(digits)
    if payload_size > max_size:
        raise ScgiError(f"SCGI head of {payload_size} bytes is over the limit of {max_size}")
    start = colon + 1
    end = start + payload_size
    if size <= end:
        return None
    if data[end] != 0x2C:  # ","
        raise ScgiError(f"SCGI netstring of {payload_size} bytes is not followed by ',' "
                        f"(got {bytes(data[end:end + 1])!r}): a wrong length")
    if payload_size == 0 or data[end - 1] != 0:
        raise ScgiError("SCGI head does not end with a NUL (names and values are NUL-terminated)")
    parts = bytes(data[start:end - 1]).split(b"\0")
    count = len(parts)
    if count & 1:
        raise ScgiError(f"SCGI head ends with the name {parts[-1][:64]!r} without a value")
    if count > 2 * max_vars:
        raise ScgiError(f"SCGI head has more than {max_vars} variables")
    names = parts[0::2]
    if parts[0] != b"CONTENT_LENGTH":
        raise ScgiError(f"SCGI head starts with {parts[0][:64]!r}, not CONTENT_LENGTH (the protocol requires it "
                        f"first)")
    if b"" in names:
        raise ScgiError("SCGI head has a variable with an empty name")
    if b"SCGI" not in names or parts[2 * names.index(b"SCGI") + 1] != b"1":
        raise ScgiError("SCGI head has no SCGI=1 variable (the protocol requires it; nginx: include scgi_params)")
    pairs = list(zip(names, parts[1::2], strict=False))
    return ScgiHead(pairs, end + 1), end + 1


class ScgiReader(PrefixReader[ScgiHead]):
    """Buffers a connection's first bytes until the head is complete (protocols/prefix.py): ``feed`` returns
    None, then the head; :attr:`leftover` holds the first body bytes. Buffered bytes are bounded by the limit
    plus the length digits and the two delimiters."""

    __slots__ = ()

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, max_vars: int = DEFAULT_MAX_VARS) -> None:
        super().__init__(lambda data: parse(data, max_size, max_vars), "the SCGI head")


def encode_head(pairs: Pairs) -> bytes:
    """An SCGI head for ``pairs`` (CONTENT_LENGTH first, SCGI=1 among them): for tests and tools."""
    payload = b"".join(name + b"\0" + value + b"\0" for name, value in pairs)
    return b"%d:%s," % (len(payload), payload)
