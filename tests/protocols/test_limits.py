"""Limits, timeouts and output safety of HTTP/1.1 connections (issue 6), over real sockets.

Covers --limit-request-body (413, declared or while a chunked body streams, for ASGI and WSGI),
--limit-requests-per-connection, --limit-connections, the head / body-idle / app deadlines driven by the
server's tick, response headers and status codes an app must not send, and access-log escaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import pytest
from conftest import Running, serve_in_thread

from bascule.accesslog import escape, format_access

Serve = Callable[..., contextlib.AbstractContextManager[Running]]
Scope = MutableMapping[str, Any]
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
HOST = b"Host: t\r\n"


def read_all(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the server closes (True) or the timeout passes (False)."""
    sock.settimeout(timeout)
    out = b""
    end = time.monotonic() + timeout
    with contextlib.suppress(ConnectionResetError):
        while time.monotonic() < end:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return out, False
            if not data:
                return out, True
            out += data
        return out, False
    return out, True


def statuses(raw: bytes) -> list[int]:
    return [int(s) for s in _STATUS.findall(raw)]


class BodyApp:
    """ASGI: reads the whole body, answers its length; records what receive() returned last."""

    def __init__(self) -> None:
        self.calls = 0
        self.last: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        total = 0
        while True:
            message = await receive()
            self.last.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(total).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class WSGIBodyApp:
    def __init__(self) -> None:
        self.calls = 0
        self.errors: list[BaseException] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        try:
            data = environ["wsgi.input"].read()
        except Exception as exc:
            self.errors.append(exc)
            raise
        start_response("200 OK", [("Content-Length", str(len(str(len(data)))))])
        return [str(len(data)).encode()]


# -- body limit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_declared_body_over_the_limit_gets_413_and_the_app_never_runs(serve: Serve, kind: str) -> None:
    app: Any = BodyApp() if kind == "asgi" else WSGIBodyApp()
    with serve(app, limit_request_body=1000) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1001\r\n\r\n" + b"x" * 1001)
        out, closed = read_all(sock)
    assert statuses(out) == [413] and closed
    assert app.calls == 0


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_body_at_the_limit_is_accepted(serve: Serve, kind: str) -> None:
    app: Any = BodyApp() if kind == "asgi" else WSGIBodyApp()
    with serve(app, limit_request_body=1000) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                     b"1f4\r\n" + b"x" * 500 + b"\r\n1f4\r\n" + b"y" * 500 + b"\r\n0\r\n\r\n")
        sock.settimeout(5)
        out = sock.recv(65536)
    assert statuses(out) == [200] and out.endswith(b"1000")


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_chunked_body_growing_past_the_limit_is_cut_with_413(serve: Serve, kind: str) -> None:
    app: Any = BodyApp() if kind == "asgi" else WSGIBodyApp()
    with serve(app, limit_request_body=1000) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                     b"258\r\n" + b"x" * 600 + b"\r\n")
        time.sleep(0.3)  # the app is running and waiting for more
        with contextlib.suppress(OSError):
            sock.sendall(b"258\r\n" + b"y" * 600 + b"\r\n")
        out, closed = read_all(sock)
    assert statuses(out) == [413] and closed
    assert app.calls == 1
    if kind == "asgi":
        assert app.last[-1] == "http.disconnect"
    else:
        assert app.errors and isinstance(app.errors[0], OSError)


