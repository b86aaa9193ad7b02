"""Flow control of a FastCGI connection (protocols/fastcgi) over a fake transport: what it reads while its
answers cannot be written.

A web server that sends records and never reads the answers (GET_VALUES, unknown types, whole requests)
must not make the server's output buffer grow without bound: while the transport is above its high-water
mark the connection stops reading, as HTTP/2 does; and that pause, being ours, is not the web server's
idleness (--timeout-body-idle).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.fastcgi.connection import MAX_REQUESTS, FcgiConnection
from bascule.protocols.fastcgi_wire import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    END_REQUEST,
    GET_VALUES,
    KEEP_CONN,
    OVERLOADED,
    PARAMS,
    encode_pairs,
    record,
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connection(loop: asyncio.AbstractEventLoop, dispatch: Any = lambda ex: None,
               **options: Any) -> tuple[FcgiConnection, FakeTransport]:
    ctx = ServerContext(Config(app="x:y", access_log=False, **options), loop, dispatch, access_log=False)
    conn = FcgiConnection(ctx)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def test_reading_stops_while_the_answers_cannot_be_written(loop: asyncio.AbstractEventLoop) -> None:
    conn, transport = connection(loop)
    conn.pause_writing()
    assert transport.paused  # the GET_VALUES a peer sends without reading would pile up answers
    conn.data_received(record(GET_VALUES, 0, encode_pairs([(b"FCGI_MAX_REQS", b"")])))
    conn.resume_writing()
    assert not transport.paused


def test_our_pause_for_writing_is_not_body_idle(loop: asyncio.AbstractEventLoop) -> None:
    conn, transport = connection(loop, timeout_body_idle=1.0)
    pairs = encode_pairs([(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/"), (b"CONTENT_LENGTH", b"5")])
    conn.data_received(record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, pairs)
                       + record(PARAMS, 1))
    assert conn.exchanges
    conn.pause_writing()
    for tick in range(10):
        conn.on_tick(100.0 + tick)
    assert not transport.closing
    conn.resume_writing()
    for tick in range(10):
        conn.on_tick(200.0 + tick)
    assert transport.aborted  # the body's idleness is the web server's again


class Run:
    """An app run as the gateways leave it on ``ex.app_task``: done when the test says."""

    finished = False

    def done(self) -> bool:
        return self.finished


def test_aborted_requests_whose_apps_still_run_count_against_the_requests_per_connection(
        loop: asyncio.AbstractEventLoop) -> None:
    """Rapid reset, FastCGI's way: BEGIN_REQUEST, PARAMS, ABORT_REQUEST, again and again on one id. Each
    abort frees the id and the concurrency slot at once while the app (which need not watch for
    http.disconnect) runs on: without a bound, one connection starts apps without end."""
    runs: list[Run] = []

    def dispatch(ex: Any) -> None:
        ex.app_task = Run()
        runs.append(ex.app_task)

    conn, transport = connection(loop, dispatch)
    pairs = encode_pairs([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/"), (b"CONTENT_LENGTH", b"")])
    begin = record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, pairs) + record(
        PARAMS, 1)
    abort = record(ABORT_REQUEST, 1)  # in a read of its own: one in the same read skips the app

    def one() -> None:
        conn.data_received(begin)
        conn.data_received(abort)

    for _ in range(300):
        one()
    conn.outbox.flush()
    assert len(runs) == MAX_REQUESTS and ended_with(transport.out, OVERLOADED) == 300 - MAX_REQUESTS
    assert conn.ctx.in_flight == 0 and not transport.closing
    for run in runs[:10]:
        run.finished = True
    for _ in range(20):
        one()
    assert len(runs) == MAX_REQUESTS + 10  # the slots of apps that returned are free again


def ended_with(out: bytes | bytearray, protocol_status: int) -> int:
    count = pos = 0
    while pos < len(out):
        _, kind, _, length, padding = struct.unpack_from("!BBHHBx", out, pos)
        if kind == END_REQUEST and out[pos + 12] == protocol_status:
            count += 1
        pos += 8 + length + padding
    return count
