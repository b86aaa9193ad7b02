"""Tests for bascule.listen.proxy_protocol: PROXY protocol v1 and v2 headers as raw bytes, whole and in pieces,
good and bad, and a hypothesis fuzz of the parser (bounded like tests/protocols/h1/test_fuzz_h1.py)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bascule.errors import BasculeError
from bascule.listen.proxy_protocol import (
    DEFAULT_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
    crc32c,
    parse,
)

EXAMPLES = int(os.environ.get("BASCULE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def crc32c_bitwise(data: bytes) -> int:
    """A second, table-free CRC-32C (reflected Castagnoli polynomial), to check the module's against."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(ver_cmd: int = 0x21, fam: int = 0x11, address: bytes | None = None, tlvs: bytes = b"",
       length: int | None = None) -> bytes:
    """A v2 header: signature, version/command, family/transport, length, address block, TLVs."""
    if address is None:
        address = bytes([192, 0, 2, 1, 198, 51, 100, 7]) + struct.pack("!HH", 51234, 443)
    body = address + tlvs
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", len(body) if length is None else length) + body


def with_crc(header_without_crc: bytes, corrupt: bool = False) -> bytes:
    """Append a CRC32C TLV (fixing up the length field) and fill it in the way a sender does (spec 2.2.3)."""
    body_length = struct.unpack("!H", header_without_crc[14:16])[0] + 7
    header = header_without_crc[:14] + struct.pack("!H", body_length) + header_without_crc[16:] + tlv(0x03, bytes(4))
    crc = crc32c_bitwise(header) ^ (1 if corrupt else 0)
    return header[:-4] + struct.pack("!I", crc)


def parsed(data: bytes) -> tuple[ProxyHeader, int]:
    result = parse(data)
    assert result is not None
    return result


def refused(data: bytes, fragment: str) -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse(data)
    assert fragment in str(caught.value)


# -- CRC32C --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (b"123456789", 0xE3069283),  # the check value of CRC-32C
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
    (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing bytes
    (b"", 0),
])
def test_crc32c_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_bitwise(data) == expected
    assert crc32c(data[5:], crc32c(data[:5])) == expected  # it continues


# -- version 1 -----------------------------------------------------------------------------------------


def test_v1_tcp4_spec_example() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + REQUEST
    header, used = parsed(data)
    assert used == 47 and data[used:] == REQUEST
    assert (header.version, header.command, header.family, header.transport) == (1, "PROXY", "INET", "STREAM")
    assert header.source == ("192.168.0.1", 56324)
    assert header.destination == ("192.168.0.11", 443)
    assert header.ssl is None and not header.tls and header.length == 47


def test_v1_tcp6_and_longest_lines() -> None:
    header, used = parsed(b"PROXY TCP6 2001:DB8::1 ::1 65535 0\r\n")
    assert header.source == ("2001:db8::1", 65535) and header.destination == ("::1", 0)
    full = ":".join(["ffff"] * 8)
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(line) == 104 and parsed(line)[1] == 104
    worst = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(worst) == 107
    header, used = parsed(worst + b"x")
    assert used == 107 and header.source is None and header.family == "UNSPEC"


def test_v1_unknown_uses_the_real_endpoints_and_ignores_the_rest() -> None:
    header, used = parsed(b"PROXY UNKNOWN\r\nGET")
    assert used == 15 and header.source is None and header.destination is None
    assert parsed(b"PROXY UNKNOWN whatever the sender wrote\r\n")[0].source is None


