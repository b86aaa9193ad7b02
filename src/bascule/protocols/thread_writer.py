"""A connection's socket for a WSGI pool thread to write a complete response to, without the event loop.

Why: in ``--wsgi-mode threads`` every response used to cross back to the loop to be written. The loop then
woke, wrote, and slept again before the client could send its next request, and the two threads passed the
GIL to each other for every small batch of requests: 1.7 context switches per request under wrk (64
connections, one core). A response the thread writes itself reaches the client while the thread goes on with
the next task, and the loop, when it wakes for the bookkeeping, finds the next requests already in.

Why a descriptor of its own (``os.dup``): a thread writing to the transport's own number would depend on when
the transport closes it. uvloop (0.23) and asyncio close it only after ``connection_lost`` has returned (on
close, abort and the client's reset alike), and the connection closes this writer inside ``connection_lost``;
but a transport that closed its descriptor first would let a connection accepted meanwhile be given the same
number, and a thread write one client's response to another. The duplicate keeps this socket's number ours
until :meth:`close`, which the connection calls as it lets go of the transport (``connection_lost``, a
hand-over to another protocol). Until then the socket stays open: with uvloop's order the duplicate is closed
first and the client sees the end at once; with a transport that closed its own first, one loop pass later.

Why no lock: a write in progress holds the number (``_writing``), and a :meth:`close` that comes meanwhile
leaves the closing to that write, which closes the duplicate as it returns. The loop never waits for a pool
thread. Each side's look and mark are attribute reads and writes with no call between them, so the GIL cannot
pass to the other thread in between (compiled, or interpreted: CPython hands the GIL over only at calls and
backward jumps), and one of the two always sees the other (this relies on the GIL, as gateways/threads.py
does: a free-threaded build would need the lock back). A ``threading.Lock`` cost the hot path ~1,300
instructions per response (its ``__enter__`` parses its arguments, its ``__exit__`` is looked up and bound on
every use: callgrind, wrk, 64 connections).

A duplicate is a second descriptor per connection: :data:`FD_CEILING` keeps them to the lower half of the
process's descriptor limit (descriptor numbers are given lowest first, so a socket numbered above it means the
process is already using that many), and a connection that gets none sends through the loop, as before.

The writes never block: the socket is non-blocking (uvloop's), and what it does not take is returned for the
loop to queue behind (the caller's business: see H1Exchange.send_from_thread).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from typing import Final


def _ceiling() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft // 2


FD_CEILING = _ceiling()
"""Sockets numbered from here up get no duplicate: the other half of the descriptor limit stays for accept()."""


class ThreadWriter:
    """A duplicate of one connection's socket descriptor, written to by pool threads, one write at a time."""

    __slots__ = ("_closing", "_dup", "_writing", "buffered", "fd")

    def __init__(self, fd: int, buffered: Callable[[], int]) -> None:
        """Duplicate ``fd`` (on the loop, while the transport is open: its number is still this socket's).
        ``buffered``: the transport's ``get_write_buffer_size``, bound once (a thread may write only while it
        holds nothing: H1Exchange.send_from_thread)."""
        self._dup = os.dup(fd)  # not inheritable (PEP 446): a subprocess the app starts does not get it
        self.fd = self._dup  # -1 once closed: no write starts after that
        self._writing = 0  # writes in progress (pool threads; one at a time in practice)
        self._closing = False  # close() came during a write: the write closes the duplicate as it returns
        self.buffered = buffered

    def send(self, head: bytes, body: bytes = b"") -> bytes:
        """Write ``head`` then ``body`` (one system call); return what the socket did not take, to be
        written after it by the loop: everything once the writer is closed.

        A socket that fails (the client reset it) takes nothing: the loop's own write of the rest then meets
        the error and closes the connection as for any other write."""
        fd = self.fd
        if fd < 0:
            return head + body
        self._writing += 1  # (no call since the look above)
        try:
            n = os.writev(fd, (head, body)) if body else os.write(fd, head)
        except OSError:  # EAGAIN: the buffer is full; EPIPE, ECONNRESET: the loop finds out by itself
            n = 0
        except BaseException:  # (not `finally`: compiled, it costs every write) a close must not be left waiting
            self._done()
            raise
        self._done()
        if n >= len(head):
            return body[n - len(head):] if n > len(head) else body
        return head[n:] + body

    def sendfile(self, file_fd: int, offset: int, count: int) -> int:
        """One ``os.sendfile`` of the file's bytes: the count sent (0: the end of the file), :data:`ROOM` (the
        buffer is full) or :data:`STOP` (the socket failed, or the writer is closed)."""
        fd = self.fd
        if fd < 0:
            return STOP
        self._writing += 1
        try:
            n = os.sendfile(fd, file_fd, offset, count)
        except BlockingIOError:
            n = ROOM
        except OSError:
            n = STOP
        except BaseException:
            self._done()
            raise
        self._done()
        return n

    def _done(self) -> None:
        """A write returned: the last one closes the duplicate if close() came meanwhile."""
        self._writing -= 1
        if self._closing and not self._writing:  # (no call since the decrement)
            self._closing = False
            os.close(self._dup)

    def close(self) -> None:
        """Close the duplicate (on the loop; once; later writes are refused), or leave that to the write in
        progress, which does it as it returns."""
        if self.fd < 0:
            return
        self.fd = -1
        if self._writing:  # (no call since the look at fd)
            self._closing = True
        else:
            os.close(self._dup)


ROOM: Final = -1
"""ThreadWriter.sendfile: the socket's buffer is full."""
STOP: Final = -2
"""ThreadWriter.sendfile: the socket failed, or the connection closed the writer."""