@pytest.mark.parametrize(("kind", "chunked"), [("asgi", False), ("wsgi", False), ("asgi", True), ("wsgi", True)])
def test_413_names_limit_request_body_in_its_text_and_log_line(serve: Serve, kind: str, chunked: bool,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The operator reading the log, and the client reading the answer, learn which option to raise."""
    caplog.set_level(logging.INFO, logger="bascule.error")
    app: Any = BodyApp() if kind == "asgi" else WSGIBodyApp()
    if chunked:  # in one write: refused before the app runs
        request = b"Transfer-Encoding: chunked\r\n\r\n7d1\r\n" + b"x" * 2001 + b"\r\n0\r\n\r\n"
        reason = "request body is over --limit-request-body (1000 bytes)"
    else:
        request = b"Content-Length: 2001\r\n\r\n" + b"x" * 2001
        reason = "request body of 2001 bytes is over --limit-request-body (1000 bytes)"
    with serve(app, limit_request_body=1000) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + request)
        out, closed = read_all(sock)
    assert statuses(out) == [413] and closed and app.calls == 0
    assert out.endswith(b"\r\n\r\nRequest Entity Too Large: " + reason.encode() + b"\n")
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("rejected a request from 127.0.0.1:"), lines
    assert lines[0].endswith(f": {reason} (413)")


def test_413_reaches_a_client_that_keeps_uploading(serve: Serve) -> None:
    """The refusal is followed by a lingering close: the unread upload must not turn into a RST."""
    app = BodyApp()
    with serve(app, limit_request_body=1000) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 8000000\r\n\r\n")
        sent = 0
        with contextlib.suppress(OSError):
            sock.settimeout(2)
            while sent < 4_000_000:
                sent += sock.send(b"x" * 65536)
        out, _ = read_all(sock, timeout=3)
    assert statuses(out) == [413] and app.calls == 0


def test_chunked_body_over_the_limit_in_one_piece_never_reaches_the_app(serve: Serve) -> None:
    app = BodyApp()
    with serve(app, limit_request_body=100) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                     b"c8\r\n" + b"x" * 200 + b"\r\n0\r\n\r\n")
        out, closed = read_all(sock)
    assert statuses(out) == [413] and closed and app.calls == 0


# -- header field size (issue 12) -------------------------------------------------------------------
def field_of(size: int) -> bytes:
    """A header line whose name, ": " and value take exactly ``size`` bytes (gunicorn's count)."""
    return b"X-Big: " + b"v" * (size - len(b"X-Big: ")) + b"\r\n"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_field_at_limit_request_field_size_is_accepted(serve: Serve, kind: str) -> None:
    app: Any = BodyApp() if kind == "asgi" else WSGIBodyApp()
    with serve(app) as srv, srv.connect() as sock:  # the default, 8190 like gunicorn's
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + field_of(8190) + b"Connection: close\r\n\r\n")
        out, closed = read_all(sock)
    assert statuses(out) == [200] and closed and app.calls == 1


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_field_over_limit_request_field_size_gets_431(serve: Serve, kind: str) -> None:
    app: Any = BodyApp() if kind == "asgi" else WSGIBodyApp()
    with serve(app) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + field_of(8191) + b"\r\n")
        out, closed = read_all(sock)
    assert statuses(out) == [431] and closed and app.calls == 0
    assert b"--limit-request-field-size" in out


def test_a_long_field_behind_a_pipelined_request_in_the_same_write_gets_431(serve: Serve) -> None:
    """Only the first head of a long read used to be measured: the second one's field went through."""
    app = BodyApp()
    with serve(app) as srv, srv.connect() as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2 HTTP/1.1\r\n" + HOST + field_of(9000) + b"\r\n")
        out, closed = read_all(sock)
    assert statuses(out) == [200, 431] and closed and app.calls == 1


def test_limit_request_field_size_is_configurable_and_counts_trailers_too(serve: Serve) -> None:
    app = BodyApp()
    with serve(app, limit_request_field_size=100) as srv:
        with srv.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + field_of(100) + b"Connection: close\r\n\r\n")
            assert statuses(read_all(sock)[0]) == [200]
        with srv.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + field_of(101) + b"\r\n")
            out, closed = read_all(sock)
            assert statuses(out) == [431] and closed
        with srv.connect() as sock:
            sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                         b"0\r\n" + field_of(101) + b"\r\n")
            out, closed = read_all(sock)
            assert statuses(out) == [431] and closed
    assert app.calls == 1  # the first request only: the others were refused within the write that brought them


# -- per-connection and per-worker limits ----------------------------------------------------------
def test_connection_closes_after_limit_requests_per_connection(serve: Serve) -> None:
    with serve(BodyApp(), limit_requests_per_connection=2) as srv, srv.connect() as sock:
        sock.sendall((b"GET / HTTP/1.1\r\n" + HOST + b"\r\n") * 3)
        out, closed = read_all(sock)
    assert statuses(out) == [200, 200] and closed
    assert out.count(b"connection: close") == 1


