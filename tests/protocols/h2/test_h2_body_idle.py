"""--timeout-body-idle on HTTP/2, per stream, without sockets: raw frames from the ``h2`` library's client into
an H2Connection on a fake transport, a real ASGI gateway behind it, and the connection's tick called with a
made-up clock (the sweep is the tick's: no timer per stream).

A stream whose app waits for body bytes that do not come is answered 408 and reset (RST_STREAM NO_ERROR after
the 408's END_STREAM; CANCEL once a response had started); its app sees http.disconnect; a slow upload whose
gaps are each under the timeout is not cut; the other streams of the connection go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import ConfigError
from bascule.mounts import AppTable, resolve_mounts
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.connection import H2Connection

Scope = MutableMapping[str, Any]
TIMEOUT = 30.0
GET = [(":method", "POST"), (":scheme", "http"), (":authority", "a")]


class Recorder:
    """An ASGI app that reads its whole body and answers with its length; /stream-first starts its response
    before reading; /never never reads. What each path's receive() gave is kept in ``seen``."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}
        self.never = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        seen = self.seen.setdefault(path, [])
        if path == "/never":
            await self.never.wait()  # an app that has not asked for the body: not the client's stall
            return
        if path == "/stream-first":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"working", "more_body": True})
        size = 0
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if path != "/stream-first":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % size})


