"""protocols/stream_table.py: what HTTP/2 and HTTP/3 connections do with their stream tables the same way
(starting apps, the tick's --timeout-request and --timeout-body-idle sweeps), on a recording stream. The h2
and h3 suites check the same through the real wires (test_h2_body_idle.py, test_h3_review.py, ...)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_stream_exchange import RecordingStream

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.exchange import Exchange
from bascule.protocols.stream_exchange import StreamExchange
from bascule.protocols.stream_table import (
    app_deadlines,
    dispatch,
    refuse_stalled_body,
    release_writer,
    stalled_bodies,
)


def test_dispatch_starts_the_streams_still_there_and_stamps_them() -> None:
    async def main() -> None:
        served: list[Exchange] = []
        ctx = ServerContext(Config(app="a:b"), asyncio.get_running_loop(), served.append, access_log=False)
        here, gone = RecordingStream(), RecordingStream()
        gone.disconnected = True
        dispatch(ctx, [here, gone], 12.5)
        assert served == [here] and here.start_time == 12.5 and here.counted
        assert gone.start_time == 0.0 and not gone.counted

    asyncio.run(main())


def test_a_stream_leaving_the_table_wakes_its_paused_writer() -> None:
    async def main() -> None:
        st = RecordingStream(loop=asyncio.get_running_loop())
        st.write_paused = True
        drain = asyncio.ensure_future(st.drain())
        await asyncio.sleep(0)
        assert not drain.done()
        release_writer(st)
        await asyncio.wait_for(drain, 1.0)
        assert not st.write_paused
        release_writer(st)  # not paused: nothing to do

    asyncio.run(main())


def test_app_deadlines_answer_504_before_the_response_and_give_up_after() -> None:
    waiting, started, done, fresh = RecordingStream(), RecordingStream(), RecordingStream(), RecordingStream()
    cancelled: list[StreamExchange] = []
    for st in (waiting, started, done, fresh):
        st.counted = True
        st.cancel_app = lambda st=st: cancelled.append(st)
    started.send_head(200, [])
    done.finished = True
    fresh.start_time = 9.0
    app_deadlines([waiting, started, done, fresh], 10.0, 5.0)
    assert waiting.frames[0][1][0] == b":status: 504" and waiting.disconnected and not waiting.aborted
    assert started.aborted == 1 and started.disconnected
    assert not done.disconnected and not fresh.disconnected
    assert cancelled == [waiting, started]


def test_a_body_stalls_only_after_the_timeout_with_no_byte_and_the_app_waiting() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        st, idle = RecordingStream(loop=loop), RecordingStream(loop=loop)
        st._body_waiter = loop.create_future()  # the app waits in receive_body
        marks: dict[StreamExchange, tuple[int, float]] = {}
        assert stalled_bodies([st, idle], marks, 0.0, 1.0) == [] and marks == {st: (0, 0.0)}
        st.received = 3  # a byte restarts the clock
        assert stalled_bodies([st], marks, 0.9, 1.0) == [] and marks == {st: (3, 0.9)}
        assert stalled_bodies([st], marks, 1.5, 1.0) == []
        assert stalled_bodies([st], marks, 2.0, 1.0) == [st]
        st.disconnected = True  # gone: dropped from the marks
        assert stalled_bodies([st], marks, 5.0, 1.0) == [] and marks == {}

    asyncio.run(main())


def test_a_stalled_body_is_logged_and_answered_408_unless_the_response_started(
        caplog: pytest.LogCaptureFixture) -> None:
    st, started = RecordingStream(), RecordingStream()
    started.send_head(200, [])
    with caplog.at_level(logging.INFO, logger="bascule.error"):
        refuse_stalled_body(st, 7, "peer", 2.0)
        refuse_stalled_body(started, 9, "peer", 2.0)
    assert st.frames[0][1][0] == b":status: 408" and st.finished
    assert len(started.frames) == 1
    assert "on HTTP/9 stream 7: no request body bytes within timeout_body_idle (2 s) (408)" in caplog.text
    assert "on HTTP/9 stream 9" in caplog.text and "(stream reset)" in caplog.text
