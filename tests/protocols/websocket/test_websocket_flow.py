"""Tests for WSConnection's input flow control, sans sockets: slices, passes, pauses and what is held.

A :class:`WSConnection` is opened on a fake transport that records pause/resume and writes; frames are fed
as raw bytes through ``data_received`` and loop passes are run one at a time, so the bound on the work of
one pass and on what is queued for the app can be checked exactly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeTransport
from websockets.extensions.permessage_deflate import PerMessageDeflate

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.exchange import Exchange
from bascule.protocols.websocket.connection import (
    CLOSE_TIMEOUT,
    CONTROL_PER_TICK,
    FEED_SLICE,
    FLOOD_CLOSE_GRACE,
    FRAMES_PER_PASS,
    WSConnection,
)


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


class UpgradeRequest(Exchange):
    """The request fields WSConnection copies; its response side is never used (the session replaces it).

    A real Exchange subclass, not a namespace: the compiled build checks the argument's type.
    """

    def __init__(self) -> None:
        self.http_version, self.scheme, self.tls = "1.1", "http", None
        self.raw_path, self.query_string, self.headers = b"/ws", b"", []
        self.client, self.server = ("127.0.0.1", 5000), ("127.0.0.1", 8000)


UpgradeRequest.__abstractmethods__ = frozenset()  # a stand-in: nothing abstract is called


def upgrade_request() -> Exchange:
    return UpgradeRequest()  # type: ignore[abstract]  # made concrete just above


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def open_ws(loop: asyncio.AbstractEventLoop, **options: Any) -> tuple[WSConnection, FakeTransport]:
    """An accepted WebSocket (101 written, frames flowing) on a fake transport."""
    ctx = ServerContext(Config(app="x:y", access_log=False, **options), loop, lambda ex: None, access_log=False)
    transport = FakeTransport()
    ws = WSConnection(ctx, transport, upgrade_request())
    ws.accept(None, [])
    transport.out.clear()
    return ws, transport


def one_pass(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def queued(ws: WSConnection) -> int:
    return len(ws._queue)


def test_a_read_of_tiny_frames_is_parsed_over_several_loop_passes(loop: asyncio.AbstractEventLoop) -> None:
    data = frame(0x2, b"x") * (4 * FEED_SLICE // 7)  # ~9,000 one-byte messages in one read
    total = len(data) // 7
    ws, transport = open_ws(loop, ws_max_queue=100_000)
    ws.data_received(data)
    first = queued(ws)
    assert 0 < first < FRAMES_PER_PASS + FEED_SLICE // 7  # one pass: until FRAMES_PER_PASS, a slice at most over
    assert transport.paused  # the rest is held, and nothing more is read meanwhile
    passes = 1
    while transport.paused:
        one_pass(loop)
        passes += 1
    assert queued(ws) == total and passes >= total // (FRAMES_PER_PASS + FEED_SLICE // 7)


def test_large_frames_in_a_large_read_go_in_one_pass(loop: asyncio.AbstractEventLoop) -> None:
    data = frame(0x2, b"x" * 100_000) * 3
    ws, transport = open_ws(loop)
    ws.data_received(data)
    assert queued(ws) == 3 and not transport.paused


def test_the_queue_bound_holds_the_rest_of_a_read(loop: asyncio.AbstractEventLoop) -> None:
    messages = [bytes([i]) * 6000 for i in range(20)]
    ws, transport = open_ws(loop, ws_max_queue=2)
    ws.data_received(b"".join(frame(0x2, m) for m in messages))
    assert 2 <= queued(ws) <= 2 + FEED_SLICE // 6000 and transport.paused
    got: list[str | bytes] = []

    async def app() -> None:
        while len(got) < len(messages):
            message = await ws.receive()
            assert isinstance(message, bytes)
            got.append(message)
            assert queued(ws) <= 2 + FEED_SLICE // 6000

    loop.run_until_complete(app())
    assert got == messages
    one_pass(loop)
    assert not transport.paused


def test_pings_whose_pongs_cannot_be_written_pause_reading(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop)
    ws.pause_writing()  # the peer reads nothing: the transport's buffer is over its high-water mark
    ws.data_received(frame(0x9, b"1"))
    assert transport.paused
    ws.data_received(frame(0x9, b"2") + frame(0x2, b"held"))  # delivered while paused (as HTTP/2 streams do)
    one_pass(loop)
    assert queued(ws) == 0 and transport.out.count(b"\x8a\x01") == 1  # one pong out, the rest held
    ws.resume_writing()
    one_pass(loop)
    assert not transport.paused and queued(ws) == 1 and transport.out.count(b"\x8a\x01") == 2


def test_app_output_backlog_alone_does_not_stop_reading(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop)
    ws.pause_writing()  # the app's sends wait, but a full-duplex app can still receive
    ws.data_received(frame(0x2, b"a") + frame(0x2, b"b"))
    assert queued(ws) == 2 and not transport.paused


def test_eof_after_held_bytes_ends_the_input_after_them(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop, ws_max_queue=1)
    ws.data_received(frame(0x2, b"first") + frame(0x2, b"second"))  # the queue is full: reading pauses
    ws.data_received(frame(0x2, b"third") + frame(0x8, struct.pack("!H", 1000)))  # still arrives (HTTP/2): held
    assert ws.eof_received() is True  # kept open: the held frames come first
    got: list[str | bytes | int] = []

    async def app() -> None:
        while True:
            message = await ws.receive()
            if not isinstance(message, (str, bytes)):
                got.append(message.code)
                return
            got.append(message)

    loop.run_until_complete(app())
    assert got == [b"first", b"second", b"third", 1000]  # the peer's close, not a 1006 for its EOF
    one_pass(loop)
    assert transport.closing


def test_the_queue_is_bounded_in_bytes_too(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop, ws_max_queue=32, ws_max_size=100_000)
    ws.data_received(b"".join(frame(0x2, bytes(30_000)) for _ in range(10)))
    assert 4 <= queued(ws) <= 4 + FEED_SLICE // 30_000 + 1 and transport.paused  # 4 x 30 KB reach 100 KB
    taken = 0

    async def app() -> None:
        nonlocal taken
        while taken < 10:
            await ws.receive()
            taken += 1
            assert ws._queued_bytes < 100_000 + FEED_SLICE + 30_000

    loop.run_until_complete(app())
    one_pass(loop)
    assert not transport.paused and ws._queued_bytes == 0


def deflated(size: int) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(bytes(size)) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def open_deflate_ws(loop: asyncio.AbstractEventLoop, **options: Any) -> tuple[WSConnection, FakeTransport]:
    """As :func:`open_ws`, permessage-deflate negotiated (no context takeover either way)."""
    ctx = ServerContext(Config(app="x:y", access_log=False, **options), loop, lambda ex: None, access_log=False)
    transport = FakeTransport()
    ws = WSConnection(ctx, transport, upgrade_request())
    ws._extensions = [PerMessageDeflate(True, True, 15, 15)]
    ws.accept(None, [])
    transport.out.clear()
    return ws, transport


def compressed_frame(payload: bytes, *, opcode: int = 0x2, fin: bool = True) -> bytes:
    raw = bytearray(frame(opcode, payload, fin=fin))
    raw[0] |= 0x40  # RSV1: compressed
    return bytes(raw)


def test_compressed_messages_are_inflated_only_as_the_queue_has_room(loop: asyncio.AbstractEventLoop) -> None:
    """Ten 4 MiB messages of zeros are ~40 KB on the wire, one read: never more than ~2 of them inflated."""
    size = 4 << 20
    ws, transport = open_deflate_ws(loop, ws_max_size=size)
    ws.data_received(compressed_frame(deflated(size)) * 10)
    assert queued(ws) <= 2 and ws._queued_bytes <= 2 * size and transport.paused
    taken = 0

    async def app() -> None:
        nonlocal taken
        while taken < 10:
            message = await ws.receive()
            assert message == bytes(size)
            taken += 1
            assert ws._queued_bytes <= 2 * size

    loop.run_until_complete(app())
    one_pass(loop)
    assert not transport.paused


def test_a_fragmented_deflate_bomb_is_refused_1009(loop: asyncio.AbstractEventLoop) -> None:
    bomb = deflated(64 << 20)
    third = len(bomb) // 3
    ws, transport = open_deflate_ws(loop, ws_max_size=1 << 20)
    ws.data_received(compressed_frame(bomb[:third], fin=False) + frame(0x0, bomb[third:2 * third], fin=False)
                     + frame(0x0, bomb[2 * third:]))
    one_pass(loop)
    out = bytes(transport.out)
    assert out[0] == 0x88 and struct.unpack("!H", out[2:4])[0] == 1009, out[:40]
    assert queued(ws) == 0


def test_a_flooder_gets_its_close_then_is_dropped_after_a_grace(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop)
    ws.data_received(frame(0x9, b"p") * (CONTROL_PER_TICK + 1))
    one_pass(loop)
    assert transport.out[:2] == b"\x88\x19" and transport.closing and not transport.aborted  # close 1008, EOF
    ws.on_tick(loop.time())
    assert not transport.aborted  # it may still take the close frame
    ws.on_tick(loop.time() + FLOOD_CLOSE_GRACE + 0.1)
    assert transport.aborted  # asyncio's close would wait for a peer that never reads, holding the buffer


def test_a_flooder_that_takes_nothing_is_dropped_at_once(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop)
    ws.pause_writing()
    ws.data_received(frame(0x9, b"p") * (CONTROL_PER_TICK + 1))
    assert transport.aborted and not transport.out


def test_the_budget_is_per_tick(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop)
    for _ in range(3):
        ws.data_received(frame(0x9, b"p") * CONTROL_PER_TICK)
        one_pass(loop)
        ws.on_tick(loop.time())
    assert not transport.closing and transport.out.count(b"\x8a\x01p") == 3 * CONTROL_PER_TICK


def test_a_connection_closed_by_us_is_dropped_if_its_peer_never_reads(loop: asyncio.AbstractEventLoop) -> None:
    ws, transport = open_ws(loop)
    ws.close(1000)
    ws.data_received(frame(0x8, struct.pack("!H", 1000)))  # the peer answers: we send EOF, close the transport
    one_pass(loop)
    assert transport.closing and not transport.aborted
    ws.on_tick(loop.time() + CLOSE_TIMEOUT + 0.1)
    assert transport.aborted


def test_a_flood_in_a_large_read_is_handled_once(loop: asyncio.AbstractEventLoop,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Found in review: the slices after the one that broke the budget were fed to the failed engine and
    reported the flood again, one warning per slice (20 for this read)."""
    caplog.set_level(logging.WARNING)
    ws, _transport = open_ws(loop)
    ws.data_received(frame(0x9, b"p") * (CONTROL_PER_TICK - 50))  # under the budget
    one_pass(loop)
    ws.data_received(frame(0x9, b"p") * 60 + frame(0x2, b"x" * 100) * 3000)  # over it, then 300 KB
    one_pass(loop)
    floods = [r for r in caplog.records if "1008" in r.getMessage()]
    assert len(floods) == 1, [r.getMessage() for r in floods]
