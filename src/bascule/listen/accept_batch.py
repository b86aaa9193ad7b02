"""Accepting several connections per loop pass while they queue up, on uvloop.

libuv accepts one connection per loop pass and per listening handle (libuv PR #3696, in every uvloop since
0.18): the second ``accept()`` of a pass nearly always finds nothing. Under a stream of new connections (a
client or a proxy opening one per request) that makes every pass serve one: the accept queue holds the
others, each response leaves alone, and the client, idle in between, is woken once per response. Measured
here (``Connection: close``, 32 clients, server on one core): 12.7k req/s, and 0.67 cross-CPU wake-ups of the
client per request; with up to 8 accepts per pass, 23.7k req/s and 0.03.

A listener accepts more per pass by listening through duplicates of its socket (``socket.dup``): each is one
more uvloop server on the same accept queue, and libuv accepts once per server per pass. A duplicate also
costs an ``accept()`` that finds nothing whenever fewer connections wait than servers listen: with 8, one
client at a time cost ~25% more server CPU per connection. So the duplicates are armed only while
connections queue up, and disarmed when they no longer do:

- unarmed, twice a second: the accept queue's length is looked at (:func:`queue_depth`); :data:`ARM_DEPTH`
  waiting arms them;
- armed: every accepted connection is counted, and the loop passes that accepted any; an interval that
  averages under :data:`KEEP_PER_PASS` accepts per pass (or had none) disarms them.

The queue's length, on Linux: a TCP listener's from ``TCP_INFO`` (``tcpi_unacked``, which a listening socket
fills with its queue length); a Unix one's from the kernel's socket diagnostics (``NETLINK_SOCK_DIAG``,
``UNIX_DIAG_RQLEN``: for a listening socket, the connections in its queue), asked by the socket's inode. The
Unix case is the usual nginx setup (``proxy_pass http://unix:...``), where nginx opens a new connection per
request unless its upstream keeps them alive. A netlink socket per look (five system calls with the ``fstat``,
twice a second, only while unarmed); the kernel finds the socket by walking the network namespace's Unix sockets
(~0.2 ms with 20k of them).

With the standard asyncio loop nothing of this is needed (it accepts up to the backlog per pass), nor where
the queue cannot be measured (not Linux; a kernel without ``unix_diag``): :func:`batching_applies` says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Final

from bascule.listen.listeners import describe

_log = logging.getLogger("bascule.error")

ACCEPT_BATCH: Final = 8  # listening servers per listener while armed: the socket and 7 duplicates
ARM_DEPTH: Final = 2  # connections waiting in the accept queue, at a look, that arm the duplicates
KEEP_PER_PASS: Final = 1.5  # accepts per loop pass, on average over an interval, that keep them armed
INTERVAL: Final = 0.5  # seconds between looks

_TCP_INFO: Final = getattr(socket, "TCP_INFO", None)
_UNACKED: Final = 24  # tcpi_unacked in struct tcp_info: after 8 bytes of u8 fields, rto, ato, snd_mss, rcv_mss

_NETLINK_SOCK_DIAG: Final = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY: Final = 20  # linux/sock_diag.h
_NLM_F_REQUEST: Final = 1
_UDIAG_SHOW_RQLEN: Final = 0x10  # linux/unix_diag.h
_UNIX_DIAG_RQLEN: Final = 4
_ALL_STATES: Final = 0xFFFFFFFF  # udiag_states: whatever the socket's state (a listener's is TCP_LISTEN)
_NO_COOKIE: Final = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE, both halves: look the socket up by its inode alone
_NLMSG_HEADER: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_UNIX_DIAG_REQ: Final = struct.Struct("=BBHIII2I")  # family, protocol, pad, states, inode, show, cookie
_UNIX_DIAG_MSG_SIZE: Final = 16  # family, type, state, pad, inode, cookie
_RTATTR: Final = struct.Struct("=HH")  # length, type

Factory = Callable[[], asyncio.BaseProtocol]
Serve = Callable[[socket.socket, Factory], Awaitable[asyncio.AbstractServer]]


def queue_depth(sock: socket.socket) -> int | None:
    """The connections waiting in a listening socket's accept queue (TCP or Unix), or None where that is not
    known."""
    if sock.family == socket.AF_UNIX:
        return unix_queue_depth(sock)
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _UNACKED + 4)
    except OSError:
        return None
    if len(info) < _UNACKED + 4:
        return None
    return int.from_bytes(info[_UNACKED:_UNACKED + 4], sys.byteorder)


def unix_queue_depth(sock: socket.socket) -> int | None:
    """The connections waiting in a listening Unix socket's queue, from the kernel's socket diagnostics; None
    where they cannot be asked (not Linux: no ``AF_NETLINK``; no ``unix_diag`` in the kernel; a sandbox refusing
    netlink). No ``sys.platform`` test: mypy, and so the compiled build, takes the platform it checks on as the
    only one and drops the other branch."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
        request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, _ALL_STATES, inode, _UDIAG_SHOW_RQLEN,
                                      _NO_COOKIE, _NO_COOKIE)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
            netlink.send(_NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST,
                                            1, 0) + request)
            # the kernel answers within send() (sock_diag handles a request synchronously): a reply not there
            # is none to wait for, and a blocking recv() would stall the loop this runs on
            reply = netlink.recv(4096, socket.MSG_DONTWAIT)
    except (OSError, AttributeError):  # OSError: BlockingIOError too; AttributeError: no AF_NETLINK here
        return None
    return rqlen_from_reply(reply)


