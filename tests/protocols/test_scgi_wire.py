"""Tests for bascule.protocols.scgi_wire: SCGI netstring heads as raw bytes (the protocol document's example and
what nginx's scgi_pass writes), whole, byte by byte and cut short; bad lengths, missing CONTENT_LENGTH or
SCGI=1, limits; and a hypothesis fuzz."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bascule.cgi import FixedLengthBody, request_from_vars
from bascule.errors import BasculeError
from bascule.protocols.scgi_wire import ScgiError, ScgiReader, encode_head, parse

EXAMPLES = int(os.environ.get("BASCULE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

# The example of the SCGI protocol document (python.ca/scgi/protocol.txt), byte for byte.
SPEC_EXAMPLE = (b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,"
                b"What is the answer to life?")

NGINX: list[tuple[bytes, bytes]] = [  # nginx: CONTENT_LENGTH first (it writes it itself), then scgi_params
    (b"CONTENT_LENGTH", b"0"), (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/p?q=1"), (b"QUERY_STRING", b"q=1"),
    (b"CONTENT_TYPE", b""), (b"DOCUMENT_URI", b"/p"), (b"DOCUMENT_ROOT", b"/srv"), (b"SCGI", b"1"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"http"), (b"REMOTE_ADDR", b"127.0.0.1"),
    (b"REMOTE_PORT", b"40000"), (b"SERVER_PORT", b"8080"), (b"SERVER_NAME", b"localhost"),
    (b"HTTP_HOST", b"localhost:8080"), (b"HTTP_USER_AGENT", b"curl/7.88.1"), (b"HTTP_ACCEPT", b"*/*")]


def refused(data: bytes, fragment: str, **limits: int) -> None:
    with pytest.raises(ScgiError) as caught:
        parse(data, **limits)
    assert fragment in str(caught.value)


def test_spec_example() -> None:
    result = parse(SPEC_EXAMPLE)
    assert result is not None
    head, used = result
    assert head.pairs == [(b"CONTENT_LENGTH", b"27"), (b"SCGI", b"1"), (b"REQUEST_METHOD", b"POST"),
                          (b"REQUEST_URI", b"/deepthought")]
    assert used == head.length == 74
    request = request_from_vars(head.pairs)
    assert (request.method, request.raw_path, request.content_length) == ("POST", b"/deepthought", 27)
    body = FixedLengthBody(27)
    assert body.feed(SPEC_EXAMPLE[used:]) == b"What is the answer to life?" and body.done


def test_encode_head_matches_the_spec_example() -> None:
    result = parse(SPEC_EXAMPLE)
    assert result is not None
    assert encode_head(result[0].pairs) + b"What is the answer to life?" == SPEC_EXAMPLE


def test_nginx_head() -> None:
    result = parse(encode_head(NGINX))
    assert result is not None and result[0].pairs == NGINX
    request = request_from_vars(result[0].pairs)
    assert request.raw_path == b"/p" and request.query_string == b"q=1" and request.content_length == 0
    assert (b"user-agent", b"curl/7.88.1") in request.headers and request.server == ("localhost", 8080)


def test_truncated_is_need_more_at_every_length() -> None:
    head_length = 74
    for end in range(head_length):
        assert parse(SPEC_EXAMPLE[:end]) is None


def test_reader_byte_at_a_time_and_leftover() -> None:
    reader = ScgiReader()
    for i in range(73):
        assert reader.feed(SPEC_EXAMPLE[i:i + 1]) is None
    head = reader.feed(SPEC_EXAMPLE[73:80])
    assert head is not None and head.length == 74 and reader.leftover == SPEC_EXAMPLE[74:80]
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


@pytest.mark.parametrize("cut", range(1, len(SPEC_EXAMPLE)))
def test_reader_any_split(cut: int) -> None:
    reader = ScgiReader()
    head = reader.feed(SPEC_EXAMPLE[:cut])
    if head is None:
        head = reader.feed(SPEC_EXAMPLE[cut:])
        body = reader.leftover
    else:
        body = reader.leftover + SPEC_EXAMPLE[cut:]
    assert head is not None and body == b"What is the answer to life?"


def test_empty_values() -> None:
    result = parse(encode_head([(b"CONTENT_LENGTH", b""), (b"SCGI", b"1"), (b"X", b"")]))
    assert result is not None and result[0].pairs[2] == (b"X", b"")


BAD: list[tuple[bytes, str]] = [
    (b"GET / HTTP/1.1\r\n", "an HTTP client on an SCGI listener"),
    (b":,", "no length"),
    (b"07:CONTENT_LENGTH\x000\x00,", "leading zero"),
    (b"00:", "leading zero"),
    (b"0:,", "does not end with a NUL"),
    (b"1x:", "not decimal digits"),
    (b"+5:", "HTTP client"),  # a sign is not a digit
    (b"9999999:", "more digits than the limit"),
    (b"99999:", "over the limit of 65536"),
    (b"4:A\x00B\x00;", "not followed by ','"),
    (b"3:A\x00B\x00,", "not followed by ','"),  # a length one short
    (b"5:A\x00B\x00,X", "not followed by ','"),  # one long
    (b"3:A\x00B,", "does not end with a NUL"),
    (b"2:A\x00,", "without a value"),
    (b"6:A\x00B\x00C\x00,", "without a value"),
    (encode_head([(b"SCGI", b"1"), (b"CONTENT_LENGTH", b"0")]), "not CONTENT_LENGTH"),
    (encode_head([(b"CONTENT_LENGTH", b"0")]), "no SCGI=1"),
    (encode_head([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"2")]), "no SCGI=1"),
    (encode_head([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"", b"x")]), "empty name"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD)
def test_refused(data: bytes, fragment: str) -> None:
    refused(data, fragment)


def test_refused_at_the_first_byte() -> None:
    refused(b"G", "HTTP client")
    refused(b"\x16", "HTTP client")
    assert parse(b"") is None and parse(b"7") is None and parse(b"70") is None


def test_limits() -> None:
    head = encode_head([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1")] + [(b"V%d" % i, b"") for i in range(8)])
    refused(head, "more than 9 variables", max_vars=9)
    assert parse(head, max_vars=10) is not None
    refused(b"101:", "over the limit of 100", max_size=100)
    refused(b"1000", "more digits than the limit", max_size=100)
    assert parse(b"100:", max_size=100) is None


# -- fuzz ------------------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda n, rest: b"%d:" % n + rest, st.integers(0, 120), st.binary(max_size=150))),
       st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=20))
def test_fuzz_only_scgi_errors_and_limits_hold(data: bytes, max_size: int, max_vars: int) -> None:
    try:
        result = parse(data, max_size, max_vars)
    except BasculeError as exc:
        assert isinstance(exc, ScgiError)
        return
    if result is not None:
        head, used = result
        assert used <= len(data) and len(head.pairs) <= max_vars
        assert encode_head(head.pairs) == data[:used]  # exact accounting, both ways
        assert head.pairs[0][0] == b"CONTENT_LENGTH" and (b"SCGI", b"1") in head.pairs


_NAME = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b)
_VALUE = st.binary(max_size=20).map(lambda b: b.replace(b"\0", b""))


@FUZZ
@given(st.lists(st.tuples(_NAME, _VALUE), max_size=10), st.binary(max_size=20), st.data())
def test_fuzz_round_trip_in_pieces(extra: list[tuple[bytes, bytes]], body: bytes, data: st.DataObject) -> None:
    pairs = [(b"CONTENT_LENGTH", b"%d" % len(body)), (b"SCGI", b"1"), *extra]
    stream = encode_head(pairs) + body
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = ScgiReader()
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
