"""Threads mode: a WSGI pool thread writes a complete keep-alive response to the socket itself
(Exchange.send_from_thread, protocols/thread_writer.py), byte for byte what the loop would have written, and the
loop only completes it. Real server, raw sockets."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

Environ = dict[str, Any]
App = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]
_DATE = re.compile(rb"date: [^\r]*\r\n")


def _read_responses(sock: socket.socket, count: int, head_only: int = 0, timeout: float = 5.0) -> list[bytes]:
    """``count`` whole responses (Content-Length framed; the first ``head_only`` answer HEAD requests)."""
    sock.settimeout(timeout)
    data = b""
    out: list[bytes] = []
    while len(out) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            match = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
            length = 0 if match is None or len(out) < head_only else int(match.group(1))
            if len(rest) >= length:
                out.append(head + sep + rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(out)} responses: {data[:200]!r}"
        data += chunk
    return out


def _app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/declared":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/undeclared":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Many", "a"), ("X-Many", "b")])
        return [b"no length given"]
    if path == "/big":
        body = bytes(range(256)) * 100  # past the size that goes in one buffer with the head (the thread's writev)
        start_response("201 Created", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/huge":
        body = bytes(range(256)) * 200  # past THREAD_WRITE_BELOW: the loop writes it
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/custom":
        start_response("299 Whatever", [("Content-Length", "2")])  # not a status the server knows: the loop's
        return [b"ok"]
    if path == "/nocontent":
        start_response("204 No Content", [])
        return [b""]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nothing here"]


REQUESTS = [
    b"GET /declared HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /undeclared HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /custom HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /declared HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]


def _answers(srv: Any, pipelined: bool) -> list[bytes]:
    with srv.connect() as sock:
        if pipelined:
            sock.sendall(b"".join(REQUESTS))
            replies = _read_responses(sock, len(REQUESTS))
        else:
            replies = []
            for raw in REQUESTS:
                sock.sendall(raw)
                replies += _read_responses(sock, 1)
        sock.sendall(b"HEAD /declared HTTP/1.1\r\nHost: x\r\n\r\n")
        replies += _read_responses(sock, 1, head_only=1)
    return [_DATE.sub(b"", reply) for reply in replies]


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("request_id", [False, True])
def test_threads_mode_writes_what_loop_mode_writes(serve: Any, pipelined: bool, request_id: bool) -> None:
    """Every response, whether the thread wrote it or left it to the loop (custom status, 204, HEAD), is the
    same bytes as loop mode's, which always writes on the loop; in order when pipelined; --request-id's echo too."""
    options: dict[str, Any] = {"interface": "wsgi"}
    if request_id:
        options["request_id"] = "on"
    answers = {}
    for mode in ("loop", "threads"):
        with serve(_app, wsgi_mode=mode, **options) as srv:
            answers[mode] = _answers(srv, pipelined)
    if request_id:  # each id is new: compare the rest
        for mode, replies in answers.items():
            assert all(b"x-request-id: " in reply for reply in replies), mode
            answers[mode] = [re.sub(rb"x-request-id: [^\r]*\r\n", b"", reply) for reply in replies]
    assert answers["threads"] == answers["loop"]
    assert answers["threads"][0].endswith(b"content-length: 5\r\n\r\nhello")
    assert b"connection: keep-alive\r\n" in answers["threads"][8]  # HTTP/1.0 asked to keep it


def _loop_of(srv: Any) -> Any:
    loop = srv.server._loop
    assert loop is not None
    return loop


def _hold_the_loop(loop: Any, release: threading.Event) -> None:
    """From an app's thread: make the event loop sleep in a callback until ``release`` is set; it is in it on
    return."""
    loop.call_soon_threadsafe(release.wait, 10)
    time.sleep(0.1)


def _open_the_writer(sock: socket.socket) -> None:
    """A first keep-alive request and its answer: the connection's ThreadWriter is open after it."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_responses(sock, 1)[0].endswith(b"\r\n\r\nok")


