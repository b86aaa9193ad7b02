"""HTTP/1.1 pipelining and keep-alive under load a real client or an attacker makes (issue 12).

- Deep pipelines: thousands of requests in one write to an app that answers without suspending must all
  be answered, in order, on a stack that does not grow with the pipeline (each completion used to start
  the next request inside itself: RecursionError after ~250 ASGI or ~500 WSGI loop-mode requests, and a
  connection that hung for good).
- Abandoned pipelines: clients that write a pipeline and leave must leave no connection (fd) behind.
- A body read slowly (a thread hop per chunk, as Starlette's UploadFile does): the next request on the
  same connection must be read and answered (reading stayed paused for the finished body).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Running

Serve = Callable[..., contextlib.AbstractContextManager[Running]]

MiB = 1024 * 1024


async def counting_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers at once (never suspends) with the request's path, so order can be checked."""
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def counting_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def pipeline(n: int) -> bytes:
    return b"".join(b"GET /%d HTTP/1.1\r\nhost: t\r\n\r\n" % i for i in range(n))


def read_responses(sock: socket.socket, n: int, timeout: float = 30.0) -> list[bytes]:
    """The bodies of ``n`` Content-Length responses, in order (fails on a close or the deadline)."""
    buf = bytearray()
    bodies: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = bytes(buf[:head_end]).lower()
            assert head.startswith(b"http/1.1 200"), head[:200]
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(buf) >= head_end + 4 + length:
                bodies.append(bytes(buf[head_end + 4:head_end + 4 + length]))
                del buf[:head_end + 4 + length]
                continue
        assert time.monotonic() < deadline, f"only {len(bodies)} of {n} responses before the deadline"
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(1024 * 1024)
        assert data, f"the server closed the connection after {len(bodies)} of {n} responses"
        buf += data
    return bodies


@pytest.mark.parametrize(("app", "options"), [
    (counting_asgi, {}),
    (counting_wsgi, {"wsgi_mode": "loop"}),
    (counting_wsgi, {}),
], ids=["asgi", "wsgi-loop", "wsgi-threads"])
def test_a_deep_pipeline_in_one_write_is_answered_in_order(serve: Serve, app: Any, options: dict[str, Any]) -> None:
    n = 2000
    with serve(app, **options) as srv, socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(pipeline(n))
        bodies = read_responses(sock, n)
        assert bodies == [b"/%d" % i for i in range(n)]
        sock.sendall(b"GET /after HTTP/1.1\r\nhost: t\r\n\r\n")  # the connection is still healthy
        assert read_responses(sock, 1) == [b"/after"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("app", "options"), [(counting_asgi, {}), (counting_wsgi, {"wsgi_mode": "loop"})],
                         ids=["asgi", "wsgi-loop"])
def test_abandoned_pipelines_leave_no_connection_behind(serve: Serve, app: Any, options: dict[str, Any]) -> None:
    with serve(app, **options) as srv:
        with socket.create_connection((srv.host, srv.port)) as warm:  # the server's own fds settle first
            warm.sendall(pipeline(2))
            read_responses(warm, 2)
        before = open_fds()
        for _ in range(20):
            sock = socket.create_connection((srv.host, srv.port))
            sock.sendall(pipeline(300) * 1)  # ~10 KB, never read
            sock.close()
        deadline = time.monotonic() + 10
        while open_fds() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds() <= before, f"{open_fds() - before} fds still open after 20 abandoned pipelines"
        with socket.create_connection((srv.host, srv.port)) as sock:  # and the server still serves
            sock.sendall(pipeline(1))
            assert read_responses(sock, 1) == [b"/0"]


