"""bascule's FastCGI listener on raw records (issue 14), in a real bascule process: what nginx never does.

fastcgi_wire's encoders build the bytes: FCGI_GET_VALUES, two requests multiplexed on one connection, a body
streamed both ways without a length, an app that raises after its complete response (only its own request
ends), ABORT_REQUEST reaching the app as ``http.disconnect``, the close after a response without KEEP_CONN,
and FCGI_OVERLOADED at --limit-concurrency. test_it_fastcgi_scgi.py has the same listener behind nginx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from fcgi_support import begin, cgi_vars, fcgi_connection, request, split_cgi
from it_support import wait_for
from nginx_support import bascule

from bascule.protocols.fastcgi_wire import (
    ABORT_REQUEST,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    OVERLOADED,
    PARAMS,
    REQUEST_COMPLETE,
    STDIN,
    STDOUT,
    encode_pairs,
    parse_pairs,
    record,
)


@pytest.fixture(scope="module")
def raw_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """bascule serving it_fastcgi_raw's ASGI app on a FastCGI listener: (port, a directory for marks)."""
    tmp = tmp_path_factory.mktemp("fcgi-raw")
    port = free_port()
    with bascule(tmp / "bascule.log", "it_fastcgi_raw:app", [f"fastcgi://127.0.0.1:{port}"]):
        yield port, tmp


