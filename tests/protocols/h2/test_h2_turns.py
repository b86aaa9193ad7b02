"""HTTP/2 output without sockets: turn-taking after a transport pause, and the WINDOW_UPDATE allowance.

Both found in review of issue 12's changes: after one pause, idle streams (a long poll, an SSE stream
between events) were given turns the only sender then yielded to on every send; and the allowance of
uncharged WINDOW_UPDATEs grew without bound over a long-lived connection, buying a later burst of free
control frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import h2.config
import h2.connection
import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.connection import CONTROL_PER_TICK, H2Connection
from bascule.protocols.h2.output import MAX_ACK_ALLOWANCE
from bascule.protocols.h2.stream import H2Stream


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


class Transport(FakeTransport):
    def can_write_eof(self) -> bool:
        return False  # closes at once after a GOAWAY (no lingering half-close)


def open_h2(loop: asyncio.AbstractEventLoop, streams: int) -> tuple[H2Connection, list[H2Stream]]:
    """A server connection on a fake transport with ``streams`` GET streams open (not dispatched to apps:
    the context's dispatch only records them)."""
    dispatched: list[H2Stream] = []
    ctx = ServerContext(Config(app="x:y", access_log=False), loop, dispatched.append,  # type: ignore[arg-type]
                        access_log=False)
    conn = H2Connection(ctx, "http", None)
    conn.connection_made(Transport())
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for i in range(streams):
        client.send_headers(1 + 2 * i, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                        (":authority", "a")], end_stream=True)
    conn.data_received(client.data_to_send())
    assert len(dispatched) == streams
    return conn, dispatched


def test_the_only_sender_does_not_yield_to_idle_streams_after_a_pause(loop: asyncio.AbstractEventLoop) -> None:
    conn, (sender, idle) = open_h2(loop, 2)  # ``idle`` never sends: a long poll
    conn.send_headers(sender, b"\x88", False)
    conn.send_data(sender, b"x" * 100, False)
    assert not sender.write_paused  # alone, it never yields
    conn.pause_writing()
    conn.resume_writing()  # the transport filled up once, then drained
    yields = 0
    for _ in range(100):
        conn.send_data(sender, b"x" * 100, False)
        yields += sender.write_paused
        loop.run_until_complete(asyncio.sleep(0))
    assert yields <= 1, f"the only sender yielded {yields} times in 100 sends"
    assert not idle.write_paused


def test_two_senders_alternate(loop: asyncio.AbstractEventLoop) -> None:
    conn, (a, b) = open_h2(loop, 2)
    for st in (a, b):
        conn.send_headers(st, b"\x88", False)
    sent = {a.stream_id: 0, b.stream_id: 0}
    for _ in range(50):
        for st in (a, b):
            if not st.write_paused:
                conn.send_data(st, b"x" * 100, False)
                sent[st.stream_id] += 1
        loop.run_until_complete(asyncio.sleep(0))
    assert min(sent.values()) >= 20, sent


def test_the_ack_allowance_is_capped(loop: asyncio.AbstractEventLoop) -> None:
    conn, (st,) = open_h2(loop, 1)
    conn.send_headers(st, b"\x88", False)
    for _ in range(5000):  # an SSE stream: thousands of small events over an hour
        conn.send_data(st, b"e" * 10, False)
    assert conn.ack_allowance == MAX_ACK_ALLOWANCE
    conn.on_tick(loop.time())
    # then a burst of connection WINDOW_UPDATEs, the cap plus more than a tick's control budget, in one read
    conn.data_received(fr.window_update(0, 1) * (MAX_ACK_ALLOWANCE + CONTROL_PER_TICK + 10))
    assert conn.closed  # ENHANCE_YOUR_CALM once the banked allowance and the tick's budget are spent
