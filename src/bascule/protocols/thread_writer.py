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
hand-over to another protocol), and which waits for a write in progress (``lock``). Until then the socket
stays open: with uvloop's order the duplicate is closed first and the client sees the end at once; with a
transport that closed its own first, one loop pass later, when ``close`` runs.

A duplicate is a second descriptor per connection: :data:`FD_CEILING` keeps them to the lower half of the
process's descriptor limit (descriptor numbers are given lowest first, so a socket numbered above it means the
process is already using that many), and a connection that gets none sends through the loop, as before.

The writes never block: the socket is non-blocking (uvloop's), and what it does not take is returned for the
loop to queue behind (the caller's business: see H1Exchange.send_from_thread).
"""

from __future__ import annotations

import os
import resource
import threading


def _ceiling() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft // 2


FD_CEILING = _ceiling()
"""Sockets numbered from here up get no duplicate: the other half of the descriptor limit stays for accept()."""


class ThreadWriter:
    """A duplicate of one connection's socket descriptor, written to by pool threads under ``lock``."""

    __slots__ = ("fd", "lock")

    def __init__(self, fd: int) -> None:
        """Duplicate ``fd`` (on the loop, while the transport is open: its number is still this socket's)."""
        self.fd = os.dup(fd)  # not inheritable (PEP 446): a subprocess the app starts does not get it
        self.lock = threading.Lock()

    def send(self, head: bytes, body: bytes = b"") -> bytes:
        """Write ``head`` then ``body`` (one system call); return what the socket did not take, to be
        written after it by the loop. Call with ``lock`` held, and only while ``fd`` is not -1.

        A socket that fails (the client reset it) takes nothing: the loop's own write of the rest then meets
        the error and closes the connection as for any other write."""
        try:
            n = os.writev(self.fd, (head, body)) if body else os.write(self.fd, head)
        except OSError:  # EAGAIN: the buffer is full; EPIPE, ECONNRESET: the loop finds out by itself
            n = 0
        if n >= len(head):
            return body[n - len(head):] if n > len(head) else body
        return head[n:] + body

    def close(self) -> None:
        """Close the duplicate once no thread writes to it (on the loop; once; later sends are refused)."""
        with self.lock:
            fd = self.fd
            self.fd = -1
        if fd >= 0:
            os.close(fd)
