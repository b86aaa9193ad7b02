"""protocols.outbox: write coalescing (one end-of-pass callback for every connection, and a flush every FLUSH_AT
connections mid-pass), drain waiters and pause reasons, as every wire uses them (issue 13 item 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.fastcgi.connection import FcgiConnection
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h2.connection import H2Connection
from bascule.protocols.oneshot.connection import UWSGI, OneshotConnection
from bascule.protocols.outbox import COALESCE_LIMIT, FLUSH_AT, Outbox, PassFlush


class RecordingTransport(FakeTransport):
    """Records each write call (coalescing is about how many there are) and pauses, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))
        super().write(data)

    def writelines(self, data: object) -> None:
        pieces = list(data)  # type: ignore[call-overload]
        self.calls.append(("writelines", b"".join(pieces)))
        for piece in pieces:
            super().write(piece)

    def pause_reading(self) -> None:
        self.calls.append(("pause", b""))
        super().pause_reading()

    def resume_reading(self) -> None:
        self.calls.append(("resume", b""))
        super().resume_reading()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def attached(loop: asyncio.AbstractEventLoop, **options: int | bool) -> tuple[Outbox, RecordingTransport]:
    outbox = Outbox(loop, **options)  # type: ignore[arg-type]
    transport = RecordingTransport()
    outbox.transport = transport
    return outbox, transport