@pytest.mark.parametrize(("data", "fragment"), [
    (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    (b"PROXY\r\n", "no PROXY protocol header"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "bare CR"),
    (b"PROXY UNKNOWN \r \r\n", "bare CR"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "4 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "4 fields"),
    (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "not a valid IPv4"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not a valid IPv4"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not a valid IPv4"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not a valid IPv6"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "not a valid IPv6"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "leading zeros"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "0-65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "0-65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xc3\xa9\r\n", "US-ASCII"),
    (b"PROXY TCP4 " + b"1" * 120, "no CRLF in its first 107"),
])
def test_v1_refused(data: bytes, fragment: str) -> None:
    refused(data, fragment)


def test_v1_refused_as_soon_as_the_bytes_allow() -> None:
    refused(b"G", "no PROXY protocol header")  # an HTTP client on a PROXY listener: its first byte
    refused(b"PRX", "no PROXY protocol header")
    assert parse(b"PROX") is None  # still a valid start
    assert parse(b"PROXY TCP4 1.2.3.4") is None
    assert parse(b"PROXY TCP4 " + b"1" * 95) is None  # 106 bytes: the CRLF may still come
    refused(b"PROXY TCP4 " + b"1" * 96, "no CRLF")  # 107 without one


# -- version 2 -----------------------------------------------------------------------------------------


def test_v2_tcp4_literal_bytes() -> None:
    data = bytes.fromhex(
        "0d0a0d0a000d0a515549540a"  # signature
        "21"  # version 2, PROXY
        "11"  # INET, STREAM
        "000c"  # 12 bytes of addresses
        "c0000201" "c6336407"  # 192.0.2.1 -> 198.51.100.7
        "c822" "01bb"  # 51234 -> 443
    ) + REQUEST
    header, used = parsed(data)
    assert used == 28 and data[used:] == REQUEST
    assert (header.version, header.command, header.family, header.transport) == (2, "PROXY", "INET", "STREAM")
    assert header.source == ("192.0.2.1", 51234) and header.destination == ("198.51.100.7", 443)
    assert header.other_tlvs == () and not header.crc32c_checked


def test_v2_tcp6() -> None:
    source = bytes.fromhex("20010db8000000000000000000000001")
    address = source + bytes(15) + b"\x01" + struct.pack("!HH", 1, 65535)
    header, used = parsed(v2(fam=0x21, address=address))
    assert used == 16 + 36
    assert header.source == ("2001:db8::1", 1) and header.destination == ("::1", 65535)
    assert header.family == "INET6"


def test_v2_unix_stream_gives_paths_and_the_real_endpoints() -> None:
    address = b"/run/haproxy.sock".ljust(108, b"\0") + b"/run/app.sock\0garbage".ljust(108, b"\0")
    header, used = parsed(v2(fam=0x31, address=address))
    assert used == 16 + 216
    assert header.source is None and header.destination is None and header.family == "UNIX"
    assert header.source_path == b"/run/haproxy.sock" and header.destination_path == b"/run/app.sock"


def test_v2_local_discards_the_addresses() -> None:
    header, used = parsed(v2(ver_cmd=0x20, fam=0x00, address=b""))  # HAProxy's health check
    assert used == 16 and header.command == "LOCAL" and header.source is None
    header, _ = parsed(v2(ver_cmd=0x20))  # an address block is there, and ignored
    assert header.command == "LOCAL" and header.source is None
    header, used = parsed(v2(ver_cmd=0x20, fam=0x11, address=b"\x01\x02"))  # short: the family is ignored
    assert used == 18 and header.source is None


def test_v2_unspec_and_dgram_fall_back_to_the_real_endpoints() -> None:
    assert parsed(v2(fam=0x00, address=b""))[0].source is None
    header, _ = parsed(v2(fam=0x12))
    assert header.transport == "DGRAM" and header.source is None


def test_v2_tlvs() -> None:
    ssl = bytes([0x07]) + struct.pack("!I", 0) + tlv(0x21, b"TLSv1.3") + tlv(0x23, b"TLS_AES_128_GCM_SHA256") + \
        tlv(0x22, "exämple.com".encode()) + tlv(0x24, b"RSA-SHA256") + tlv(0x25, b"RSA2048") + \
        tlv(0x26, b"x25519") + tlv(0x27, b"rsa_pss_rsae_sha256") + tlv(0x28, b"\x30\x82DER") + tlv(0x2F, b"new")
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x04, bytes(5)) + tlv(0x05, b"\x00id\xff") + \
        tlv(0x20, ssl) + tlv(0x30, b"netns") + tlv(0xEA, b"vpce-0123") + tlv(0x04, b"")
    header, used = parsed(v2(tlvs=tlvs) + REQUEST)
    assert used == len(v2(tlvs=tlvs))
    assert header.alpn == b"h2" and header.authority == "example.com" and header.unique_id == b"\x00id\xff"
    assert header.other_tlvs == ((0x30, b"netns"), (0xEA, b"vpce-0123"))  # NOOPs dropped, unknown kept in order
    assert header.tls and header.ssl is not None
    info = header.ssl
    assert info.ssl and info.cert_verified and info.client == 7 and info.verify == 0
    assert (info.version, info.cipher, info.common_name) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256", "exämple.com")
    assert (info.sig_alg, info.key_alg, info.group, info.sig_scheme) == ("RSA-SHA256", "RSA2048", "x25519",
                                                                         "rsa_pss_rsae_sha256")
    assert info.client_cert == b"\x30\x82DER"


def test_v2_ssl_without_tls_or_with_a_failed_verification() -> None:
    header, _ = parsed(v2(tlvs=tlv(0x20, bytes([0x00]) + struct.pack("!I", 0))))
    assert header.ssl is not None and not header.tls and not header.ssl.cert_verified
    header, _ = parsed(v2(tlvs=tlv(0x20, bytes([0x03]) + struct.pack("!I", 1))))
    assert header.tls and header.ssl is not None and not header.ssl.cert_verified


def test_v2_crc32c_checked() -> None:
    data = with_crc(v2(tlvs=tlv(0x02, b"example.com")))
    header, used = parsed(data + REQUEST)
    assert used == len(data) and header.crc32c_checked and header.authority == "example.com"
    local = with_crc(v2(ver_cmd=0x20, fam=0x00, address=b""))
    assert parsed(local)[0].crc32c_checked
    refused(with_crc(v2(), corrupt=True), "CRC32C")
    good = bytearray(data)
    good[20] ^= 0x01  # one flipped bit in the source address
    refused(bytes(good), "CRC32C")


@pytest.mark.parametrize(("data", "fragment"), [
    (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(4), "not the v2 signature"),
    (V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1"),
    (V2_SIGNATURE + b"\x31", "version 3"),
    (V2_SIGNATURE + b"\x22\x11\x00\x00", "command 2"),
    (V2_SIGNATURE + b"\x21\x41\x00\x00", "address family 4"),
    (V2_SIGNATURE + b"\x21\x13\x00\x00", "transport 3"),
    (v2(address=bytes(11)), "shorter than the 12"),
    (v2(fam=0x21, address=bytes(12)), "shorter than the 36"),
    (v2(fam=0x31, address=bytes(215)), "shorter than the 216"),
    (v2(tlvs=b"\x04\x00"), "cut off"),
    (v2(tlvs=tlv(0x02, b"a")[:-1] + b"\x00\x05abc"), "overflows the header"),
    (v2(tlvs=b"\x05\x00\x09abc"), "overflows the header by 6"),
    (v2(tlvs=tlv(0x20, bytes(4))), "fewer than its fixed 5"),
    (v2(tlvs=tlv(0x20, bytes(5) + b"\x21\x00\x09TLS")), "overflows the SSL TLV"),
    (v2(tlvs=tlv(0x20, bytes(5) + b"\x21\x00")), "cut off by the end of the SSL TLV"),
    (v2(tlvs=tlv(0x20, bytes(5) + tlv(0x21, b"a") + tlv(0x21, b"b"))), "sub-TLV 0x21 twice"),
    (v2(tlvs=tlv(0x20, bytes(5) + tlv(0x23, b"\xff"))), "not ASCII"),
    (v2(tlvs=tlv(0x02, b"\xff")), "not UTF-8"),
    (v2(tlvs=tlv(0x02, b"a" * 256)), "over 255"),
    (v2(tlvs=tlv(0x05, b"a" * 129)), "over 128"),
    (v2(tlvs=tlv(0x02, b"a") + tlv(0x02, b"b")), "TLV 0x02 twice"),
    (v2(tlvs=tlv(0x03, bytes(3))), "has 3 bytes, not 4"),
    (v2(length=DEFAULT_MAX_LENGTH - 15), f"of {DEFAULT_MAX_LENGTH + 1} bytes is over"),
])
def test_v2_refused(data: bytes, fragment: str) -> None:
    refused(data, fragment)


def test_v2_waits_for_the_whole_header_and_never_reads_past_it() -> None:
    data = v2(tlvs=tlv(0x02, b"example.com"))
    for cut in range(len(data)):
        assert parse(data[:cut]) is None, cut
    refused(data[:12] + b"\x10", "version 1")  # refused from the 13th byte, before the length arrives
    refused(V2_SIGNATURE + b"\x21\x11\xff\xff", "over the limit")  # from the 16th
    assert parse(V2_SIGNATURE + b"\x21\x11\xff\xff", max_length=65551) is None  # a raised limit waits
    assert parsed(data + data)[1] == len(data)  # a second header is the next protocol's business


def test_v2_tlv_ending_exactly_at_the_header_end() -> None:
    data = v2(tlvs=tlv(0xE0, bytes(65535 - 12 - 3)))
    header, used = parse(data, max_length=65551) or (None, 0)
    assert header is not None and used == 65551 and header.other_tlvs[0][0] == 0xE0


# -- the reader ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    with_crc(v2(tlvs=tlv(0x20, bytes([1, 0, 0, 0, 0]) + tlv(0x21, b"TLSv1.2")))),
])
def test_reader_byte_at_a_time(header: bytes) -> None:
    whole = parse(header + REQUEST)
    assert whole is not None
    reader = ProxyHeaderReader()
    data = header + REQUEST
    for index in range(len(header) - 1):
        assert reader.feed(data[index:index + 1]) is None
    result = reader.feed(data[len(header) - 1:len(header) + 3])  # the last header byte and some HTTP
    assert result == whole[0] and reader.header is result
    assert reader.leftover == REQUEST[:3]
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


