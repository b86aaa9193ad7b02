"""Tests for bascule.protocols.uwsgi_wire: uwsgi request packets as raw bytes (as nginx's uwsgi_pass writes them),
whole, byte by byte and cut short; bad modifiers, wrong lengths, limits; and a hypothesis fuzz."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bascule.cgi import FixedLengthBody, request_from_vars
from bascule.errors import BasculeError
from bascule.protocols.uwsgi_wire import UwsgiError, UwsgiReader, encode_vars, parse, parse_vars

EXAMPLES = int(os.environ.get("BASCULE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

PAIRS = [(b"QUERY_STRING", b""), (b"REQUEST_METHOD", b"POST"), (b"CONTENT_TYPE", b"text/plain"),
         (b"CONTENT_LENGTH", b"5"), (b"REQUEST_URI", b"/a%20b"), (b"PATH_INFO", b"/a b"),
         (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"),
         (b"SERVER_PORT", b"80"), (b"SERVER_NAME", b"localhost"), (b"HTTP_HOST", b"localhost")]
BODY = b"hello"


def var(name: bytes, value: bytes) -> bytes:
    return struct.pack("<H", len(name)) + name + struct.pack("<H", len(value)) + value


def packet(block: bytes, modifier1: int = 0, modifier2: int = 0, size: int | None = None) -> bytes:
    return bytes((modifier1,)) + struct.pack("<H", len(block) if size is None else size) + bytes((modifier2,)) + block


def refused(data: bytes, fragment: str, **limits: int) -> None:
    with pytest.raises(UwsgiError) as caught:
        parse(data, **limits)
    assert fragment in str(caught.value)


def test_encode_matches_the_wire_layout() -> None:
    data = encode_vars([(b"A", b"bc")])
    assert data == b"\x00\x07\x00\x00" + b"\x01\x00A\x02\x00bc"


def test_whole_packet_then_body() -> None:
    data = encode_vars(PAIRS) + BODY
    result = parse(data)
    assert result is not None
    head, used = result
    assert head.pairs == PAIRS and head.modifier2 == 0 and head.length == used == len(data) - len(BODY)
    request = request_from_vars(head.pairs)
    assert request.raw_path == b"/a%20b" and request.content_length == 5
    body = FixedLengthBody(request.content_length or 0)
    assert body.feed(data[used:]) == BODY and body.done


def test_reader_byte_at_a_time() -> None:
    data = encode_vars(PAIRS) + BODY
    reader = UwsgiReader()
    end = len(data) - len(BODY)
    for i in range(end - 1):
        assert reader.feed(data[i:i + 1]) is None
    assert reader.feed(data[end - 1:end]) is not None
    assert reader.head is not None and reader.head.pairs == PAIRS and reader.leftover == b""
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


@pytest.mark.parametrize("cut", range(1, 200, 7))
def test_reader_any_split_gives_the_same_head_and_body(cut: int) -> None:
    data = encode_vars(PAIRS) + BODY
    reader = UwsgiReader()
    head = reader.feed(data[:cut])
    if head is None:
        head = reader.feed(data[cut:])
        body = reader.leftover
    else:
        body = reader.leftover + data[cut:]
    assert head is not None and head.pairs == PAIRS and body == BODY


def test_reader_leftover_when_all_in_one_read() -> None:
    reader = UwsgiReader()
    assert reader.feed(encode_vars(PAIRS) + BODY) is not None and reader.leftover == BODY


def test_truncated_is_need_more_at_every_length() -> None:
    data = encode_vars(PAIRS)
    for end in range(len(data)):
        assert parse(data[:end]) is None


def test_empty_block_and_modifier2_kept() -> None:
    result = parse(packet(b"", modifier2=7))
    assert result is not None and result[0].pairs == [] and result[0].modifier2 == 7 and result[1] == 4


def test_empty_values_and_large_values() -> None:
    big = b"v" * 60000
    result = parse(encode_vars([(b"A", b""), (b"HTTP_X_BIG", big)]))
    assert result is not None and result[0].pairs == [(b"A", b""), (b"HTTP_X_BIG", big)]


BAD: list[tuple[bytes, str]] = [
    (b"GET / HTTP/1.1\r\n", "an HTTP client on a uwsgi listener"),
    (b"PRI * HTTP/2.0\r\n", "an HTTP client"),
    (b"\x16\x03\x01", "modifier1 22"),
    (packet(var(b"A", b"b"), modifier1=5), "modifier1 5"),
    (packet(var(b"A", b"b"), modifier1=72), "modifier1 72"),
    (packet(b"\x01"), "inside a name's length"),
    (packet(b"\x05\x00AB"), "runs past the variable block"),
    (packet(b"\x01\x00A"), "runs past the variable block"),
    (packet(b"\x01\x00A\x05\x00bc"), "running 3 bytes past"),
    (packet(b"\x00\x00\x01\x00b"), "empty name"),
    (packet(var(b"A", b"b") + b"\x00"), "inside a name's length"),  # a stray byte: exact length accounting
    (packet(var(b"A", b"b"), size=len(var(b"A", b"b")) - 1), "past the variable block"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD)
def test_refused(data: bytes, fragment: str) -> None:
    refused(data, fragment)


def test_refused_at_the_first_byte() -> None:
    refused(b"G", "HTTP client")
    refused(b"\x01", "modifier1 1")
    assert parse(b"\x00") is None and parse(b"") is None


def test_size_limit_refused_before_the_bytes_arrive() -> None:
    refused(b"\x00\x01\x10", "4097 bytes of variables is over the limit of 4096", max_size=4096)
    assert parse(b"\x00\x00\x10\x00", max_size=4096) is None  # 4096 fits: waits for it


def test_count_limit() -> None:
    block = encode_vars([(b"V%d" % i, b"") for i in range(11)])
    refused(block, "more than 10 variables", max_vars=10)
    assert parse(block, max_vars=11) is not None


def test_reader_is_bounded() -> None:
    reader = UwsgiReader(max_size=100)
    assert reader.feed(b"\x00\x64\x00") is None
    with pytest.raises(UwsgiError):
        UwsgiReader(max_size=100).feed(b"\x00\x65\x00")


def test_encode_refuses_oversize() -> None:
    with pytest.raises(UwsgiError):
        encode_vars([(b"A", b"x" * 65535)])


def test_parse_vars_from_an_offset() -> None:
    data = b"junk" + var(b"K", b"V") + b"tail"
    assert parse_vars(data, 4, len(data) - 4) == [(b"K", b"V")]


# -- fuzz ------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=20))
def test_fuzz_only_uwsgi_errors_and_limits_hold(data: bytes, max_size: int, max_vars: int) -> None:
    try:
        result = parse(data, max_size, max_vars)
    except BasculeError as exc:
        assert isinstance(exc, UwsgiError)
        return
    if result is not None:
        head, used = result
        assert used <= len(data) and used - 4 <= max_size and len(head.pairs) <= max_vars
        assert encode_vars(head.pairs, 0, head.modifier2) == data[:used]  # exact accounting, both ways


@FUZZ
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=20),
       st.binary(max_size=30), st.data())
def test_fuzz_round_trip_in_pieces(pairs: list[tuple[bytes, bytes]], body: bytes, data: st.DataObject) -> None:
    stream = encode_vars(pairs) + body
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = UwsgiReader()
    head = None
    rest = b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        piece = stream[start:end]
        if head is None:
            head = reader.feed(piece)
            if head is not None:
                rest = reader.leftover
        else:
            rest += piece
    assert head is not None and head.pairs == pairs and rest == body
