"""Tests for bascule.protocols.h2.headers: HPACK decoding behind the cache, request validation, encoding.

Blocks are built with the ``hpack`` library's encoder (a real peer's bytes) and the server's encoded
responses are read back with its decoder, so both directions are checked against an independent codec.
"""

from __future__ import annotations

import hpack
import pytest

from bascule.errors import AppProtocolError
from bascule.protocols.h2 import headers as hh

BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a?b=1"), (b":authority", b"example.org")]


def test_request_fields_split_and_host_from_authority() -> None:
    head = hh.parse_request([*BASE, (b"accept", b"*/*")], connect_protocol=False)
    assert head.method == "GET" and head.raw_path == b"/a" and head.query == b"b=1"
    assert head.headers == [(b"host", b"example.org"), (b"accept", b"*/*")]
    assert head.content_length is None and head.protocol is None


def test_cookies_are_joined_for_http1_minded_apps() -> None:
    head = hh.parse_request([*BASE, (b"cookie", b"a=1"), (b"cookie", b"b=2")], connect_protocol=False)
    assert (b"cookie", b"a=1; b=2") in head.headers


@pytest.mark.parametrize("fields", [
    [*BASE, (b"Accept", b"x")],  # uppercase name
    [*BASE, (b"connection", b"keep-alive")],  # connection-specific
    [*BASE, (b"transfer-encoding", b"chunked")],
    [*BASE, (b"te", b"gzip")],  # te other than trailers
    [*BASE, (b"x", b"a\nb")],  # LF in a value
    [*BASE, (b"x", b" padded")],  # leading whitespace
    [*BASE, (b"x", b"a\x00b")],
    [(b"accept", b"x"), *BASE],  # pseudo-header after a regular one
    # a :path HTTP/1.1 would refuse as a request-target (llhttp: 400)
    *([*BASE[:2], (b":path", b"/a" + bad + b"b"), BASE[3]] for bad in (b" ", b"\t", b"\x7f", b"\x01", b"\xc3\xa9")),
    [*BASE, (b":method", b"POST")],  # duplicated pseudo-header
    [*BASE, (b":status", b"200")],  # response pseudo-header
    [*BASE, (b":protocol", b"websocket")],  # :protocol not enabled (and not CONNECT)
    [f for f in BASE if f[0] != b":path"],  # missing :path
    [f for f in BASE if f[0] != b":scheme"],
    [f if f[0] != b":path" else (b":path", b"") for f in BASE],  # empty :path
    [f if f[0] != b":path" else (b":path", b"/a#frag") for f in BASE],
    [*BASE, (b"content-length", b"12x")],
    [*BASE, (b"content-length", b"1"), (b"content-length", b"2")],
])
def test_malformed_requests_are_refused(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(hh.MalformedRequest):
        hh.parse_request(fields, connect_protocol=False)


def test_te_trailers_and_options_star_are_fine() -> None:
    hh.parse_request([*BASE, (b"te", b"trailers")], connect_protocol=False)
    star = [f if f[0] != b":path" else (b":path", b"*") for f in BASE]
    star[0] = (b":method", b"OPTIONS")
    assert hh.parse_request(star, connect_protocol=False).raw_path == b"*"


def test_extended_connect_needs_the_setting() -> None:
    fields = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"), (b":path", b"/ws"),
              (b":authority", b"h")]
    assert hh.parse_request(fields, connect_protocol=True).protocol == b"websocket"
    with pytest.raises(hh.MalformedRequest):
        hh.parse_request(fields, connect_protocol=False)


def test_decoder_cache_is_used_only_while_the_table_cannot_have_changed() -> None:
    enc = hpack.Encoder()
    dec = hh.RequestDecoder(65536, connect_protocol=False)
    first = enc.encode(BASE)  # literals with incremental indexing: changes the table, never cached
    again = enc.encode(BASE)  # now all indexed: one byte each
    assert all(b >= 0x81 for b in again)
    assert dec.request(first).raw_path == b"/a"
    head = dec.request(again)
    assert dec.request(again) is head  # cached
    other = [f if f[0] != b":path" else (b":path", b"/other") for f in BASE]
    assert dec.request(enc.encode(other)).raw_path == b"/other"  # a literal: cache cleared
    # the same bytes now index the newer entries: a stale cache would still say /a
    assert dec.request(again).raw_path == b"/other"


def test_decoder_errors_are_classified() -> None:
    dec = hh.RequestDecoder(100, connect_protocol=False)
    with pytest.raises(hh.CompressionError):
        dec.request(b"\xbf")  # index 63: nothing there
    big = hpack.Encoder().encode([*BASE, (b"x", b"y" * 200)])
    with pytest.raises(hh.HeaderBlockTooLarge):
        hh.RequestDecoder(100, connect_protocol=False).request(big)


@pytest.mark.parametrize("status", [200, 204, 404, 500, 103, 418, 599])
def test_response_fields_round_trip_through_a_real_decoder(status: int) -> None:
    parts, length = hh.encode_response_fields([(b"Content-Type", b"text/plain"), (b"X-Long", b"v" * 300),
                                               (b"content-length", b"5"), (b"connection", b"close")])
    block = hh.status_field(status) + b"".join(parts)
    fields = hpack.Decoder().decode(block, raw=True)
    assert fields == [(b":status", b"%d" % status), (b"content-type", b"text/plain"), (b"x-long", b"v" * 300),
                      (b"content-length", b"5")]
    assert length == 5


@pytest.mark.parametrize("header", [(b"x", b"a\r\nb"), (b"x", b"a\0"), (b"bad name", b"v"), (b"x:y", b"v"), (b"", b"v"),
                                    (b"content-length", b"-1")])
def test_response_fields_that_could_split_are_refused(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(AppProtocolError):
        hh.encode_response_fields([header])


def test_invalid_status_is_refused() -> None:
    with pytest.raises(AppProtocolError):
        hh.status_field(1000)


def test_fixed_fields_and_trailers_encode() -> None:
    fixed = hh.encode_fixed(b"date: Sat, 21 Nov 2026 12:00:00 GMT\r\nserver: bascule\r\n")
    assert hpack.Decoder().decode(fixed, raw=True) == [(b"date", b"Sat, 21 Nov 2026 12:00:00 GMT"),
                                                       (b"server", b"bascule")]
    assert hpack.Decoder().decode(hh.encode_trailers([(b"grpc-status", b"0")]), raw=True) == [
        (b"grpc-status", b"0")]


@pytest.mark.parametrize("value", [0, 14, 15, 16, 127, 128, 300, 70000])
def test_integer_encoding_matches_rfc7541(value: int) -> None:
    name = b"n" * value if value < 1000 else b"n"
    block = hh.literal(name, b"v" * value)
    assert hpack.Decoder(max_header_list_size=1 << 20).decode(block, raw=True) == [(name, b"v" * value)]
