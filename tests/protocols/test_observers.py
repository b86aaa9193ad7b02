"""Request observers (ServerContext.request_started/request_finished): once each per exchange, every wire.

A recording observer is registered on a real server's context; each test checks that every exchange it
saw started once, with a start_time, and finished exactly once after it, whatever the ending.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from conftest import serve_in_thread
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.exchange import Exchange
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.connection import H2Connection


class Recorder:
    """Records (event, exchange, status, dropped); fails the test on a finish without a start or a second one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Exchange, int, bool]] = []
        self.errors: list[str] = []
        self.open: set[int] = set()
        self.done: set[int] = set()
        self.lock = threading.Lock()

    def request_started(self, ex: Exchange) -> None:
        with self.lock:
            if id(ex) in self.open or id(ex) in self.done:
                self.errors.append(f"started twice: {ex.raw_path!r}")
            if not ex.start_time:
                self.errors.append(f"no start_time: {ex.raw_path!r}")
            self.open.add(id(ex))
            self.events.append(("started", ex, 0, False))

    def request_finished(self, ex: Exchange) -> None:
        with self.lock:
            if id(ex) not in self.open:
                self.errors.append(f"finished without a start, or twice: {ex.raw_path!r}")
            self.open.discard(id(ex))
            self.done.add(id(ex))
            self.events.append(("finished", ex, ex.status, ex.dropped))

    def finished(self, timeout: float = 5.0, count: int = 1) -> list[tuple[str, Exchange, int, bool]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                done = [e for e in self.events if e[0] == "finished"]
                if len(done) >= count and not self.open:
                    break
            time.sleep(0.01)
        time.sleep(0.05)  # a second report would come now
        assert not self.errors, self.errors
        with self.lock:
            assert not self.open, "started and never finished"
            return [e for e in self.events if e[0] == "finished"]


def observed(app: Any, **options: Any) -> Any:
    """serve_in_thread with a Recorder registered on the server's context (before any request)."""
    class Ctx:
        def __enter__(self) -> tuple[Any, Recorder]:
            self.cm = serve_in_thread(app, **options)
            srv = self.cm.__enter__()
            self.rec = Recorder()
            ctx = srv.server.ctx
            assert ctx is not None
            ctx.observe(self.rec)
            return srv, self.rec

        def __exit__(self, *exc: Any) -> None:
            self.cm.__exit__(*exc)

    return Ctx()


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/slow":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            await asyncio.sleep(0.01)
    if scope["path"] == "/wait":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_started_and_finished_once_for_answers_and_app_errors(http2: bool) -> None:
    with observed(hello) as (srv, rec), httpx.Client(http1=not http2, http2=http2) as client:
        assert client.get(srv.url + "/").status_code == 200
        assert client.get(srv.url + "/boom").status_code == 500
        done = rec.finished(count=2)
    assert [(status, dropped) for _, _, status, dropped in done] == [(200, False), (500, False)]
    assert all(ex.http_version == ("2" if http2 else "1.1") for _, ex, _, _ in done)


def test_client_gone_mid_body_finishes_once_as_dropped() -> None:
    with observed(hello) as (srv, rec):
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        done = rec.finished()
    assert [(status, dropped) for _, _, status, dropped in done] == [(200, True)]


def test_refused_over_the_concurrency_limit_is_reported() -> None:
    with observed(hello, limit_concurrency=1) as (srv, rec):
        slow = threading.Thread(target=lambda: httpx.get(srv.url + "/wait", timeout=5))
        slow.start()
        time.sleep(0.3)
        assert httpx.get(srv.url + "/").status_code == 503
        slow.join()
        done = rec.finished(count=2)
    assert sorted(status for _, _, status, _ in done) == [200, 503]


def test_websocket_handshake_is_one_exchange() -> None:
    async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close"})

    with observed(ws_app) as (srv, rec):
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        done = rec.finished()
    assert [(status, dropped) for _, _, status, dropped in done] == [(101, False)]


def test_http2_refusal_and_client_reset() -> None:
    """A plain CONNECT is refused (405) without an app: started and finished; a stream the client resets
    before its response finishes once as dropped."""
    loop = asyncio.new_event_loop()
    try:
        served: list[Exchange] = []
        ctx = ServerContext(Config(app="x:y", access_log=False), loop, served.append, access_log=False)
        rec = Recorder()
        ctx.observe(rec)
        conn = H2Connection(ctx)
        conn.connection_made(FakeTransport())
        import hpack

        enc = hpack.Encoder()
        connect = enc.encode([(":method", "CONNECT"), (":authority", "x:443")])
        get = enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")])
        ends = fr.END_HEADERS | fr.END_STREAM
        conn.data_received(fr.PREFACE + fr.settings({}) + fr.frame(fr.HEADERS, ends, 1, connect)
                           + fr.frame(fr.HEADERS, ends, 3, get))
        assert len(served) == 1 and ctx.in_flight == 1
        conn.data_received(fr.rst_stream(3, fr.CANCEL))
        assert ctx.in_flight == 0
        done = [e for e in rec.events if e[0] == "finished"]
        assert [(status, dropped) for _, _, status, dropped in done] == [(405, False), (0, True)]
        assert not rec.errors and not rec.open
        served[0].send_simple(200, b"late")  # the app answers after the reset: nothing more is reported
        assert len([e for e in rec.events if e[0] == "finished"]) == 2
    finally:
        loop.close()