def test_connections_over_limit_connections_get_503(serve: Serve) -> None:
    with serve(BodyApp(), limit_connections=2) as srv:
        first, second = srv.connect(), srv.connect()
        try:
            time.sleep(0.2)
            with srv.connect() as third:
                out, closed = read_all(third)
            assert statuses(out) == [503] and closed
            first.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
            assert statuses(first.recv(65536)) == [200]
        finally:
            first.close()
            second.close()
        time.sleep(0.2)
        with srv.connect() as again:  # a slot is free again
            again.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
            again.settimeout(5)
            assert statuses(again.recv(65536)) == [200]


# -- deadlines -----------------------------------------------------------------------------------
def test_incomplete_head_is_closed_at_the_head_deadline(serve: Serve) -> None:
    app = BodyApp()
    with serve(app, timeout_request_head=1.0, timeout_keep_alive=30.0) as srv, srv.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        out, closed = read_all(sock, timeout=5)
        elapsed = time.monotonic() - start
    assert statuses(out) == [408] and closed
    assert 0.9 < elapsed < 2.5
    assert app.calls == 0


def test_trickling_head_is_closed_although_bytes_keep_coming(serve: Serve) -> None:
    with serve(BodyApp(), timeout_request_head=1.0) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        closed = False
        for i in range(30):
            time.sleep(0.2)
            try:
                sock.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                closed = True
                break
            if time.monotonic() - start > 4:
                break
        out, eof = read_all(sock, timeout=3)
    assert closed or eof
    assert statuses(out) == [408]
    assert time.monotonic() - start < 5


def test_body_idle_deadline(serve: Serve) -> None:
    app = BodyApp()
    with serve(app, timeout_body_idle=1.0) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nabc")
        out, closed = read_all(sock, timeout=5)
    assert statuses(out) == [408] and closed
    assert app.last[-1] == "http.disconnect"


def test_asgi_app_over_timeout_request_gets_504_and_is_cancelled(serve: Serve,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cancelled = threading.Event()

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with serve(slow, timeout_request=1.0) as srv, srv.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        out, closed = read_all(sock, timeout=5)
        assert statuses(out) == [504] and closed
        assert time.monotonic() - start < 2.5
        assert cancelled.wait(2)
    assert any("timeout_request" in r.getMessage() for r in caplog.records)


def test_asgi_app_over_timeout_request_after_starting_is_closed(serve: Serve) -> None:
    async def stalls(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(30)

    with serve(stalls, timeout_request=1.0) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        out, closed = read_all(sock, timeout=5)
    assert statuses(out) == [200] and b"partial" in out and closed
    assert not out.endswith(b"0\r\n\r\n")  # never completed: the client sees a truncated response


def test_wsgi_app_over_timeout_request_gets_504_and_its_result_is_dropped(serve: Serve) -> None:
    done = threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        time.sleep(2.0)
        start_response("200 OK", [("Content-Length", "4")])
        done.set()
        return [b"late"]

    with serve(slow, timeout_request=1.0) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        out, closed = read_all(sock, timeout=5)
        assert statuses(out) == [504] and closed and b"late" not in out
        assert done.wait(3)


# -- output safety -------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [
    (b"x-a", b"b\r\nset-cookie: evil=1"), (b"x-a", b"b\nx: y"), (b"x-a", b"b\rx"), (b"x-a", b"b\x00"),
    (b"x-a\r\nx-b", b"c"),
])
def test_asgi_header_that_could_split_the_response_is_a_500(serve: Serve, header: tuple[bytes, bytes]) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
        await send({"type": "http.response.body", "body": b"no"})

    with serve(app) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
        out, _ = read_all(sock, timeout=3)
    assert statuses(out) == [500]
    assert b"evil" not in out and b"\nx: y" not in out


@pytest.mark.parametrize("header", [("X-A", "b\r\nSet-Cookie: evil=1"), ("X-A", "\u20ac"), ("X-\u00e9", "b"),
                                    ("X-A", "b\x00")])