@contextlib.contextmanager
def _writer_connection(serve: Any, app: Any, loop_box: list[Any]) -> Iterator[socket.socket]:
    """Serve ``app`` (WSGI), put its event loop in ``loop_box`` (for _hold_the_loop), and yield a connection
    whose ThreadWriter is open."""
    with serve(app, interface="wsgi") as srv:
        loop_box.append(_loop_of(srv))
        with srv.connect() as sock:
            _open_the_writer(sock)
            yield sock


def test_the_thread_writes_while_the_loop_is_busy(serve: Any) -> None:
    """The response reaches the client while the event loop is blocked (here, on purpose, until the client has
    it): the pool thread wrote it. Through the loop it would wait until the loop is free, and this fails."""
    release = threading.Event()
    hold: list[Any] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/hold":
            _hold_the_loop(hold[0], release)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with _writer_connection(serve, app, hold) as sock:
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = _read_responses(sock, 1, timeout=3)[0]
        finally:
            release.set()
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the loop completed it: the next one is served
        assert _read_responses(sock, 1)[0].endswith(b"\r\n\r\nok")


def test_a_long_body_is_the_loops_to_write(serve: Any) -> None:
    """A body of THREAD_WRITE_BELOW or more is written by the loop (h1/exchange.py says why): with the loop blocked
    nothing of it arrives, and all of it once the loop is free; a shorter one still arrives at once."""
    from bascule.protocols.h1.exchange import THREAD_WRITE_BELOW

    release = threading.Event()
    hold: list[Any] = []
    long_body = b"x" * THREAD_WRITE_BELOW

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = long_body if environ["PATH_INFO"] == "/long" else b"ok"
        if environ["PATH_INFO"] != "/":
            _hold_the_loop(hold[0], release)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with _writer_connection(serve, app, hold) as sock:
        sock.sendall(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert _read_responses(sock, 1, timeout=3)[0].endswith(b"\r\n\r\nok")  # the thread wrote it
        finally:
            release.set()
        release.clear()
        sock.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            sock.settimeout(1.5)  # the thread, had it written, would have by then (0.1 s after the request)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # the loop holds it
        finally:
            release.set()
        assert _read_responses(sock, 1)[0].endswith(b"\r\n\r\n" + long_body)


def test_the_keep_alive_timeout_still_closes_the_connection(serve: Any) -> None:
    """The thread's descriptor is a duplicate that keeps the socket open: the connection closes it as it ends, or
    the client would never see the end of an idle connection."""
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with serve(app, interface="wsgi", timeout_keep_alive=1) as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_responses(sock, 1)[0].endswith(b"ok")
        sock.settimeout(5)
        began = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - began < 4.5


def test_responses_past_what_the_socket_takes_go_out_whole(serve: Any) -> None:
    """The thread writes what the socket takes and the loop the rest, after it, and what follows: a client that
    reads nothing until 5.3 MiB of responses wait gets every byte, in order, and the connection goes on."""
    count = 200
    bodies = [bytes([i % 251]) * 28000 for i in range(count)]  # each under THREAD_WRITE_BELOW: the thread's

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        data = bodies[int(path[1:])] if path[1:].isdigit() else b"ok"
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    with serve(app, interface="wsgi") as srv, srv.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_responses(sock, 1)
        sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count))
                     + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # the socket is full by now (5.3 MiB: past loopback's send buffer, 4 MiB at most)
        replies = _read_responses(sock, count + 1, timeout=30)
        for reply, body in zip(replies, bodies, strict=False):
            assert reply.endswith(b"\r\n\r\n" + body)
        assert replies[-1].endswith(b"\r\n\r\nok")


