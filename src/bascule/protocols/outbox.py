"""One connection's write plumbing, for every wire: write coalescing, drain waiters, and why reading is paused.

Write coalescing. Bytes queued during one loop pass leave in one ``transport.write`` at its end: measured
under load (uvloop, 64 keep-alive connections, one core), writing each HTTP/1.1 response from inside the read
callback gave ~18k req/s, deferring the write to the end of the pass ~33k. It also joins streamed chunks,
pipelined responses, HTTP/2 frames and WebSocket frames. Once ``limit`` bytes are queued they are written at
once, without waiting for the end of the pass (which an app that awaits nothing but ``send`` never reaches),
so the transport's high-water mark is seen in time and ``drain`` bounds what piles up. Anything that must
follow the queued bytes (FIN, close, sendfile, a protocol hand-over) calls :meth:`Outbox.flush` first.

One end-of-pass callback per server, not per connection (:class:`PassFlush`): a connection with bytes queued
joins its server's list of flushes due, and the first to join schedules the one ``call_soon`` that runs them
all. With a keep-alive connection per client that saves a handle per response (callgrind, wrk on 64
connections, ASGI ``GET /``: 60.5k -> 59.3k instructions per request); one connection alone pays ~500 more
per request for the list (benchmarks/callgrind.py: 61.6k -> 62.1k, +0.8%).

Every :data:`FLUSH_AT` connections the list is flushed at once, mid-pass. Written only at the pass's end, a
server with 1000 busy connections sent each pass's ~900 responses in one burst after reading them all, and
the client (wrk, on its own core) sat idle through the reading and then worked through the burst. Flushed
every 64 connections, the client answers while the pass is still reading (the passes stay as large: ~0.001
epoll waits per request before and after), and the tail tightens (wrk, 1000 connections, ASGI ``GET /``,
server on one core, 3 rounds): p99 38-40 ms at a 21 ms median before; 29-35 ms after, at 19-30 ms
medians, with granian-asgi beside it at 32-43 ms. WSGI loop mode's p99 went from 34 to 24-26 ms. Up to 64
connections the flush stays at the end of the pass as before; write calls stay one per connection per pass
(the connection whose bytes make the 65th due is not flushed with the 64 before it: the rest of what it
writes in that call still joins its first bytes), except for a connection that writes again later in the
same pass, after its flush.

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
from typing import Final, Protocol

COALESCE_LIMIT = 64 * 1024  # queued bytes written at once, without waiting for the end of the pass
#: connections due that are flushed at once, mid-pass (the module's docstring says why 64)
FLUSH_AT: Final = 64


class Sink(Protocol):
    """What the outbox writes to and pauses: an asyncio transport, or a WebSocket's pipe over an HTTP/2 stream."""

    def write(self, data: bytes) -> None: ...

    def writelines(self, list_of_data: Iterable[bytes]) -> None: ...

    def is_closing(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class PassFlush:
    """The flushes due in this loop pass, for every connection of one server on one loop (see the module's
    docstring): one per ServerContext, which lives as long as the server's connections."""

    __slots__ = ("due", "end_now", "loop", "running", "scheduled", "soon")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: list[Callable[[], None]] = []  # the flushers of connections with bytes queued, in order
        self.soon = loop.call_soon  # bound once: compiled code looks a non-native object's method up per call
        self.scheduled = False  # the end-of-pass run is on the loop's ready queue
        self.running = False  # a run is under way: one started inside it would flush a connection twice
        # bound once, like ``soon`` (a bound method made per pass cost ~250 instructions): a cycle, freed by the
        # collector, for the one PassFlush a server has
        self.end_now = self.end_of_pass

    def add(self, flusher: Callable[[], None]) -> None:
        """A connection has bytes queued: flush them at the end of this pass. With :data:`FLUSH_AT` others due
        already, those go now, before this one joins: its own bytes stay queued, so the rest of what it
        writes in this call (a body after its head, DATA after HEADERS) still leaves in one write."""
        due = self.due
        if len(due) >= FLUSH_AT and not self.running:  # a run under way reaches the newcomers itself
            self.run()
        due.append(flusher)
        if not self.scheduled:
            self.scheduled = True
            self.soon(self.end_now)

    def end_of_pass(self) -> None:
        try:
            self.run()
        except BaseException:  # a flush that raised past run()'s handler: another pass runs the rest
            if self.due:
                self.soon(self.end_now)
            else:
                self.scheduled = False
            raise
        self.scheduled = False  # scheduled until now: a connection that joined during the run was flushed by it

    def run(self) -> None:
        """Flush every connection due, emptying the list in place (a pass costs no new list). A connection
        that joins while it runs (one flush making another connection write) is flushed by the same run.
        A flush that raises is reported as its own loop handle's failure was, and the rest still run; one
        that raises past that (KeyboardInterrupt) leaves the rest due, for the end-of-pass run (scheduled while
        any is due). ``except`` rather than ``finally`` for that: compiled, it costs nothing when nothing
        is raised."""
        if self.running:
            return
        due = self.due
        i = 0
        self.running = True
        try:
            while i < len(due):
                flusher = due[i]
                i += 1
                try:
                    flusher()
                except Exception as exc:
                    self.loop.call_exception_handler({"message": "a connection's flush failed", "exception": exc,
                                                      "handle": flusher})
        except BaseException:
            self.running = False
            del due[:i]
            raise
        self.running = False
        due.clear()


class Outbox:
    """Queued bytes, drain waiters and pause reasons of one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = COALESCE_LIMIT, join_below: int = 0,
                 skip_closing: bool = False, end_of_pass: PassFlush | None = None) -> None:
        """``limit``: bytes queued that are written at once. ``join_below``: several pieces that add up to less
        are joined into one buffer (one copy is cheaper than an iovec each); larger ones go out with
        ``writelines``, without a copy. ``skip_closing``: drop queued bytes once the transport is closing
        (HTTP/2 and WebSocket may still queue a frame after closing it; HTTP/1.1 does not). ``end_of_pass``: the
        loop's flushes due, shared by the server's connections (ServerContext.end_of_pass); one of its own if
        not given."""
        self.loop = loop
        self._end_of_pass = PassFlush(loop) if end_of_pass is None else end_of_pass
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
        """Queue bytes; everything queued in this loop pass leaves in one write at its end (or mid-pass, with
        other connections': :class:`PassFlush`), or at once when ``limit`` bytes are queued."""
        pending = self.pending
        pending.append(data)
        self.size += len(data)
        if self.size >= self.limit:
            self.flusher()
        elif len(pending) == 1:
            self._end_of_pass.add(self.flusher)

    def queue(self, data: bytes) -> None:
        """Queue bytes without scheduling a flush (the caller has, or flushes itself)."""
        self.pending.append(data)
        self.size += len(data)

    def flush(self) -> None:
        """Hand the queued bytes to the transport now (dropped if it is gone)."""
        pending = self.pending
        if pending:
            transport = self.transport
            try:
                if transport is not None and not (self.skip_closing and transport.is_closing()):
                    if len(pending) == 1:
                        transport.write(pending[0])
                    elif self.size < self.join_below:
                        transport.write(b"".join(pending))
                    else:
                        transport.writelines(pending)
            except BaseException:  # a write that failed drops them too: queued behind them, later bytes would
                pending.clear()  # never be due again
                self.size = 0
                raise
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
