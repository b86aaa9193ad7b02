"""Sending part of a regular file as a response body from the event loop: what ``Exchange.send_file`` runs.

Two ways, chosen by the wire:

- Cleartext HTTP/1.1 (:func:`to_socket`): ``os.sendfile`` from the file to the socket, the kernel copying
  page cache to socket without a trip through Python. The socket is non-blocking (the loop's), so a full
  socket buffer gives EAGAIN and we wait for it to be writable on a duplicate of its descriptor (the loop
  refuses to watch a descriptor a transport owns). The duplicate is closed as soon as the send ends: it
  would otherwise keep a socket the transport closed open.
- Everywhere else, TLS and HTTP/2 (:func:`send_chunks`): the file is read in :data:`FILE_CHUNK` pieces and
  each is sent as body, waiting on ``drain()`` like any other body, so the wire's flow control applies (the
  transport's high-water mark; HTTP/2 stream and connection windows and the streams' turn-taking).

Reads never block the loop on a slow disk: a piece is first read with ``preadv(RWF_NOWAIT)``, which takes
only what the page cache holds and fails with EAGAIN rather than wait for the disk; only then is it read on
a worker thread (the loop's default executor). A file served often stays cached and costs no thread hop.
The caller opened the file and closes it; nothing here closes it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bascule.protocols.exchange import Exchange
    from bascule.protocols.outbox import Outbox

FILE_CHUNK = 64 * 1024  # bytes read and sent at a time where sendfile cannot be used
CORK_MIN = 64 * 1024  # bodies above this many bytes are sent corked (see set_cork)
SENDFILE_CHUNK = 1024 * 1024  # bytes per os.sendfile call before other connections get a turn
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux 4.14+; elsewhere every read goes to a thread
_NO_NOWAIT = frozenset((errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS))  # the filesystem or kernel cannot
_log = logging.getLogger("bascule.error")


class ChunkReader:
    """Reads pieces of one file: from the page cache on the loop when it can, else on a worker thread."""

    __slots__ = ("fd", "loop", "nowait")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.nowait = _NOWAIT != 0

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; b'' at the end of the file."""
        if self.nowait:
            buf = bytearray(size)
            try:
                n = os.preadv(self.fd, [buf], offset, _NOWAIT)
            except BlockingIOError:
                n = -1  # not in the page cache: the disk would be waited for
            except OSError as exc:
                if exc.errno not in _NO_NOWAIT:
                    raise
                self.nowait = False
                n = -1
            if n >= 0:
                return bytes(buf) if n == size else bytes(buf[:n])
        return await self.loop.run_in_executor(None, os.pread, self.fd, size, offset)


def transport_fd(transport: asyncio.BaseTransport | None) -> int | None:
    """The descriptor of a transport's socket, for os.sendfile; None where it exposes none (or is gone).

    Connections ask on first use and keep the answer: uvloop builds a socket object with a getsockname()
    system call for get_extra_info("socket"), which most connections, never sending a file, need not pay.
    """
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