async def slow_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body one message at a time with a thread hop per chunk (Starlette UploadFile's way)."""
    if scope["type"] != "http":
        return
    total = 0
    more = True
    while more:
        message = await receive()
        total += len(message.get("body", b""))
        more = message.get("more_body", False)
        await asyncio.to_thread(lambda: None)
    body = b"%d" % total
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def connection(srv: Running) -> Iterator[socket.socket]:
    with socket.create_connection((srv.host, srv.port)) as sock:
        yield sock


def test_the_next_request_after_a_slowly_read_body_is_answered(serve: Serve) -> None:
    """50 rounds of a 5 MiB upload read slowly, then a GET on the same connection: none lost."""
    upload = b"x" * (5 * MiB)
    with serve(slow_reader, timeout_keep_alive=30) as srv, connection(srv) as sock:
        for _ in range(50):
            sock.sendall(b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(upload))
            sock.sendall(upload)
            assert read_responses(sock, 1, timeout=20) == [b"%d" % len(upload)]
            sock.sendall(b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n")
            assert read_responses(sock, 1, timeout=5) == [b"0"]


async def ignores_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.05)  # the whole body arrives (and fills the buffer) meanwhile
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_next_request_after_a_body_the_app_never_read_is_answered(serve: Serve) -> None:
    """A body that arrived whole but over the buffer's high-water mark (so reading paused) and that the
    app never read: dropped with the response, and reading resumes for the next request."""
    upload = b"x" * (256 * 1024 + 1)  # over the high-water mark (BODY_HIGH_WATER) with its last byte
    with serve(ignores_body) as srv, connection(srv) as sock:
        for _ in range(5):
            sock.sendall(b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(upload) + upload)
            assert read_responses(sock, 1) == [b"ok"]
            sock.sendall(b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n")
            assert read_responses(sock, 1, timeout=5) == [b"ok"]


# -- bursts of small requests against the head size limit (issue 12) ---------------------------------
def padded_pipeline(n: int) -> bytes:
    """``n`` small GETs of ~71 bytes: 2000 of them are ~142 KB, well over --limit-request-header-size."""
    return b"".join(b"GET /%d HTTP/1.1\r\nhost: t\r\nx-pad: %s\r\n\r\n" % (i, b"p" * 32) for i in range(n))


def statuses_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[list[int], bool]:
    """Status codes of every response until the server closes (True) or the deadline (False)."""
    sock.settimeout(timeout)
    out = b""
    closed = False
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while time.monotonic() < deadline:
            data = sock.recv(1024 * 1024)
            if not data:
                closed = True
                break
            out += data
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)], closed


@pytest.mark.parametrize(("app", "options"), [(counting_asgi, {}), (counting_wsgi, {})], ids=["asgi", "wsgi"])
def test_a_burst_of_small_requests_larger_than_the_head_limit_is_all_answered(serve: Serve, app: Any,
                                                                              options: dict[str, Any]) -> None:
    """Each read of the burst ends inside a request; that head used to be charged the whole read (64 KiB or
    more of complete requests before it) and refused with 431 halfway through the burst."""
    n = 2000
    burst = padded_pipeline(n)
    assert 128_000 < len(burst) < 160_000
    with serve(app, **options) as srv, socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(burst)
        assert read_responses(sock, n) == [b"/%d" % i for i in range(n)]
        sock.sendall(b"GET /after HTTP/1.1\r\nhost: t\r\n\r\n")
        assert read_responses(sock, 1) == [b"/after"]


def test_an_oversized_head_arriving_in_pieces_after_a_burst_still_gets_431(serve: Serve) -> None:
    with serve(counting_asgi) as srv, socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(padded_pipeline(500) + b"GET /big HTTP/1.1\r\nhost: t\r\n")
        with contextlib.suppress(OSError):  # it may refuse before the end
            for i in range(12):  # 96 KB of header lines, never finishing the head
                sock.sendall(b"x-h%d: %s\r\n" % (i, b"v" * 8000))
                time.sleep(0.01)
        codes, closed = statuses_until_closed(sock)
    assert codes == [200] * 500 + [431] and closed


def test_an_oversized_head_in_the_same_write_as_a_burst_gets_431(serve: Serve) -> None:
    """Complete within one read behind other requests: only the first head of a read used to be measured."""
    big = b"GET /big HTTP/1.1\r\nhost: t\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 7000) for i in range(10))
    with serve(counting_asgi) as srv, socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(padded_pipeline(20) + big + b"\r\n")
        codes, closed = statuses_until_closed(sock)
    assert codes == [200] * 20 + [431] and closed


def test_one_read_opening_a_head_with_an_oversized_field_gets_431_at_once(serve: Serve) -> None:
    """A head whose first read already holds more than the limit is refused then, not at the head deadline:
    the field in progress (buffered by the parser) counts, not only the fields already complete."""
    with serve(counting_asgi, timeout_request_head=10.0) as srv, socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(padded_pipeline(3) + b"GET /big HTTP/1.1\r\nhost: t\r\nx-big: " + b"v" * 70_000)
        codes, closed = statuses_until_closed(sock, timeout=3.0)
    assert codes == [200] * 3 + [431] and closed
