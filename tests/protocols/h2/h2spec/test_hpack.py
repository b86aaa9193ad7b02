"""h2spec's hpack cases for RFC 7541 sections 2.3, 4.2, 5.2, 6.1 and 6.3: header blocks the decoder must refuse.

Each case appends (or prepends) one bad representation to the common request's header block; a decoding error
is a connection error of type COMPRESSION_ERROR (RFC 7540 4.3): a GOAWAY with that code, or a close. One test
per h2spec case; the test name and the first docstring line carry h2spec's id (``hpack/2.3.3/1`` is
``test_hpack_2_3_3_1``). The code is our own, on :mod:`.h2client`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from .h2client import COMPRESSION_ERROR, HEADER_TABLE_SIZE, H2Client, hpack_int, hpack_string

pytestmark = pytest.mark.timeout(6)

EOS = 256  # the Huffman table's end-of-string symbol (30 one bits)


def huffman_bits(symbols: Sequence[int], *, pad_with: int = 1, extra_octets: int = 0) -> bytes:
    """Huffman-code ``symbols`` (octets, or EOS) by hand, padding the last octet with ``pad_with`` bits.

    ``extra_octets`` adds that many all-ones octets after the padding (padding longer than 7 bits).
    """
    value, nbits = 0, 0
    for symbol in symbols:
        value = (value << REQUEST_CODES_LENGTH[symbol]) | REQUEST_CODES[symbol]
        nbits += REQUEST_CODES_LENGTH[symbol]
    pad = -nbits % 8
    value = (value << pad) | ((1 << pad) - 1 if pad_with else 0)
    nbits += pad
    return value.to_bytes(nbits // 8, "big") + b"\xff" * extra_octets


def _huffman_literal(encoded_value: bytes) -> bytes:
    """``x-test: <encoded_value>`` as a literal without indexing, new name, both strings Huffman-coded."""
    return b"\x00" + hpack_string(b"x-test", huffman=True) + hpack_int(len(encoded_value), 7, 0x80) + encoded_value


def _send_block(h2: H2Client, *, before: bytes = b"", after: bytes = b"") -> None:
    h2.send_headers(1, before + h2.encode(h2.request_headers()) + after)
    h2.expect_connection_error(COMPRESSION_ERROR)


# -- 2.3.3. Index Address Space --------------------------------------------------------------------------------


def test_hpack_2_3_3_1(h2: H2Client) -> None:
    """hpack/2.3.3/1: Sends a indexed header field representation with invalid index (126); decoding error."""
    _send_block(h2, after=hpack_int(126, 7, 0x80))


def test_hpack_2_3_3_2(h2: H2Client) -> None:
    """hpack/2.3.3/2: Sends a literal header field representation with invalid index (name index 126)."""
    _send_block(h2, after=hpack_int(126, 6, 0x40) + hpack_string(b"h2spec"))


# -- 4.2. Maximum Table Size -----------------------------------------------------------------------------------


def test_hpack_4_2_1(h2: H2Client) -> None:
    """hpack/4.2/1: Sends a dynamic table size update at the end of header block; decoding error."""
    _send_block(h2, after=hpack_int(1, 5, 0x20))


# -- 5.2. String Literal Representation ------------------------------------------------------------------------


def test_hpack_5_2_1(h2: H2Client) -> None:
    """hpack/5.2/1: Sends a Huffman-encoded string literal representation with padding longer than 7 bits."""
    _send_block(h2, after=_huffman_literal(huffman_bits(b"test", extra_octets=1)))


def test_hpack_5_2_2(h2: H2Client) -> None:
    """hpack/5.2/2: Sends a Huffman-encoded string literal representation padded by zero."""
    value = huffman_bits(b"test", pad_with=0)
    assert value != huffman_bits(b"test"), "test precondition: 'test' must need padding bits"
    _send_block(h2, after=_huffman_literal(value))


def test_hpack_5_2_3(h2: H2Client) -> None:
    """hpack/5.2/3: Sends a Huffman-encoded string literal representation containing the EOS symbol."""
    _send_block(h2, after=_huffman_literal(huffman_bits([EOS, *b"test"])))


# -- 6.1. Indexed Header Field Representation ------------------------------------------------------------------


def test_hpack_6_1_1(h2: H2Client) -> None:
    """hpack/6.1/1: Sends a indexed header field representation with index 0; decoding error."""
    _send_block(h2, after=b"\x80")


# -- 6.3. Dynamic Table Size Update ----------------------------------------------------------------------------


def test_hpack_6_3_1(h2: H2Client) -> None:
    """hpack/6.3/1: Sends a dynamic table size update larger than the value of SETTINGS_HEADER_TABLE_SIZE."""
    limit = h2.server_settings.get(HEADER_TABLE_SIZE, 4096)
    _send_block(h2, before=hpack_int(limit + 1, 5, 0x20))
