"""Tests for bascule.protocols.fastcgi_wire: FastCGI 1.0 records as raw bytes (as nginx's fastcgi_pass and
libfcgi's cgi-fcgi write them), whole, byte by byte, params split at every offset, multiplexed requests
interleaved; refusals answered on the wire; protocol errors; the encoders; a hypothesis fuzz; and a real
cgi-fcgi request captured over a loopback socket when the tool is installed (Debian libfcgi-bin)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bascule.cgi import request_from_vars, response_head
from bascule.errors import BasculeError
from bascule.protocols import fastcgi_wire as fcgi
from bascule.protocols.fastcgi_wire import (
    Event,
    FastCGIConnection,
    FastCGIError,
    RequestAborted,
    RequestReady,
    StdinData,
    StdinEnd,
    encode_pairs,
    end_request,
    parse_pairs,
    record,
    stdout,
)

EXAMPLES = int(os.environ.get("BASCULE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

PARAMS = [(b"QUERY_STRING", b"a=1"), (b"REQUEST_METHOD", b"POST"), (b"CONTENT_TYPE", b"text/plain"),
          (b"CONTENT_LENGTH", b"5"), (b"SCRIPT_NAME", b"/x"), (b"REQUEST_URI", b"/x?a=1"),
          (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"),
          (b"HTTP_HOST", b"localhost"), (b"HTTP_X_LONG", b"v" * 300)]


def begin(request_id: int = 1, role: int = fcgi.RESPONDER, flags: int = fcgi.KEEP_CONN) -> bytes:
    return record(fcgi.BEGIN_REQUEST, request_id, struct.pack("!HB5x", role, flags))


def raw_record(kind: int, request_id: int, content: bytes, padding: int = 0, version: int = 1) -> bytes:
    return struct.pack("!BBHHBx", version, kind, request_id, len(content), padding) + content + b"\xee" * padding


def nginx_request(request_id: int = 1, body: bytes = b"hello", flags: int = fcgi.KEEP_CONN) -> bytes:
    """What nginx writes: BEGIN, all params in one padded record, the empty PARAMS, STDIN, the empty STDIN."""
    out = begin(request_id, flags=flags) + record(fcgi.PARAMS, request_id, encode_pairs(PARAMS))
    out += record(fcgi.PARAMS, request_id)
    if body:
        out += record(fcgi.STDIN, request_id, body)
    return out + record(fcgi.STDIN, request_id)


def summary(events: list[Event]) -> list[tuple[str, int, object]]:
    """Events as comparable tuples, STDIN pieces joined (their split depends on how bytes arrived)."""
    out: list[tuple[str, int, object]] = []
    for event in events:
        if isinstance(event, RequestReady):
            out.append(("ready", event.request_id, (event.params, event.keep_conn)))
        elif isinstance(event, StdinData):
            if out and out[-1][0] == "stdin" and out[-1][1] == event.request_id:
                previous = out.pop()
                out.append(("stdin", event.request_id, bytes(previous[2]) + event.data))  # type: ignore[arg-type]
            else:
                out.append(("stdin", event.request_id, event.data))
        else:
            out.append((type(event).__name__, event.request_id, None))
    return out


def feed_pieces(conn: FastCGIConnection, data: bytes, size: int) -> list[Event]:
    events: list[Event] = []
    for start in range(0, len(data), size):
        events += conn.receive_data(data[start:start + size])
    return events


def records(data: bytes) -> list[tuple[int, int, bytes, int]]:
    """A test decoder: (type, request id, content, padding) per record, checking the version and layout."""
    out = []
    pos = 0
    while pos < len(data):
        version, kind, request_id, length, padding = struct.unpack_from("!BBHHBx", data, pos)
        assert version == 1
        content = data[pos + 8:pos + 8 + length]
        assert len(content) == length
        out.append((kind, request_id, content, padding))
        pos += 8 + length + padding
    assert pos == len(data)
    return out


def refused(data: bytes, fragment: str, **options: int) -> None:
    with pytest.raises(FastCGIError) as caught:
        FastCGIConnection(**options).receive_data(data)
    assert fragment in str(caught.value)


# -- requests ----------------------------------------------------------------------------------------------


def test_nginx_request() -> None:
    conn = FastCGIConnection()
    events = conn.receive_data(nginx_request())
    assert summary(events) == [("ready", 1, (PARAMS, True)), ("stdin", 1, b"hello"), ("StdinEnd", 1, None)]
    assert conn.data_to_send() == b"" and conn.active == 1
    request = request_from_vars(events[0].params)  # type: ignore[attr-defined]
    assert request.raw_path == b"/x" and request.query_string == b"a=1" and request.content_length == 5


def test_byte_at_a_time_and_every_piece_size_give_the_same_events() -> None:
    data = nginx_request() + nginx_request(2)[:0]
    expected = summary(FastCGIConnection().receive_data(data))
    for size in (1, 2, 3, 7, 8, 9, 64, 1000):
        assert summary(feed_pieces(FastCGIConnection(), data, size)) == expected


def test_padding_is_skipped() -> None:
    data = (begin() + raw_record(fcgi.PARAMS, 1, encode_pairs(PARAMS), padding=255)
            + raw_record(fcgi.PARAMS, 1, b"", padding=7) + raw_record(fcgi.STDIN, 1, b"ab", padding=3)
            + raw_record(fcgi.STDIN, 1, b""))
    assert summary(FastCGIConnection().receive_data(data)) == [
        ("ready", 1, (PARAMS, True)), ("stdin", 1, b"ab"), ("StdinEnd", 1, None)]


def test_params_split_across_records_at_every_offset() -> None:
    stream = encode_pairs(PARAMS)
    for cut in range(1, len(stream)):  # an empty piece would end the stream: cut strictly inside
        data = (begin() + raw_record(fcgi.PARAMS, 1, stream[:cut]) + raw_record(fcgi.PARAMS, 1, stream[cut:])
                + record(fcgi.PARAMS, 1))
        events = FastCGIConnection().receive_data(data)
        assert summary(events) == [("ready", 1, (PARAMS, True))], cut


def test_params_one_byte_per_record() -> None:
    stream = encode_pairs(PARAMS)
    data = begin() + b"".join(record(fcgi.PARAMS, 1, stream[i:i + 1]) for i in range(len(stream)))
    conn = FastCGIConnection()
    assert conn.receive_data(data) == []
    assert summary(conn.receive_data(record(fcgi.PARAMS, 1))) == [("ready", 1, (PARAMS, True))]


def test_no_keep_conn_and_empty_body() -> None:
    events = FastCGIConnection().receive_data(nginx_request(body=b"", flags=0))
    assert summary(events) == [("ready", 1, (PARAMS, False)), ("StdinEnd", 1, None)]


def test_multiplexed_requests_interleaved() -> None:
    conn = FastCGIConnection(max_requests=3)
    one, two, three = (encode_pairs([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/%d" % i)]) for i in (1, 2, 3))
    data = (begin(1) + begin(2) + record(fcgi.PARAMS, 2, two[:5]) + begin(300) + record(fcgi.PARAMS, 1, one)
            + record(fcgi.PARAMS, 300, three) + record(fcgi.PARAMS, 2, two[5:]) + record(fcgi.PARAMS, 300)
            + record(fcgi.STDIN, 300, b"c") + record(fcgi.PARAMS, 2) + record(fcgi.PARAMS, 1)
            + record(fcgi.STDIN, 1, b"a") + record(fcgi.STDIN, 2, b"b") + record(fcgi.STDIN, 2)
            + record(fcgi.STDIN, 300) + record(fcgi.STDIN, 1))
    expected = [("ready", 300, (parse_pairs(three), True)), ("stdin", 300, b"c"),
                ("ready", 2, (parse_pairs(two), True)), ("ready", 1, (parse_pairs(one), True)), ("stdin", 1, b"a"),
                ("stdin", 2, b"b"), ("StdinEnd", 2, None), ("StdinEnd", 300, None), ("StdinEnd", 1, None)]
    assert summary(conn.receive_data(data)) == expected
    assert summary(feed_pieces(FastCGIConnection(max_requests=3), data, 5)) == expected
    assert conn.active == 3
    conn.finish(2)
    assert conn.active == 2


def test_finish_writes_the_end_and_frees_the_id() -> None:
    conn = FastCGIConnection()
    conn.receive_data(begin(7) + record(fcgi.PARAMS, 7, encode_pairs(PARAMS)) + record(fcgi.PARAMS, 7))
    out = conn.finish(7, app_status=3)
    assert records(out) == [(fcgi.STDOUT, 7, b"", 0), (fcgi.END_REQUEST, 7, b"\0\0\0\x03\0\0\0\0", 0)]
    assert conn.active == 0
    assert conn.receive_data(record(fcgi.STDIN, 7, b"late") + record(fcgi.STDIN, 7)) == []  # ignored
    events = conn.receive_data(begin(7) + record(fcgi.PARAMS, 7))  # the id is free again
    assert summary(events) == [("ready", 7, ([], True))]


def test_refuse_overloaded() -> None:
    conn = FastCGIConnection()
    conn.receive_data(begin(1) + record(fcgi.PARAMS, 1))
    assert records(conn.refuse(1)) == [(fcgi.END_REQUEST, 1, b"\0\0\0\0\x02\0\0\0", 0)]
    assert conn.active == 0 and conn.receive_data(record(fcgi.STDIN, 1, b"x")) == []


# -- refusals answered on the wire -----------------------------------------------------------------------------


def test_cant_mpx_conn_without_multiplexing() -> None:
    conn = FastCGIConnection(max_requests=1)
    events = conn.receive_data(begin(1) + begin(2) + record(fcgi.PARAMS, 2, encode_pairs(PARAMS))
                               + record(fcgi.PARAMS, 2) + record(fcgi.STDIN, 2) + record(fcgi.PARAMS, 1))
    assert summary(events) == [("ready", 1, ([], True))]  # request 2's records are ignored
    assert records(conn.data_to_send()) == [(fcgi.END_REQUEST, 2, b"\0\0\0\0\x01\0\0\0", 0)]
    assert conn.data_to_send() == b""


def test_overloaded_beyond_max_requests() -> None:
    conn = FastCGIConnection(max_requests=2)
    conn.receive_data(begin(1) + begin(2) + begin(3))
    assert records(conn.data_to_send()) == [(fcgi.END_REQUEST, 3, b"\0\0\0\0\x02\0\0\0", 0)]
    assert conn.active == 2


@pytest.mark.parametrize("role", [0, fcgi.AUTHORIZER, fcgi.FILTER, 9])
def test_unknown_role(role: int) -> None:
    conn = FastCGIConnection()
    events = conn.receive_data(begin(1, role=role) + record(fcgi.PARAMS, 1, encode_pairs(PARAMS))
                               + record(fcgi.PARAMS, 1) + record(fcgi.DATA, 1, b"x"))
    assert events == [] and conn.active == 0
    assert records(conn.data_to_send()) == [(fcgi.END_REQUEST, 1, b"\0\0\0\0\x03\0\0\0", 0)]


def test_abort_before_the_params_end_is_answered_here() -> None:
    conn = FastCGIConnection()
    events = conn.receive_data(begin(1) + record(fcgi.PARAMS, 1, b"\x01") + record(fcgi.ABORT_REQUEST, 1)
                               + record(fcgi.PARAMS, 1))
    assert events == [] and conn.active == 0
    assert records(conn.data_to_send()) == [(fcgi.END_REQUEST, 1, bytes(8), 0)]


def test_abort_after_the_params_end_is_an_event_once() -> None:
    conn = FastCGIConnection()
    events = conn.receive_data(begin(1) + record(fcgi.PARAMS, 1) + record(fcgi.STDIN, 1, b"x")
                               + record(fcgi.ABORT_REQUEST, 1) + record(fcgi.ABORT_REQUEST, 1))
    assert [type(event) for event in events] == [RequestReady, StdinData, RequestAborted]
    assert conn.active == 1 and conn.data_to_send() == b""  # the caller ends it
    assert conn.receive_data(record(fcgi.ABORT_REQUEST, 9)) == []  # an inactive id: ignored


def test_get_values() -> None:
    conn = FastCGIConnection(max_requests=4, max_conns=50, max_reqs=200)
    query = encode_pairs([(b"FCGI_MAX_CONNS", b""), (b"FCGI_MAX_REQS", b""), (b"FCGI_MPXS_CONNS", b""),
                          (b"OTHER", b"")])
    assert conn.receive_data(record(fcgi.GET_VALUES, 0, query)) == []
    [(kind, request_id, content, padding)] = records(conn.data_to_send())
    assert (kind, request_id) == (fcgi.GET_VALUES_RESULT, 0) and (len(content) + padding) % 8 == 0
    assert parse_pairs(content) == [(b"FCGI_MAX_CONNS", b"50"), (b"FCGI_MAX_REQS", b"200"), (b"FCGI_MPXS_CONNS", b"1")]
    conn = FastCGIConnection()
    conn.receive_data(record(fcgi.GET_VALUES, 0, encode_pairs([(b"FCGI_MPXS_CONNS", b"")])))
    assert parse_pairs(records(conn.data_to_send())[0][2]) == [(b"FCGI_MPXS_CONNS", b"0")]


@pytest.mark.parametrize(("kind", "request_id"), [(12, 0), (200, 0), (fcgi.BEGIN_REQUEST, 0), (fcgi.STDIN, 0),
                                                  (12, 1), (255, 5)])
def test_unknown_type(kind: int, request_id: int) -> None:
    conn = FastCGIConnection()
    assert conn.receive_data(raw_record(kind, request_id, b"whatever", padding=2)) == []
    assert records(conn.data_to_send()) == [(fcgi.UNKNOWN_TYPE, 0, bytes((kind,)) + bytes(7), 0)]


def test_records_for_inactive_ids_are_ignored() -> None:
    conn = FastCGIConnection()
    data = record(fcgi.PARAMS, 4, b"\x01\x01ab") + record(fcgi.STDIN, 4, b"x") + record(fcgi.ABORT_REQUEST, 4)
    assert conn.receive_data(data + record(fcgi.DATA, 4, b"x")) == [] and conn.data_to_send() == b""


# -- protocol errors ---------------------------------------------------------------------------------------


BAD: list[tuple[bytes, str]] = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "an HTTP client on a FastCGI listener"),
    (raw_record(fcgi.BEGIN_REQUEST, 1, bytes(8), version=2), "version 2"),
    (begin() + raw_record(fcgi.PARAMS, 1, b"", version=0), "version 0"),
    (raw_record(fcgi.BEGIN_REQUEST, 1, bytes(7)), "7 bytes of content, not 8"),
    (raw_record(fcgi.BEGIN_REQUEST, 1, bytes(16)), "16 bytes of content, not 8"),
    (begin() + begin(), "already active"),
    (begin() + record(fcgi.STDIN, 1, b"x"), "STDIN before the end of its PARAMS"),
    (begin() + record(fcgi.PARAMS, 1) + record(fcgi.STDIN, 1) + record(fcgi.STDIN, 1), "after the end of its STDIN"),
    (begin() + record(fcgi.PARAMS, 1) + record(fcgi.PARAMS, 1, b"\x01\x01ab"), "PARAMS after the end"),
    (begin() + record(fcgi.PARAMS, 1, b"\x05\x01ab") + record(fcgi.PARAMS, 1), "runs 4 bytes past"),
    (begin() + record(fcgi.PARAMS, 1, b"\x01") + record(fcgi.PARAMS, 1), "ends inside its lengths"),
    (begin() + record(fcgi.PARAMS, 1, b"\x80\x00") + record(fcgi.PARAMS, 1), "inside a 4-byte length"),
    (begin() + record(fcgi.PARAMS, 1, b"\x80\x00\x00\x05\x00") + record(fcgi.PARAMS, 1), "runs 5 bytes past"),
    (begin() + record(fcgi.PARAMS, 1, b"\xff\xff\xff\xff\x00") + record(fcgi.PARAMS, 1), "past its stream"),
    (begin() + record(fcgi.PARAMS, 1, b"\x00\x01x") + record(fcgi.PARAMS, 1), "empty name"),
    (begin() + record(fcgi.STDOUT, 1, b"x"), "STDOUT on request 1"),
    (record(fcgi.END_REQUEST, 1, bytes(8)), "END_REQUEST on request 1"),
    (record(fcgi.GET_VALUES, 1, b""), "GET_VALUES on request 1"),
    (begin() + record(fcgi.DATA, 1, b"x"), "only the Filter role"),
    (record(fcgi.GET_VALUES, 0, b"\x05"), "ends inside its lengths"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD)
def test_refused(data: bytes, fragment: str) -> None:
    refused(data, fragment, max_requests=2)


def test_params_size_limit() -> None:
    stream = encode_pairs([(b"HTTP_X", b"v" * 200)])
    refused(begin() + record(fcgi.PARAMS, 1, stream), "over the limit of 100 bytes", max_params_size=100)
    halves = record(fcgi.PARAMS, 1, stream[:100]) + record(fcgi.PARAMS, 1, stream[100:])
    refused(begin() + halves, "over the limit of 150 bytes", max_params_size=150)
    assert FastCGIConnection(max_params_size=len(stream)).receive_data(begin() + halves + record(fcgi.PARAMS, 1))


def test_params_count_limit() -> None:
    stream = encode_pairs([(b"V%d" % i, b"") for i in range(6)])
    refused(begin() + record(fcgi.PARAMS, 1, stream) + record(fcgi.PARAMS, 1), "more than 5 pairs", max_params=5)


def test_max_requests_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FastCGIConnection(max_requests=0)


# -- encoders --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 65527, 65528, 65529, 65535, 65536, 200_000])
def test_stdout_splits_and_pads(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    out = stdout(3, data)
    parts = records(out)
    assert all(kind == fcgi.STDOUT and request_id == 3 for kind, request_id, _, _ in parts)
    assert all((len(content) + padding) % 8 == 0 and len(content) <= 65528 for _, _, content, padding in parts)
    assert b"".join(content for _, _, content, _ in parts) == data
    assert len(parts) == max(1, -(-size // 65528))


def test_stderr_and_end_request_and_record() -> None:
    assert records(fcgi.stderr(2, b"oops")) == [(fcgi.STDERR, 2, b"oops", 4)]
    assert end_request(65535, 0xFFFFFFFF, fcgi.UNKNOWN_ROLE) == (b"\x01\x03\xff\xff\x00\x08\x00\x00"
                                                                 b"\xff\xff\xff\xff\x03\x00\x00\x00")
    assert end_request(1, -1) == end_request(1, 0xFFFFFFFF)  # a negative exit status as its 32 bits
    with pytest.raises(ValueError):
        record(fcgi.STDOUT, 1, bytes(65536))


def test_pairs_encoding_lengths() -> None:
    assert encode_pairs([(b"A", b"x" * 127)])[:2] == b"\x01\x7f"
    assert encode_pairs([(b"A", b"x" * 128)])[:5] == b"\x01\x80\x00\x00\x80"
    assert parse_pairs(b"\x80\x00\x00\x01\x01Ax") == [(b"A", b"x")]  # a long form for a short length is legal
    pairs = [(b"N" * 300, b"V" * 70000), (b"a", b"")]
    assert parse_pairs(encode_pairs(pairs)) == pairs


def test_a_cgi_response_in_stdout_records() -> None:
    conn = FastCGIConnection()
    conn.receive_data(nginx_request())
    out = stdout(1, response_head(200, b"content-type: text/plain\r\n") + b"hi") + conn.finish(1)
    parts = records(out)
    assert parts[0][2] == b"Status: 200 OK\r\ncontent-type: text/plain\r\n\r\nhi"
    assert [kind for kind, _, _, _ in parts] == [fcgi.STDOUT, fcgi.STDOUT, fcgi.END_REQUEST]


# -- fuzz ------------------------------------------------------------------------------------------------


_RECORD = st.builds(
    lambda kind, request_id, content, padding: raw_record(kind, request_id, content, padding),
    st.sampled_from([1, 2, 4, 5, 8, 9, 12, 6]), st.sampled_from([0, 1, 2, 3]), st.binary(max_size=40),
    st.integers(0, 9))
_VALID = st.builds(lambda kind, request_id, content: record(kind, request_id, content),
                   st.sampled_from([fcgi.PARAMS, fcgi.STDIN, fcgi.ABORT_REQUEST]), st.sampled_from([1, 2, 3]),
                   st.sampled_from([b"", b"\x01\x01ab", b"\x03\x00xyz", b"body"]))


@FUZZ
@given(st.lists(st.one_of(_RECORD, _VALID, st.builds(begin, st.sampled_from([1, 2, 3]), st.sampled_from([1, 1, 2]),
                                                     st.integers(0, 1)), st.binary(max_size=12)), max_size=14),
       st.integers(1, 3), st.integers(1, 64))
def test_fuzz_only_fastcgi_errors_and_limits_hold(pieces: list[bytes], max_requests: int, piece: int) -> None:
    data = b"".join(pieces)
    whole = FastCGIConnection(max_requests=max_requests, max_params_size=32, max_params=3)
    split = FastCGIConnection(max_requests=max_requests, max_params_size=32, max_params=3)
    try:
        expected = summary(whole.receive_data(data))
    except BasculeError as exc:
        assert isinstance(exc, FastCGIError)
        expected = None
    try:
        got = summary(feed_pieces(split, data, piece))
    except BasculeError as exc:
        assert isinstance(exc, FastCGIError)
        got = None
    if expected is not None:
        assert got == expected  # how the bytes were split never changes the verdict
        assert whole.data_to_send() == split.data_to_send()
    else:
        assert got is None
    for conn in (whole, split):
        assert conn.active <= max_requests
        assert all(request.params is None or len(request.params) <= 32 for request in conn._requests.values())
        assert len(conn._buffer) < 8 + 65535 + 255
        for kind, _request_id, _content, _padding in records(conn.data_to_send()):
            assert kind in (fcgi.END_REQUEST, fcgi.GET_VALUES_RESULT, fcgi.UNKNOWN_TYPE)
    for event in expected or []:
        if event[0] == "ready":
            assert len(event[2][0]) <= 3  # type: ignore[index]


@FUZZ
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=200), st.binary(max_size=300)), max_size=8),
       st.binary(max_size=100), st.data())
def test_fuzz_request_round_trip_in_any_records(pairs: list[tuple[bytes, bytes]], body: bytes,
                                                data: st.DataObject) -> None:
    stream = encode_pairs(pairs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
    wire = begin(5) + b"".join(record(fcgi.PARAMS, 5, stream[a:b]) for a, b in bounds if b > a)
    wire += record(fcgi.PARAMS, 5) + (record(fcgi.STDIN, 5, body) if body else b"") + record(fcgi.STDIN, 5)
    piece = data.draw(st.integers(1, 50))
    got = summary(feed_pieces(FastCGIConnection(), wire, piece))
    assert got == [("ready", 5, (pairs, True)), *([("stdin", 5, body)] if body else []), ("StdinEnd", 5, None)]


# -- a real client ---------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("cgi-fcgi") is None, reason="cgi-fcgi (Debian libfcgi-bin) is not installed")
def test_cgi_fcgi_request_captured_over_loopback() -> None:
    """libfcgi's cgi-fcgi runs as a CGI program: it sends its environment as PARAMS and its stdin as STDIN to
    the FastCGI server named by -connect, then prints the STDOUT it gets back. The server side here is this
    module behind a plain socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[Event] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            sock, _ = listener.accept()
            with sock:
                sock.settimeout(10)
                conn = FastCGIConnection()
                while not any(isinstance(event, StdinEnd) for event in seen):
                    data = sock.recv(65536)
                    assert data, "cgi-fcgi closed before the end of STDIN"
                    seen.extend(conn.receive_data(data))
                ready = seen[0]
                assert isinstance(ready, RequestReady)
                request = request_from_vars(ready.params)
                body = b"".join(event.data for event in seen if isinstance(event, StdinData))
                answer = b"%s %s %s" % (request.method.encode(), request.raw_path, body)
                sock.sendall(stdout(ready.request_id, response_head(201, b"content-type: text/plain\r\n") + answer)
                             + conn.finish(ready.request_id))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    env = {"PATH": os.environ.get("PATH", ""), "REQUEST_METHOD": "PUT", "REQUEST_URI": "/r%20x?y=1",
           "QUERY_STRING": "y=1", "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "9", "CONTENT_TYPE": "text/plain",
           "HTTP_HOST": "example.com"}
    try:
        result = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"127.0.0.1:{port}"], input=b"some body", env=env,
                                capture_output=True, timeout=20)
    finally:
        thread.join(20)
        listener.close()
    assert not errors, errors
    assert result.stdout == b"Status: 201 Created\r\ncontent-type: text/plain\r\n\r\nPUT /r%20x some body"
    ready = seen[0]
    assert isinstance(ready, RequestReady) and ready.request_id == 1
    request = request_from_vars(ready.params)
    assert (request.method, request.raw_path, request.query_string, request.content_length) == ("PUT", b"/r%20x",
                                                                                                 b"y=1", 9)
    assert (b"host", b"example.com") in request.headers
