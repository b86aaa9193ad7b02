"""A closed HTTP/2 connection is freed by reference counting (see tests/protocols/h1/test_h1_freed.py).

Its outbox stored its own bound ``flush``, a cycle that left every HTTP/2 connection's outbox to the cyclic
collector; connection_lost now detaches it.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import httpx

from bascule.protocols.h2.connection import H2Connection
from bascule.protocols.outbox import Outbox

CONNECTIONS = 15


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def alive() -> tuple[int, int]:
    objects = gc.get_objects()
    return sum(type(o) is H2Connection for o in objects), sum(type(o) is Outbox for o in objects)


def test_closed_http2_connections_leave_nothing_for_the_collector(serve: Any) -> None:
    with serve(hello, interface="asgi3") as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        gc.collect()
        gc.disable()
        try:
            before = alive()
            for _ in range(CONNECTIONS):
                with httpx.Client(http1=False, http2=True) as client:  # prior knowledge: the preface is sniffed
                    assert client.get(url).http_version == "HTTP/2"
            deadline = time.monotonic() + 3
            while True:
                now = alive()
                extra = (now[0] - before[0], now[1] - before[1])
                if max(extra) <= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            gc.enable()
    assert max(extra) <= 1, f"{extra} HTTP/2 connections and outboxes left for the collector"