def rqlen_from_reply(reply: bytes) -> int | None:
    """The queue length in a ``SOCK_DIAG_BY_FAMILY`` reply for one Unix socket (its ``UNIX_DIAG_RQLEN``
    attribute's first field, which for a listening socket counts the connections waiting); None for an error
    reply or one without it."""
    if len(reply) < _NLMSG_HEADER.size:
        return None
    length, kind, _flags, _seq, _port = _NLMSG_HEADER.unpack_from(reply)
    if kind != _SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: the socket is gone, or unix_diag is missing
        return None
    end = min(length, len(reply))
    offset = _NLMSG_HEADER.size + _UNIX_DIAG_MSG_SIZE
    while offset + _RTATTR.size <= end:
        size, attribute = _RTATTR.unpack_from(reply, offset)
        if size < _RTATTR.size:
            return None  # malformed: never loop on it
        if attribute == _UNIX_DIAG_RQLEN and offset + _RTATTR.size + 4 <= end:
            return int.from_bytes(reply[offset + _RTATTR.size:offset + _RTATTR.size + 4], sys.byteorder)
        offset += (size + 3) & ~3
    return None


def batching_applies(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
    """Whether a listener on ``loop`` gains from :class:`AcceptBatch`: uvloop's, its queue measurable (which
    :func:`queue_depth` knows for TCP and Unix listeners only)."""
    return type(loop).__module__.startswith("uvloop") and queue_depth(sock) is not None


class AcceptBatch:
    """One listener's duplicate servers, armed while connections queue up (the module docstring says when).

    :meth:`factory` is the protocol factory every server of the listener is given, its own included: it counts
    accepts while armed, and makes the connection's protocol with ``make``. ``serve(sock, factory)`` starts a
    server on a duplicate (``loop.create_server(factory, sock=sock, ...)`` with the listener's options); the
    server owns the duplicate and closes it with itself.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, make: Factory, serve: Serve,
                 size: int = ACCEPT_BATCH, scheme: str = "http") -> None:
        self.loop = loop
        self.sock = sock
        self.name = describe(sock, scheme)  # as the startup line names the listener (``scheme``: Listener.scheme)
        self.make = make
        self.serve = serve
        self.size = size
        self.extras: list[asyncio.AbstractServer] = []
        self.armed = False  # from arming (the duplicates may still be opening) to disarming
        self.closed = False
        self.accepts = 0  # while armed: connections accepted in this interval
        self.passes = 0  # while armed: loop passes in this interval that accepted any
        self._in_pass = False
        self._opening: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._warned = False

    def start(self) -> None:
        self._timer = self.loop.call_later(INTERVAL, self._look)

    def factory(self) -> asyncio.BaseProtocol:
        if self.armed:
            self.accepts += 1
            if not self._in_pass:
                self._in_pass = True
                self.passes += 1
                self.loop.call_soon(self._pass_over)
        return self.make()

    def _pass_over(self) -> None:
        self._in_pass = False

    def _look(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self.armed:
            if not self.passes or self.accepts < KEEP_PER_PASS * self.passes:
                self.disarm()
        else:
            depth = queue_depth(self.sock)
            if depth is not None and depth >= ARM_DEPTH:
                self.arm()
        self.accepts = self.passes = 0
        self._timer = self.loop.call_later(INTERVAL, self._look)

    def arm(self) -> None:
        """Open the duplicates (in a task: starting a server is a coroutine)."""
        if self.armed or self.closed:
            return
        self.armed = True
        opening = self._opening
        if opening is not None and not opening.done():
            return  # an earlier opening is still on its way (disarmed meanwhile): it goes on, armed again
        _log.debug("connections queue up on %s: accepting up to %d per loop pass", self.name, self.size)
        self._opening = self.loop.create_task(self._open())

    async def _open(self) -> None:
        while self.armed and not self.closed and len(self.extras) < self.size - 1:
            try:
                dup = self.sock.dup()
            except OSError as exc:  # out of descriptors: go on with what is open
                self._warn(f"could not duplicate the listening socket ({exc})")
                return
            try:
                server = await self.serve(dup, self.factory)
            # whatever the loop raised, the duplicate is ours to close; a name of its own, as compiled code gives
            # a local one type (tests/test_build.py)
            except Exception as failure:
                dup.close()
                self._warn(f"could not listen on a duplicate of the listening socket ({failure})")
                return
            if self.armed and not self.closed:
                self.extras.append(server)
            else:
                server.close()  # disarmed or closed meanwhile

    def _warn(self, what: str) -> None:
        """Once per listener: arming is retried at every other look (a failed one disarms at the next), and a
        short supply of descriptors lasts."""
        if not self._warned:
            self._warned = True
            _log.warning("%s: %s; it accepts fewer connections per loop pass", self.name, what)

    def disarm(self) -> None:
        """Close the duplicates: the listener is back to one accept per pass."""
        if self.armed and not self.closed:
            _log.debug("connections no longer queue up on %s: accepting one per loop pass", self.name)
        self.armed = False
        extras, self.extras = self.extras, []
        for server in extras:
            server.close()

    def close(self) -> None:
        """The listener stops (graceful shutdown): the duplicates stop accepting with it, for good."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.disarm()