class Wire:
    """An H2Connection served by ``app`` on a fake transport, and the ``h2`` client talking to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: Recorder, **options: Any) -> None:
        self.loop = loop
        config = Config(app="x:y", access_log=False, **options)
        self.table = AppTable(config, resolve_mounts(config, app))
        self.ctx = ServerContext(config, loop, self.table.dispatch, access_log=False)
        self.conn = H2Connection(self.ctx, "http", None)
        self.transport = FakeTransport()
        self.inside(self.conn.connection_made, self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.now = loop.time()
        self.send()

    def inside(self, call: Any, *args: Any) -> None:
        """Call the connection from within the running loop, as uvloop does (an app's first step runs at once)."""
        async def step() -> None:
            call(*args)
        self.loop.run_until_complete(step())

    def send(self) -> None:
        self.inside(self.conn.data_received, self.client.data_to_send())
        self.run()

    def run(self) -> None:
        """Let the apps and the outbox run, then read what the server wrote."""
        for _ in range(10):
            self.loop.run_until_complete(asyncio.sleep(0))
        self.conn.outbox.flush()
        out = bytes(self.transport.out)
        self.transport.out.clear()
        if out:
            self.events += self.client.receive_data(out)
            pending = self.client.data_to_send()
            if pending:
                self.inside(self.conn.data_received, pending)

    def open(self, path: str) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, [*GET, (":path", path)], end_stream=False)
        self.send()
        return sid

    def tick(self, seconds: float) -> None:
        """``seconds`` pass, in ticks of half a second (the server's tick), on the made-up clock."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 0.5)
            self.inside(self.conn.on_tick, self.now)
            self.run()

    def of(self, sid: int, kind: type) -> list[Any]:
        return [ev for ev in self.events if isinstance(ev, kind) and ev.stream_id == sid]

    def status(self, sid: int) -> int | None:
        heads = self.of(sid, h2.events.ResponseReceived)
        return int(dict(heads[0].headers)[b":status"]) if heads else None

    def reset_code(self, sid: int) -> int | None:
        resets = self.of(sid, h2.events.StreamReset)
        return int(resets[0].error_code) if resets else None

    def body(self, sid: int) -> bytes:
        return b"".join(ev.data for ev in self.of(sid, h2.events.DataReceived))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    tasks = asyncio.all_tasks(event_loop)  # apps a failed test left waiting
    for task in tasks:
        task.cancel()

    async def settle() -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
    event_loop.run_until_complete(settle())
    event_loop.close()


def test_a_stalled_body_is_answered_408_and_reset_and_the_app_sees_a_disconnect(
        loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    wire = Wire(loop, app)
    sid = wire.open("/upload")  # HEADERS without END_STREAM, then nothing
    wire.tick(TIMEOUT - 1)
    assert wire.status(sid) is None and wire.reset_code(sid) is None, "reset before the timeout"
    wire.tick(2)
    assert wire.status(sid) == 408
    assert b"timeout_body_idle" in wire.body(sid)
    assert wire.of(sid, h2.events.StreamEnded), "the 408 ends the stream"
    assert wire.reset_code(sid) == fr.NO_ERROR  # then the upload is stopped (RFC 9113 8.1)
    assert app.seen["/upload"] == ["http.disconnect"]
    assert sid not in wire.conn.streams and wire.ctx.in_flight == 0
    assert not wire.conn.closed and not wire.transport.closing  # only the stream: the connection goes on


def test_a_slow_upload_whose_gaps_are_under_the_timeout_is_not_reset(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    wire = Wire(loop, app)
    sid = wire.open("/upload")
    for _ in range(5):  # 5 x (TIMEOUT - 5) seconds in all: far over the timeout, but never idle that long
        wire.tick(TIMEOUT - 5)
        wire.client.send_data(sid, b"x" * 10)
        wire.send()
    wire.client.end_stream(sid)
    wire.send()
    assert wire.reset_code(sid) is None
    assert wire.status(sid) == 200 and wire.body(sid) == b"50"


def test_other_streams_on_the_connection_are_unaffected(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    wire = Wire(loop, app)
    stalled = wire.open("/upload")
    busy = wire.open("/busy")
    for _ in range(3):
        wire.tick(TIMEOUT / 2 - 1)
        wire.client.send_data(busy, b"y" * 3)
        wire.send()
        wire.client.ping(b"12345678")  # PINGs keep the connection busy, not the stalled stream
        wire.send()
    assert wire.reset_code(stalled) == fr.NO_ERROR and wire.status(stalled) == 408
    assert wire.reset_code(busy) is None and wire.status(busy) is None
    wire.client.send_data(busy, b"y", end_stream=True)
    wire.send()
    assert wire.status(busy) == 200 and wire.body(busy) == b"10"
    late = wire.client.get_next_available_stream_id()  # new streams are still served
    wire.client.send_headers(late, [*GET, (":path", "/late")], end_stream=True)
    wire.send()
    assert wire.status(late) == 200 and wire.body(late) == b"0"


def test_a_started_response_is_reset_with_cancel(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    wire = Wire(loop, app)
    sid = wire.open("/stream-first")
    assert wire.status(sid) == 200 and wire.body(sid) == b"working"
    wire.tick(TIMEOUT + 1)
    assert wire.reset_code(sid) == fr.CANCEL
    assert not wire.of(sid, h2.events.StreamEnded)
    assert app.seen["/stream-first"] == ["http.disconnect"]
    assert sid not in wire.conn.streams and wire.ctx.in_flight == 0


def test_an_app_that_has_not_asked_for_the_body_is_not_timed_out(loop: asyncio.AbstractEventLoop) -> None:
    """The clock runs while the app waits in receive(): a client that waits for 100 Continue, or whose
    window is shut while the app is busy, is not the one stalling."""
    app = Recorder()
    wire = Wire(loop, app)
    sid = wire.open("/never")
    wire.tick(3 * TIMEOUT)
    assert wire.reset_code(sid) is None and wire.status(sid) is None
    assert sid in wire.conn.streams
    app.never.set()
    wire.run()


def test_the_marks_hold_only_streams_whose_app_waits(loop: asyncio.AbstractEventLoop) -> None:
    """The sweep's record (stalled_bodies' marks) is rebuilt each tick: a stream leaves it when its body
    arrives or it ends, so a long-lived connection keeps nothing of its past streams."""
    app = Recorder()
    wire = Wire(loop, app)
    waiting = wire.open("/upload")
    idle = wire.open("/never")
    wire.tick(1)
    assert [st.stream_id for st in wire.conn._body_marks] == [waiting]
    wire.client.send_data(waiting, b"done", end_stream=True)
    wire.send()
    wire.tick(1)
    assert wire.status(waiting) == 200 and not wire.conn._body_marks
    assert idle in wire.conn.streams  # its app never asked for the body: not marked, not timed out
    app.never.set()
    wire.run()


def test_the_timeout_is_the_option(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    wire = Wire(loop, app, timeout_body_idle=2.0)
    sid = wire.open("/upload")
    wire.tick(1.5)
    assert wire.reset_code(sid) is None
    wire.tick(1.5)
    assert wire.status(sid) == 408


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_there_is_no_disabled_value_as_on_http1(value: float) -> None:
    """As for HTTP/1.1 (config.py): the timeout is always on, a positive number of seconds."""
    with pytest.raises(ConfigError, match="timeout_body_idle"):
        Config(app="x:y", timeout_body_idle=value)