def test_clients_that_reset_never_get_anyone_elses_response(serve: Any) -> None:
    """Connections reset while their app runs (their descriptors are closed and reused by new connections) never
    make a thread write a response to the wrong client: each well-behaved client reads exactly its own."""
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        time.sleep(0.002)
        token = environ["QUERY_STRING"].encode()
        start_response("200 OK", [("Content-Length", str(len(token)))])
        return [token]

    deadline = time.monotonic() + 20
    with serve(app, interface="wsgi", wsgi_threads=4) as srv:
        for round_no in range(15):
            assert time.monotonic() < deadline
            doomed = []
            for i in range(8):  # send, then reset while the app runs
                sock = srv.connect()
                sock.sendall(b"GET /?doomed-%d-%d HTTP/1.1\r\nHost: x\r\n\r\n" % (round_no, i))
                doomed.append(sock)
            good = []
            for sock in doomed:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
                fresh = srv.connect()
                good.append(fresh)
            for i, sock in enumerate(good):
                with contextlib.closing(sock):
                    token = b"good-%d-%d" % (round_no, i)
                    for _ in range(2):
                        sock.sendall(b"GET /?" + token + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                        assert _read_responses(sock, 1)[0].endswith(b"\r\n\r\n" + token)


_LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (FDS, FDS))
sys.argv = ["bascule", *sys.argv[1:]]
runpy.run_module("bascule", run_name="__main__")
"""
_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_short_of_descriptors_every_connection_is_still_served(tmp_path: Any) -> None:
    """The duplicates take only the lower half of the descriptor limit (thread_writer.FD_CEILING): with a limit of
    96 and 50 connections open at once, each served twice, accept() never runs out."""
    import subprocess
    import sys

    from conftest import free_port, wait_port

    (tmp_path / "limited_app.py").write_text(_APP)
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LIMITED.replace("FDS", "96"), "limited_app:app", "--interface", "wsgi",
             "--port", str(port), "--no-access-log", "--timeout-keep-alive", "30"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("BASCULE_")})  # CI's own: refused
    socks: list[socket.socket] = []
    try:
        try:
            wait_port("127.0.0.1", port)
        except TimeoutError:
            raise AssertionError(log.read_text()) from None
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_responses(sock, 1)[0].endswith(b"\r\n\r\nok"), log.read_text()
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_responses(sock, 1)[0].endswith(b"\r\n\r\nok"), log.read_text()
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(10)
    assert "Too many open files" not in log.read_text()


def test_a_final_1xx_status_is_written_as_the_loop_writes_it(serve: Any) -> None:
    """A WSGI app may give a 1xx as its final status: the loop writes the head alone (a 1xx has no content), so
    the thread must not write the app's body after it, which the client would read as the next response's start.
    Sequential requests on one connection (the first makes the status line known, which the thread needs)."""
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/end":
            start_response("200 OK", [("Content-Length", "3")])
            return [b"end"]
        start_response("199 Odd", [("Content-Length", "2")])
        return [b"ok"]

    streams = {}
    for mode in ("loop", "threads"):
        with serve(app, interface="wsgi", wsgi_mode=mode) as srv, srv.connect() as sock:
            sock.settimeout(5)
            data = b""
            for i in range(3):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                while data.count(b"\r\n\r\n") <= i:
                    chunk = sock.recv(65536)
                    assert chunk, data
                    data += chunk
            sock.sendall(b"GET /end HTTP/1.1\r\nHost: x\r\n\r\n")
            while not data.endswith(b"\r\n\r\nend"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            streams[mode] = _DATE.sub(b"", data)
    assert streams["threads"] == streams["loop"]
    assert b"ok" not in streams["loop"]


def test_a_file_to_a_client_that_resets_mid_way_stops_and_the_next_client_reads_only_its_own(
        serve: Any, tmp_path: Any) -> None:
    """wsgi.file_wrapper in threads mode: os.sendfile from the pool thread, piece by piece under the thread
    writer's lock. A client that stops reading and resets frees the thread (one thread here: else the next
    request would wait), and the connections after it, which may get the same descriptor number, read exactly
    their own answers."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\xab" * (16 << 20))

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](open(big, "rb"))  # closed by the server (PEP 3333 close())
        token = environ["QUERY_STRING"].encode()
        start_response("200 OK", [("Content-Length", str(len(token)))])
        return [token]

    with serve(app, interface="wsgi", wsgi_threads=1) as srv:
        for round_no in range(3):
            sock = srv.connect()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.2)  # the thread waits for room by now
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
            for i in range(3):
                with srv.connect() as fresh:
                    token = b"after-%d-%d" % (round_no, i)
                    fresh.sendall(b"GET /?" + token + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert _read_responses(fresh, 1)[0].endswith(b"\r\n\r\n" + token)
