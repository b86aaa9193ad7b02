"""One connection's write plumbing, for every wire: write coalescing, drain waiters, and why reading is paused.

Write coalescing. Bytes queued during one loop pass leave in one ``transport.write`` at its end: measured
under load (uvloop, 64 keep-alive connections, one core), writing each HTTP/1.1 response from inside the read
callback gave ~18k req/s, deferring the write to the end of the pass ~33k. It also joins streamed chunks,
pipelined responses, HTTP/2 frames and WebSocket frames. Once ``limit`` bytes are queued they are written at
once, without waiting for the end of the pass (which an app that awaits nothing but ``send`` never reaches),
so the transport's high-water mark is seen in time and ``drain`` bounds what piles up. Anything that must
follow the queued bytes (FIN, close, sendfile, a protocol hand-over) calls :meth:`Outbox.flush` first.

Drain waiters. While the transport is above its high-water mark (``write_paused``, set by the protocol's
``pause_writing``), senders wait in :meth:`Outbox.drain`; ``resume_writing`` wakes them all
(:meth:`Outbox.wake_drain`), and so does the connection's end. HTTP/2's streams wait on their own, one waiter
each, because they take turns (protocols/h2/output.py); they use the coalescing only.

Pause reasons. Reading is paused for reasons of the wire's own (a body nobody reads yet, a pipeline waiting,
a WebSocket queue full, answers that cannot be written): each is a bit, named by the wire. The transport is
paused when the first reason appears and resumed when the last one clears, so no reason can undo another's.

One instance per connection, created with it; a plain class of direct method calls (compiled by mypyc), so
a response's path costs an attribute read and a call, and no object per request. ``transport`` is None
before the connection is made and once the connection is done with it (closed, or handed to another
protocol): writes are then dropped and pauses change nothing on the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

COALESCE_LIMIT = 64 * 1024  # queued bytes written at once, without waiting for the end of the pass


class Sink(Protocol):
    """What the outbox writes to and pauses: an asyncio transport, or a WebSocket's pipe over an HTTP/2 stream."""

    def write(self, data: bytes) -> None: ...

    def writelines(self, list_of_data: Iterable[bytes]) -> None: ...

    def is_closing(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Outbox:
    """Queued bytes, drain waiters and pause reasons of one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = COALESCE_LIMIT, join_below: int = 0,
                 skip_closing: bool = False) -> None:
        """``limit``: bytes queued that are written at once. ``join_below``: several pieces that add up to less
        are joined into one buffer (one copy is cheaper than an iovec each); larger ones go out with
        ``writelines``, without a copy. ``skip_closing``: drop queued bytes once the transport is closing
        (HTTP/2 and WebSocket may still queue a frame after closing it; HTTP/1.1 does not)."""
        self.loop = loop
        self.transport: Sink | None = None
        self.limit = limit
        self.join_below = join_below
        self.skip_closing = skip_closing
        self.pending: list[bytes] = []
        self.size = 0  # bytes in pending
        self.write_paused = False  # the transport's buffer is above its high-water mark
        self.paused_by = 0  # the reasons reading is paused: bits named by the wire
        self._waiters: list[asyncio.Future[None]] = []
        self.flusher: Callable[[], None] = self.flush
        """What runs at the end of the loop pass: :meth:`flush`, or a wire's own that calls it. A bound method of
        this object is a reference cycle: :meth:`detach` breaks it when the connection is gone."""

    # -- coalescing ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue bytes; everything queued in this loop pass leaves in one write at its end, or at once
        when ``limit`` bytes are queued."""
        pending = self.pending
        if not pending:
            self.loop.call_soon(self.flusher)
        pending.append(data)
        self.size += len(data)
        if self.size >= self.limit:
            self.flusher()

    def queue(self, data: bytes) -> None:
        """Queue bytes without scheduling a flush (the caller has, or flushes itself)."""
        self.pending.append(data)
        self.size += len(data)

    def flush(self) -> None:
        """Hand the queued bytes to the transport now (dropped if it is gone)."""
        pending = self.pending
        if pending:
            transport = self.transport
            if transport is not None and not (self.skip_closing and transport.is_closing()):
                if len(pending) == 1:
                    transport.write(pending[0])
                elif self.size < self.join_below:
                    transport.write(b"".join(pending))
                else:
                    transport.writelines(pending)
            pending.clear()
            self.size = 0

    def detach(self) -> None:
        """The connection is gone, or its transport belongs to another protocol now: nothing more is written.

        The flusher becomes the queue's own ``clear`` (bytes queued later are dropped, as :meth:`flush` would
        with no transport), which lets go of the stored ``self.flush``: that cycle would leave every closed
        connection to the cyclic collector (~22k instructions each, benchmarks/callgrind.py ``h1close``).
        """
        self.transport = None
        self.flusher = self.pending.clear

    def discard(self) -> None:
        """Drop the queued bytes (the connection is gone)."""
        self.pending.clear()
        self.size = 0

    # -- drain --------------------------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait until writing may go on: at once if the transport is not paused or the connection is gone."""
        if self.write_paused and self.transport is not None:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            await waiter

    def wake_drain(self) -> None:
        """Wake every sender waiting in :meth:`drain` (a waiter cancelled meanwhile is skipped)."""
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- reading ------------------------------------------------------------------------------------
    def pause_reading(self, reason: int) -> None:
        """Pause reading for ``reason`` (the transport is paused with the first reason)."""
        if not self.paused_by and self.transport is not None:
            self.transport.pause_reading()
        self.paused_by |= reason

    def resume_reading(self, reason: int) -> None:
        """``reason`` is over; reading resumes once no reason is left."""
        if self.paused_by & reason:
            self.paused_by &= ~reason
            if not self.paused_by and self.transport is not None:
                self.transport.resume_reading()
