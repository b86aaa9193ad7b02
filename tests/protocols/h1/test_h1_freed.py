"""A closed HTTP/1.1 connection is freed by reference counting, without the cyclic garbage collector.

Every new connection used to leave a reference cycle (the connection and its last exchange, the parser's
bound callbacks, the outbox's stored ``self.flush``), so each one waited for the collector, whose runs cost
~22k instructions per connection on the ``Connection: close`` path (benchmarks/callgrind.py ``h1close``).
With the collector disabled, these tests count the connections, exchanges and parsers still alive after
many closed connections: a cycle anywhere keeps every one of them.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httptools

from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h1.exchange import H1Exchange

CONNECTIONS = 30
App = Callable[..., Any]


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def alive() -> dict[str, int]:
    counts = {"connections": 0, "exchanges": 0, "parsers": 0}
    for obj in gc.get_objects():
        kind = type(obj)
        if kind is H1Connection:
            counts["connections"] += 1
        elif kind is H1Exchange:
            counts["exchanges"] += 1
        elif kind is httptools.HttpRequestParser:
            counts["parsers"] += 1
    return counts


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def talk(port: int, raw: bytes, *, close_first: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        if close_first:
            return b""
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def settle(before: dict[str, int]) -> dict[str, int]:
    """What is alive beyond ``before`` once the server has seen the last close (bounded wait)."""
    deadline = time.monotonic() + 3
    while True:
        now = alive()
        extra = {k: now[k] - before[k] for k in now}
        if all(v <= 1 for v in extra.values()) or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


def run(serve: Any, app: App, raw: bytes, **kwargs: Any) -> dict[str, int]:
    with serve(app, interface="asgi3") as srv:
        talk(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # warm
        time.sleep(0.1)
        with collector_off():
            before = alive()
            for _ in range(CONNECTIONS):
                talk(srv.port, raw, **kwargs)
            return settle(before)


def test_connection_close_requests_leave_nothing_for_the_collector(serve: Any) -> None:
    extra = run(serve, hello, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert all(v <= 1 for v in extra.values()), extra  # 30 of each before


def test_keep_alive_connections_the_client_closes_are_freed(serve: Any) -> None:
    # the client closes after its answer: connection_lost on an idle keep-alive connection
    def ask(port: int, raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(raw)
            data = b""
            while not data.endswith(b"hello"):
                data += sock.recv(65536)
            return data

    with serve(hello, interface="asgi3") as srv, collector_off():
        before = alive()
        for _ in range(CONNECTIONS):
            ask(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        extra = settle(before)
    assert all(v <= 1 for v in extra.values()), extra


def test_bad_requests_and_clients_gone_mid_request_are_freed(serve: Any) -> None:
    extra = run(serve, hello, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")  # 400, closed by the server
    assert all(v <= 1 for v in extra.values()), extra
    extra = run(serve, hello, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", close_first=True)
    assert all(v <= 1 for v in extra.values()), extra