async def send_chunks(ex: Exchange, fd: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``fd`` from ``offset`` as body pieces under flow control; returns the bytes
    sent (fewer if the client went away, the response was given up, or the file is shorter).

    A file that ends before ``count`` (it shrank after its size was taken) aborts the response, as
    :func:`to_socket`'s callers do: with pieces each framed on their own (chunked, HTTP/2 DATA) the end the
    caller sends next would otherwise look like a complete response to the client."""
    reader = ChunkReader(ex.loop, fd)
    sent = 0
    while sent < count and not ex.disconnected and not ex.finished:
        data = await reader.read(offset + sent, min(FILE_CHUNK, count - sent))
        if not data or ex.disconnected or ex.finished:
            break
        ex.send_body(data)
        sent += len(data)
        if ex.write_paused:
            await ex.drain()
    if sent < count and not ex.disconnected and not ex.finished:
        _log.error("file shorter than the %d bytes to send (%d sent) for %s %s; response aborted",
                   count, sent, ex.method, ex.raw_path.decode("latin-1"))
        ex.abort()
    return sent


async def flush_transport(outbox: Outbox, transport: asyncio.Transport | None) -> None:
    """Wait until everything written so far has left the transport's buffer: what ``to_socket`` needs first,
    since sendfile writes to the socket behind the transport's back (shared by the cleartext wires).

    While bytes remain, the high-water mark is lowered to 0 for a moment: the transport pauses the protocol
    at once and resumes it when its buffer is empty, so this waits on the outbox's drain rather than polling.
    Returns early once the connection is done with the transport (``outbox.transport`` None).
    """
    outbox.flush()
    while transport is not None and outbox.transport is not None and transport.get_write_buffer_size():
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            if outbox.write_paused:
                await outbox.drain()
            else:  # a transport that does not pause on its limits
                await asyncio.sleep(0.001)
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=high, low=low)


async def file_after_queue(ex: Exchange, outbox: Outbox, transport: asyncio.Transport | None, sock: int, fd: int,
                           offset: int, count: int) -> bool:
    """The cleartext wires' ``send_file`` once the caller has checked the response and the declared length
    (HTTP/1.1, uwsgi, SCGI): wait until what is queued has left, ``os.sendfile`` the bytes, count them in
    ``ex.sent``. A file shorter than ``count`` is logged and aborts the response: the declared length, or the
    chunk's size, can no longer be met. True when all ``count`` bytes went. A body above CORK_MIN goes corked
    (:func:`set_cork`) from before what is queued (the head) leaves until its last byte."""
    corked = count > CORK_MIN and set_cork(sock, True)
    try:
        await flush_transport(outbox, transport)
        if ex.disconnected or ex.finished:
            return False
        sent = await to_socket(ex, sock, fd, offset, count)
    finally:
        if corked:
            set_cork(sock, False)
    ex.sent += sent
    if sent < count:
        if not ex.disconnected and not ex.finished:
            _log.error("file shorter than the %d bytes to send (%d sent) for %s %s; connection closed",
                       count, sent, ex.method, ex.raw_path.decode("latin-1"))
            ex.abort()
        return False
    return True


async def to_socket(ex: Exchange, sock: int, fd: int, offset: int, count: int) -> int:
    """``os.sendfile`` ``count`` bytes of ``fd`` to the socket ``sock``, whose transport has nothing queued;
    returns the bytes sent (fewer if the client went away or the file is shorter). ``ex.writable_hook``
    wakes the wait for writability when the connection is lost."""
    loop = ex.loop
    sent = 0
    watch = -1
    waiter: asyncio.Future[None] | None = None

    def wake() -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    hook = ex.writable_hook
    ex.writable_hook = wake
    try:
        while sent < count and not ex.disconnected:
            size = min(count - sent, SENDFILE_CHUNK)
            try:
                n = os.sendfile(sock, fd, offset + sent, size)
            except BlockingIOError:
                if watch < 0:
                    watch = os.dup(sock)
                waiter = loop.create_future()
                loop.add_writer(watch, wake)
                try:
                    await waiter
                finally:
                    loop.remove_writer(watch)
                continue
            except OSError:  # EPIPE, ECONNRESET: the client is gone (the transport sees it too)
                break
            if n == 0:
                break  # the file ended before ``count``
            sent += n
            if n == size and sent < count:
                await asyncio.sleep(0)  # the socket took it all: let the other connections have a turn
    finally:
        ex.writable_hook = hook
        if watch >= 0:
            os.close(watch)
    return sent


def set_cork(sock: int, on: bool) -> bool:
    """TCP_CORK on or off for the socket ``sock`` (the transport's descriptor, which stays its own).

    Corked, the kernel sends only full segments; uncorking sends what is left. A large file sent without it
    (the socket has TCP_NODELAY) reached the client in smaller pieces, and the receiving side paid ~1.8x the
    kernel time per MiB: wrk's core saturated at 1.9k req/s of 1 MiB, nginx's ``tcp_nopush`` (the same option)
    measured 2.7k, and 1.76k without it. False when it does not apply (not TCP, the socket is gone).

    Two system calls (nginx makes one): the socket object is made around the descriptor with its family, type
    and protocol given, so Python only checks it is a socket (getsockname) instead of also asking for the
    type and protocol, and it is detached, never closed, so the descriptor is not duplicated either (a dup,
    the three queries and a close were four calls more each time)."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock)
    except OSError:
        return False
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
    except OSError:
        return False
    finally:
        s.detach()
    return True