def one_pass(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


# -- coalescing -------------------------------------------------------------------------------------
def test_bytes_queued_in_one_pass_leave_in_one_write(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop, join_below=1024)
    outbox.write(b"HTTP/1.1 200 OK\r\n\r\n")
    outbox.write(b"abc")
    outbox.write(b"def")
    assert transport.calls == []  # nothing before the end of the pass
    one_pass(loop)
    assert transport.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nabcdef")]  # small: joined into one buffer
    outbox.write(b"next")
    one_pass(loop)
    assert transport.calls[1:] == [("write", b"next")]  # a lone piece goes as it is


def test_large_pieces_go_out_without_a_copy(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop, join_below=16)
    outbox.write(b"x" * 10)
    outbox.write(b"y" * 10)
    one_pass(loop)
    assert transport.calls == [("writelines", b"x" * 10 + b"y" * 10)]


def test_the_limit_writes_at_once(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop, limit=100)
    outbox.write(b"a" * 60)
    assert transport.calls == []
    outbox.write(b"b" * 40)  # 100 queued: written now, not at the end of the pass
    assert transport.calls == [("writelines", b"a" * 60 + b"b" * 40)]
    assert outbox.pending == [] and outbox.size == 0
    one_pass(loop)  # the flush scheduled by the first write finds nothing
    assert len(transport.calls) == 1


def test_the_default_limit_is_64_kib(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop)
    assert COALESCE_LIMIT == 64 * 1024
    outbox.write(b"z" * (COALESCE_LIMIT - 1))
    assert transport.calls == []
    outbox.write(b"z")
    assert transport.out == b"z" * COALESCE_LIMIT


def test_a_detached_or_closing_transport_gets_nothing(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop)
    outbox.write(b"lost")
    outbox.transport = None  # the connection is done with it (closed, handed over)
    one_pass(loop)
    assert transport.calls == [] and outbox.pending == []
    closing, closing_transport = attached(loop, skip_closing=True)
    closing.write(b"frame")
    closing_transport.close()
    one_pass(loop)
    assert closing_transport.calls == []
    kept, kept_transport = attached(loop)  # without skip_closing, a closing transport still takes them
    kept.write(b"last")
    kept_transport.closing = False
    one_pass(loop)
    assert kept_transport.out == b"last"


def test_queue_and_a_flusher_of_its_own(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop)
    flushed: list[int] = []

    def flusher() -> None:
        flushed.append(outbox.size)
        outbox.flush()

    outbox.flusher = flusher
    outbox.write(b"body")  # the first bytes of the pass schedule the wire's flusher
    outbox.queue(b"tail")  # queued only: the flush already scheduled takes them too
    one_pass(loop)
    assert flushed == [8] and transport.out == b"bodytail"
    outbox.queue(b"alone")  # queued with nothing scheduled: it waits for the wire's own flush
    one_pass(loop)
    assert flushed == [8] and outbox.pending == [b"alone"]
    outbox.discard()
    outbox.write(b"x")
    outbox.discard()
    one_pass(loop)
    assert transport.out == b"bodytail"


# -- one end of the pass for every connection ------------------------------------------------------------
def counted(loop: asyncio.AbstractEventLoop) -> tuple[PassFlush, list[object]]:
    """A PassFlush whose end-of-pass callbacks are counted as they are scheduled."""
    end = PassFlush(loop)
    scheduled: list[object] = []
    real = end.soon

    def soon(callback: Any) -> Any:
        scheduled.append(callback)
        return real(callback)

    end.soon = soon
    return end, scheduled


def sharing(loop: asyncio.AbstractEventLoop, end: PassFlush, n: int) -> list[tuple[Outbox, RecordingTransport]]:
    pairs = []
    for _ in range(n):
        outbox = Outbox(loop, end_of_pass=end)
        transport = RecordingTransport()
        outbox.transport = transport
        pairs.append((outbox, transport))
    return pairs


def test_the_connections_of_a_pass_share_one_end_of_pass_callback(loop: asyncio.AbstractEventLoop) -> None:
    end, scheduled = counted(loop)
    pairs = sharing(loop, end, 5)
    for i, (outbox, _) in enumerate(pairs):
        outbox.write(b"head%d" % i)
        outbox.write(b"body%d" % i)  # already due: not added twice
    assert len(scheduled) == 1 and len(end.due) == 5
    assert all(transport.calls == [] for _, transport in pairs)
    one_pass(loop)
    assert [transport.out for _, transport in pairs] == [b"head%dbody%d" % (i, i) for i in range(5)]
    assert all(len(transport.calls) == 1 for _, transport in pairs) and end.due == []
    pairs[2][0].write(b"next")  # a new pass: a new callback
    one_pass(loop)
    assert len(scheduled) == 2 and pairs[2][1].calls[-1] == ("write", b"next")


def test_every_flush_at_connections_due_are_flushed_at_once(loop: asyncio.AbstractEventLoop) -> None:
    """Mid-pass: the clients of a busy server get their answers while the pass is still reading. The
    connection whose bytes make one more than FLUSH_AT due waits, so what it writes next joins them."""
    assert FLUSH_AT == 64
    end, scheduled = counted(loop)
    pairs = sharing(loop, end, FLUSH_AT + 3)
    for i, (outbox, _) in enumerate(pairs[:FLUSH_AT]):
        outbox.write(b"%d" % i)
    assert all(transport.calls == [] for _, transport in pairs)
    head_then_body, its_transport = pairs[FLUSH_AT]
    head_then_body.write(b"head")  # one more due: the FLUSH_AT before it go now
    assert [transport.out for _, transport in pairs[:FLUSH_AT]] == [b"%d" % i for i in range(FLUSH_AT)]
    assert its_transport.calls == [] and len(end.due) == 1
    head_then_body.write(b"body")
    for outbox, _ in pairs[FLUSH_AT + 1:]:  # later ones in the same pass wait for its end
        outbox.write(b"late")
    assert all(transport.calls == [] for _, transport in pairs[FLUSH_AT:])
    one_pass(loop)
    assert its_transport.calls == [("writelines", b"headbody")]  # not split by the mid-pass flush
    assert all(transport.out == b"late" for _, transport in pairs[FLUSH_AT + 1:])
    assert all(len(transport.calls) == 1 for _, transport in pairs)  # one write each, whoever flushed it
    assert len(scheduled) == 1  # the pass's one callback, which found the rest


class Chained(RecordingTransport):
    """A transport whose first write runs ``then`` (as a protocol callback that makes another connection write)."""

    def __init__(self) -> None:
        super().__init__()
        self.then: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        then, self.then = self.then, None
        if then is not None:
            then()


def test_a_flush_that_makes_the_due_overflow_sends_every_connection_once(loop: asyncio.AbstractEventLoop) -> None:
    """Inside a run, one more than FLUSH_AT due starts no second run: that one would flush the connection
    still being flushed a second time, and clear what joined after it."""
    end = PassFlush(loop)
    pairs = sharing(loop, end, FLUSH_AT + 2)
    chained = Chained()
    first = pairs[0][0]
    first.transport = chained
    (overflow, overflow_transport), (after, after_transport) = pairs[FLUSH_AT:]

    def more_writes() -> None:
        overflow.write(b"overflow")  # one more than FLUSH_AT due, during the run
        after.write(b"after")  # and one after that

    chained.then = more_writes
    for i, (outbox, _) in enumerate(pairs[:FLUSH_AT]):
        outbox.write(b"%d" % i)
    one_pass(loop)
    assert chained.calls == [("write", b"0")]  # once
    assert overflow_transport.out == b"overflow" and after_transport.out == b"after"
    assert all(len(transport.calls) == 1 for _, transport in pairs[1:])
    assert end.due == [] and not overflow.pending and not after.pending


@pytest.mark.parametrize("where", ["mid-pass", "end of the pass"])
def test_a_flush_that_raises_past_the_handler_leaves_the_rest_to_another_pass(
        loop: asyncio.AbstractEventLoop, where: str) -> None:
    end = PassFlush(loop)
    (good, good_transport), (interrupted, interrupted_transport), (rest, rest_transport) = sharing(loop, end, 3)

    def interrupt(data: object) -> None:
        del interrupted_transport.write  # raises once
        raise KeyboardInterrupt

    interrupted_transport.write = interrupt  # type: ignore[method-assign]
    for outbox in (good, interrupted, rest):
        outbox.write(b"x")
    with pytest.raises(KeyboardInterrupt):
        if where == "mid-pass":
            end.run()
        else:
            end.end_of_pass()
    assert good_transport.out == b"x" and rest_transport.calls == []
    assert end.due == [rest.flusher] and end.scheduled  # the one left waits for another run
    one_pass(loop)
    assert rest_transport.out == b"x" and end.due == [] and not end.scheduled
    for outbox in (rest, interrupted):  # the next pass schedules as usual
        outbox.write(b"y")
    one_pass(loop)
    assert rest_transport.out == b"xy"
    assert interrupted_transport.out == b"y"  # its cut-short write dropped what it had queued, not what came next


def test_a_transport_that_raises_leaves_nothing_queued(loop: asyncio.AbstractEventLoop) -> None:
    """A write that fails drops its bytes (the connection is broken), so the connection's next bytes are due
    again rather than queued behind them forever."""
    outbox, transport = attached(loop)
    loop.set_exception_handler(lambda _loop, _context: None)

    def broken(data: object) -> None:
        raise OSError("gone")

    transport.write = broken  # type: ignore[method-assign]
    outbox.write(b"lost")
    one_pass(loop)
    assert outbox.pending == [] and outbox.size == 0
    del transport.write
    outbox.write(b"next")
    one_pass(loop)
    assert transport.out == b"next"


def test_a_connection_due_while_the_flushes_run_is_flushed_by_the_same_run(loop: asyncio.AbstractEventLoop) -> None:
    end, scheduled = counted(loop)
    (first, first_transport), (second, second_transport) = sharing(loop, end, 2)

    def flush_and_write_elsewhere() -> None:  # as a flush whose transport callback makes another connection write
        first.flush()
        second.write(b"from the flush")

    first.flusher = flush_and_write_elsewhere
    first.write(b"one")
    one_pass(loop)
    assert first_transport.out == b"one" and second_transport.out == b"from the flush"
    assert len(scheduled) == 1 and end.due == []


def test_an_outbox_alone_has_an_end_of_pass_of_its_own(loop: asyncio.AbstractEventLoop) -> None:
    a, b = Outbox(loop), Outbox(loop)
    assert a._end_of_pass is not b._end_of_pass


def test_a_server_s_connections_share_its_end_of_pass(loop: asyncio.AbstractEventLoop) -> None:
    ctx = ServerContext(Config(app="x:y", access_log=False), loop, lambda ex: None, access_log=False)
    connections = [H1Connection(ctx, local=("127.0.0.1", 8000)), H2Connection(ctx), FcgiConnection(ctx),
                   OneshotConnection(ctx, UWSGI)]
    assert all(conn.outbox._end_of_pass is ctx.end_of_pass for conn in connections)


# -- drain ------------------------------------------------------------------------------------------
def test_drain_returns_at_once_unless_paused(loop: asyncio.AbstractEventLoop) -> None:
    outbox, _ = attached(loop)
    loop.run_until_complete(asyncio.wait_for(outbox.drain(), 1))
    outbox.write_paused = True
    outbox.transport = None  # paused but gone: nobody would ever wake it
    loop.run_until_complete(asyncio.wait_for(outbox.drain(), 1))


def test_drain_waiters_are_woken_together(loop: asyncio.AbstractEventLoop) -> None:
    outbox, _ = attached(loop)
    outbox.write_paused = True

    async def scenario() -> list[str]:
        order: list[str] = []

        async def sender(name: str) -> None:
            await outbox.drain()
            order.append(name)

        tasks = [loop.create_task(sender(name)) for name in ("a", "b", "c")]
        await asyncio.sleep(0)
        assert order == []
        outbox.write_paused = False
        outbox.wake_drain()
        await asyncio.gather(*tasks)
        return order

    assert loop.run_until_complete(scenario()) == ["a", "b", "c"]


def test_a_cancelled_drain_waiter_is_skipped(loop: asyncio.AbstractEventLoop) -> None:
    outbox, _ = attached(loop)
    outbox.write_paused = True

    async def scenario() -> bool:
        cancelled = loop.create_task(outbox.drain())
        kept = loop.create_task(outbox.drain())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        outbox.wake_drain()  # must not raise InvalidStateError on the cancelled future
        await asyncio.wait_for(kept, 1)
        return cancelled.cancelled()

    assert loop.run_until_complete(scenario())
    outbox.wake_drain()  # nothing left: a no-op


# -- pause reasons ----------------------------------------------------------------------------------
def test_reading_resumes_only_when_every_reason_clears(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop)
    body, pipeline = 1, 2
    outbox.pause_reading(body)
    outbox.pause_reading(pipeline)
    outbox.pause_reading(body)  # the same reason twice counts once
    assert transport.calls == [("pause", b"")] and outbox.paused_by == body | pipeline
    outbox.resume_reading(body)
    assert transport.paused and outbox.paused_by == pipeline
    outbox.resume_reading(body)  # not paused for it any more: nothing happens
    assert transport.calls == [("pause", b"")]
    outbox.resume_reading(pipeline)
    assert transport.calls == [("pause", b""), ("resume", b"")] and outbox.paused_by == 0
    assert not transport.paused


def test_pause_reasons_are_kept_after_detaching(loop: asyncio.AbstractEventLoop) -> None:
    outbox, transport = attached(loop)
    outbox.transport = None
    outbox.pause_reading(4)
    outbox.resume_reading(4)
    assert transport.calls == [] and outbox.paused_by == 0
    outbox.pause_reading(4)
    assert outbox.paused_by == 4  # still recorded: a wire may test why it stopped reading


# -- detach -----------------------------------------------------------------------------------------
def test_detach_drops_what_is_queued_later_and_holds_no_cycle(loop: asyncio.AbstractEventLoop) -> None:
    import gc

    outbox, transport = attached(loop, limit=64)
    outbox.write(b"before")
    one_pass(loop)
    assert transport.calls == [("write", b"before")]
    outbox.detach()
    one_pass(loop)
    assert outbox.transport is None
    for _ in range(10):  # over the limit too: the queue stays bounded, nothing reaches the old transport
        outbox.write(b"x" * 40)
    one_pass(loop)
    assert not outbox.pending
    assert transport.calls == [("write", b"before")]
    # nothing the outbox refers to refers back to it (the stored bound flush did): refcounting frees it
    assert all(outbox not in gc.get_referents(ref) for ref in gc.get_referents(outbox))