def test_reader_refuses_early() -> None:
    reader = ProxyHeaderReader()
    assert reader.feed(b"\r\n\r\n") is None
    with pytest.raises(ProxyProtocolError):
        reader.feed(b"\x00\r\nQUIT\n\x21\x11\x10\x00")  # 4096 + 16 bytes claimed: over the limit
    assert ProxyHeaderReader(max_length=5000).feed(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x00") is None
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader().feed(b"\x16\x03\x01")  # a TLS ClientHello where the header should be


def test_error_is_a_bascule_error() -> None:
    assert issubclass(ProxyProtocolError, BasculeError)


# -- fuzz ----------------------------------------------------------------------------------------------

_SEEDS = [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    v2(fam=0x21, address=bytes(36)),
    v2(ver_cmd=0x20, fam=0x00, address=b""),
    with_crc(v2(tlvs=tlv(0x02, b"example.com") + tlv(0x20, bytes([1, 0, 0, 0, 0]) + tlv(0x21, b"TLSv1.3")))),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed header with a few bytes replaced, inserted or cut, then arbitrary trailing bytes."""
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(("set", "insert", "delete", "truncate")))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and data:
            del data[position]
        elif action == "truncate":
            del data[position:]
    return bytes(data) + draw(st.binary(max_size=16))


def _outcome(data: bytes) -> tuple[str, ProxyHeader | None]:
    try:
        result = parse(data, max_length=1024)
    except ProxyProtocolError:
        return ("error", None)
    if result is None:
        return ("more", None)
    header, used = result
    assert 0 < used <= len(data) and used == header.length
    assert used <= (107 if header.version == 1 else 1024)
    return ("header", header)


@FUZZ
@given(st.one_of(mutated(), st.binary(max_size=300)))
def test_fuzz_parse_never_raises_anything_else_nor_reads_past_the_data(data: bytes) -> None:
    outcome = _outcome(data)
    if outcome[1] is not None:
        used = outcome[1].length
        # the verdict depends on the header's bytes alone: what follows it is never looked at
        assert _outcome(data[:used]) == outcome
        assert _outcome(data[:used] + b"\xff" * 8)[0] == "header"
    elif outcome[0] == "more":
        # a prefix that may still become a header is also one for every shorter prefix
        for cut in range(len(data)):
            assert _outcome(data[:cut])[0] == "more"


@FUZZ
@given(st.one_of(mutated(), st.binary(max_size=200)), st.lists(st.integers(1, 40), max_size=30))
def test_fuzz_reader_chunking_does_not_change_the_verdict(data: bytes, cuts: list[int]) -> None:
    expected = _outcome(data)
    reader = ProxyHeaderReader(max_length=1024)
    position = 0
    got: tuple[str, ProxyHeader | None] = ("more", None)
    chunks = [*cuts, len(data)]
    for size in chunks:
        chunk = data[position:position + size]
        position += size
        try:
            header = reader.feed(chunk)
        except ProxyProtocolError:
            got = ("error", None)
            break
        if header is not None:
            got = ("header", header)
            assert reader.leftover == data[header.length:min(position, len(data))]
            break
        if position >= len(data):
            break
    assert got == expected