def test_wsgi_header_with_crlf_nul_or_non_latin1_is_a_500(serve: Serve, header: tuple[str, str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [header])
        return [b"no"]

    with serve(app) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
        out, _ = read_all(sock, timeout=3)
    assert statuses(out) == [500]
    assert b"evil" not in out


@pytest.mark.parametrize("status", [0, 99, 1000, -200, 65536])
def test_status_outside_100_999_is_a_500(serve: Serve, status: int) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
        out, _ = read_all(sock, timeout=3)
    assert statuses(out) == [500]


def test_escape_keeps_one_request_one_plain_line() -> None:
    nasty = b'/a\r\n127.0.0.1 - "GET /forged HTTP/1.1" 200\x1b[31mred\x1b[0m\\"\x85\xe2\x80\xa8'
    text = escape(nasty)
    assert "\r" not in text and "\n" not in text and "\x1b" not in text and "\x85" not in text
    assert text.isascii() and text.isprintable()
    assert '"' not in text.replace('\\x22', '')


class _Ex:
    method = "GET"
    raw_path = b"/x\x1b[2J"
    query_string = b"a=\r\nb"
    http_version = "1.1"
    status = 200
    client = ("127.0.0.1", 5)
    proxied = False
    peer = None
    headers = [(b"user-agent", b'evil"\n\x1b[31m'), (b"referer", b"\xe2\x80\xa8x")]


def test_access_log_line_cannot_be_forged_or_coloured() -> None:
    line = format_access("{client} {request_line} {status} {user_agent} {referer} {query}", _Ex(),
                         0, 0.0)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.isprintable()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_access_log_escapes_obs_text_from_a_real_request() -> None:
    logger = logging.getLogger("bascule.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with serve_in_thread(BodyApp(), access_log=True,
                             access_log_format="{request_line} {user_agent}") as srv, srv.connect() as sock:
            sock.sendall(b"GET /p%0d%0a HTTP/1.1\r\n" + HOST + b"User-Agent: a\x85b\xe2\x80\xa8c\"d\r\n"
                         b"Connection: close\r\n\r\n")
            read_all(sock)
            time.sleep(0.1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.lines and all(line.isascii() and line.isprintable() for line in handler.lines)
    assert "\\x85" in handler.lines[0]


# -- slow clients --------------------------------------------------------------------------------
@contextlib.contextmanager
def tricklers(srv: Running, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((srv.host, srv.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_slow_clients_do_not_starve_new_ones_and_are_closed_at_the_head_deadline(serve: Serve) -> None:
    with serve(BodyApp(), timeout_request_head=2.0) as srv, tricklers(srv, 200) as socks:
        start = time.monotonic()
        for i in range(3):  # keep trickling: each line is progress, but the head deadline still holds
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-%d: y\r\n" % i)
            t0 = time.monotonic()
            with srv.connect() as fresh:
                fresh.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
                out, _ = read_all(fresh, timeout=2)
            assert statuses(out) == [200]
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.3)
        open_ = 0
        for sock in socks:
            out, closed = read_all(sock, timeout=max(0.1, start + 4.0 - time.monotonic()))
            open_ += not closed
        assert open_ == 0


@pytest.mark.parametrize("option", [
    {"limit_request_line": 0}, {"limit_request_headers": 0}, {"limit_request_header_size": -1},
    {"limit_request_field_size": 0},
    {"limit_request_body": 0}, {"limit_requests_per_connection": 0}, {"limit_connections": 0},
    {"timeout_request_head": 0}, {"timeout_body_idle": -1.0}, {"timeout_request": 0.0},
    {"timeout_request_head": float("nan")},
])
def test_limits_and_timeouts_are_validated_loudly(option: dict[str, Any]) -> None:
    from bascule.config import Config
    from bascule.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(option))):
        Config(app="x:y", **option)


def test_limits_are_options_on_the_command_line(tmp_path: Any) -> None:
    from bascule.cli import load_config

    config = load_config(["x:y", "--limit-request-body", "10", "--timeout-request", "2.5",
                          "--limit-connections", "7", "--limit-request-field-size", "4096"],
                         environ={}, cwd=str(tmp_path))
    assert (config.limit_request_body, config.timeout_request, config.limit_connections) == (10, 2.5, 7)
    assert config.limit_request_field_size == 4096