def test_get_values(raw_app: tuple[int, Path]) -> None:
    """FCGI_GET_VALUES (request id 0) is answered with GET_VALUES_RESULT: multiplexing supported, limits set;
    the connection then serves a request."""
    port, _ = raw_app
    asked = [(b"FCGI_MAX_CONNS", b""), (b"FCGI_MAX_REQS", b""), (b"FCGI_MPXS_CONNS", b"")]
    with fcgi_connection(port) as (sock, records):
        sock.sendall(record(GET_VALUES, 0, encode_pairs(asked)))
        got = records.next()
        assert got is not None and got[:2] == (GET_VALUES_RESULT, 0), got
        values = dict(parse_pairs(got[2]))
        assert values[b"FCGI_MPXS_CONNS"] == b"1", values
        for name in (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS"):
            assert values[name].isdigit() and int(values[name]) > 0, values
        sock.sendall(request(1, cgi_vars("GET", "/after")))
        out, ends, _ = records.responses({1})
    assert ends == {1: (0, REQUEST_COMPLETE)}
    head, body = split_cgi(out[1])
    assert head.startswith(b"Status: 200 OK\r\n") and body == b"ok GET /after"


def test_multiplexed_requests(raw_app: tuple[int, Path]) -> None:
    """Two requests on one connection (ids 1 and 2), their records interleaved: a slow one and a fast one. Each
    gets its own STDOUT stream; the fast one ends first, the slow one's first piece arrives before that (the
    response streams); the connection (KEEP_CONN) then carries id 1 again."""
    port, _ = raw_app
    slow = cgi_vars("GET", "/slow?ms=800&tag=one")
    fast = cgi_vars("GET", "/slow?ms=50&tag=two")
    slow_params, fast_params = encode_pairs(slow), encode_pairs(fast)
    with fcgi_connection(port) as (sock, records):
        sock.sendall(begin(1) + begin(2)
                     + record(PARAMS, 1, slow_params[:7]) + record(PARAMS, 2, fast_params[:30])
                     + record(PARAMS, 1, slow_params[7:]) + record(PARAMS, 2, fast_params[30:])
                     + record(PARAMS, 2) + record(PARAMS, 1) + record(STDIN, 1) + record(STDIN, 2))
        out, ends, order = records.responses({1, 2})
        assert ends == {1: (0, REQUEST_COMPLETE), 2: (0, REQUEST_COMPLETE)}
        assert split_cgi(out[1])[1] == b"one:first;one:last;" and split_cgi(out[2])[1] == b"two:first;two:last;"
        assert split_cgi(out[1])[0].startswith(b"Status: 200 OK\r\n")
        assert order.index((END_REQUEST, 2)) < order.index((END_REQUEST, 1)), order
        assert order.index((STDOUT, 1)) < order.index((END_REQUEST, 2)), order  # streamed, not held back
        sock.sendall(request(1, cgi_vars("GET", "/again")))
        again, ends, _ = records.responses({1})
    assert ends == {1: (0, REQUEST_COMPLETE)} and split_cgi(again[1])[1] == b"ok GET /again"


def test_streaming_both_ways(raw_app: tuple[int, Path]) -> None:
    """A body without CONTENT_LENGTH reaches the app piece by piece as STDIN records arrive, and the app's answer
    to each piece comes back before the next is sent; STDIN's empty record ends the body."""
    port, _ = raw_app
    with fcgi_connection(port) as (sock, records):
        pairs = cgi_vars("POST", "/echo-body", None)
        sock.sendall(begin(1) + record(PARAMS, 1, encode_pairs(pairs)) + record(PARAMS, 1))
        received = b""
        for piece in (b"first piece;", b"second;", b"x" * 70000):
            sock.sendall(record(STDIN, 1, piece[:65535]) + (record(STDIN, 1, piece[65535:]) if len(piece) > 65535
                                                             else b""))
            while not received.endswith(piece):  # bounded by the socket's timeout
                got = records.next()
                assert got is not None and got[:2] == (STDOUT, 1), got
                received += got[2]
        sock.sendall(record(STDIN, 1))
        out, ends, _ = records.responses({1})
    assert ends == {1: (0, REQUEST_COMPLETE)}
    head, body = split_cgi(received + out[1])
    assert head.startswith(b"Status: 200 OK\r\n") and body == b"first piece;second;" + b"x" * 70000


def test_app_error_after_its_response(raw_app: tuple[int, Path]) -> None:
    """An app that raises after its response is complete (Starlette's error middleware re-raises after its 500)
    ends only its own request: the other request on the connection completes, and the connection (KEEP_CONN)
    stays open - nginx has already put it back in its keepalive pool."""
    port, _ = raw_app
    with fcgi_connection(port) as (sock, records):
        sock.sendall(request(1, cgi_vars("GET", "/slow?ms=500&tag=one")) + request(2, cgi_vars("GET", "/raise-after")))
        out, ends, _ = records.responses({1, 2})
        assert ends == {1: (0, REQUEST_COMPLETE), 2: (0, REQUEST_COMPLETE)}, (ends, out)
        assert split_cgi(out[1])[1] == b"one:first;one:last;" and split_cgi(out[2])[1] == b"done"
        sock.sendall(request(2, cgi_vars("GET", "/then")))
        out, ends, _ = records.responses({2})
    assert ends == {2: (0, REQUEST_COMPLETE)} and split_cgi(out[2])[1] == b"ok GET /then"


def test_abort_request(raw_app: tuple[int, Path]) -> None:
    """ABORT_REQUEST while the app waits: the app sees http.disconnect (or its run is cancelled), END_REQUEST
    comes back, and the connection (KEEP_CONN) serves the next request."""
    port, tmp = raw_app
    mark = tmp / "abort.mark"
    with fcgi_connection(port) as (sock, records):
        sock.sendall(request(1, cgi_vars("GET", f"/wait?mark={mark}")))
        assert wait_for(lambda: mark.exists() and mark.read_text() == "waiting", 5), "the app did not start"
        time.sleep(0.1)
        assert mark.read_text() == "waiting"
        sock.sendall(record(ABORT_REQUEST, 1))
        _, ends, _ = records.responses({1})
        assert ends[1][1] == REQUEST_COMPLETE, ends
        assert wait_for(lambda: mark.read_text() in ("disconnect", "cancelled"), 5), mark.read_text()
        sock.sendall(request(1, cgi_vars("GET", "/next")))
        out, ends, _ = records.responses({1})
    assert ends == {1: (0, REQUEST_COMPLETE)} and split_cgi(out[1])[1] == b"ok GET /next"


def test_close_without_keep_conn(raw_app: tuple[int, Path]) -> None:
    """A request without FCGI_KEEP_CONN: after END_REQUEST bascule closes the connection."""
    port, _ = raw_app
    with fcgi_connection(port, timeout=5) as (sock, records):
        sock.sendall(request(1, cgi_vars("POST", "/x", b"body"), b"body", keep=False))
        out, ends, _ = records.responses({1})
        assert ends == {1: (0, REQUEST_COMPLETE)} and split_cgi(out[1])[1] == b"ok POST /x"
        assert records.next() is None  # closed, within the socket's timeout


def test_overloaded_at_limit_concurrency(tmp_path: Path) -> None:
    """--limit-concurrency 1: while one request runs, a second one (another connection) is refused on the wire
    with END_REQUEST protocol status FCGI_OVERLOADED, at once; the first completes."""
    port = free_port()
    with bascule(tmp_path / "bascule.log", "it_fastcgi_raw:app", [f"fastcgi://127.0.0.1:{port}"],
                 "--limit-concurrency", "1"), \
            fcgi_connection(port) as (first, first_records), fcgi_connection(port) as (second, second_records):
        first.sendall(request(1, cgi_vars("GET", "/hold?ms=1500")))
        time.sleep(0.3)
        started = time.monotonic()
        second.sendall(request(1, cgi_vars("GET", "/")))
        out, ends, _ = second_records.responses({1})
        assert ends == {1: (0, OVERLOADED)}, (ends, out)
        assert time.monotonic() - started < 1.0
        out, ends, _ = first_records.responses({1})
        assert ends == {1: (0, REQUEST_COMPLETE)} and split_cgi(out[1])[1] == b"held"
