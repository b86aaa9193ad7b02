"""Tests for bascule.listen.accept_batch: accepting several connections per loop pass on uvloop while they queue
up, over real loopback sockets.

The loop pass of each accept is told by a callback that puts itself back with ``call_soon``: uvloop runs the
callbacks that are ready when a pass starts, so it runs once per pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop
from conftest import serve_in_thread

from bascule.listen import accept_batch
from bascule.listen.accept_batch import AcceptBatch, batching_applies, queue_depth

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the accept queue's length (TCP_INFO, sock_diag) is Linux's")


@contextlib.contextmanager
def listening(backlog: int = 64) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connect(sock: socket.socket, n: int) -> list[socket.socket]:
    """``n`` clients whose handshakes the kernel completes; they wait in the accept queue until accepted."""
    clients = []
    for _ in range(n):
        client = socket.create_connection(sock.getsockname())
        clients.append(client)
    return clients


class Passes:
    """Numbers the loop passes (a callback that reschedules itself runs once per pass)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.number = 0
        self.stopped = False
        loop.call_soon(self._next)

    def _next(self) -> None:
        self.number += 1
        if not self.stopped:
            self.loop.call_soon(self._next)


class Recorder(asyncio.Protocol):
    """A protocol that closes at once; the pass of each accept is noted by the factory."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def batch_on(loop: asyncio.AbstractEventLoop, sock: socket.socket, accepted: list[int], passes: Passes,
             opened: list[asyncio.AbstractServer], given: list[socket.socket] | None = None,
             suspend: bool = False) -> AcceptBatch:
    """``given`` collects the duplicates handed to ``serve``; ``suspend``: ``serve`` lets the loop run once before
    it starts the server (uvloop's create_server(sock=) never suspends, so only then can the batch be disarmed
    or closed while a duplicate is being opened)."""
    def make() -> asyncio.BaseProtocol:
        accepted.append(passes.number)
        return Recorder()

    async def serve(s: socket.socket, factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.AbstractServer:
        if given is not None:
            given.append(s)
        if suspend:
            await asyncio.sleep(0)
        server = await loop.create_server(factory, sock=s, backlog=64)
        opened.append(server)
        return server

    return AcceptBatch(loop, sock, make, serve)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.001)


def run_uvloop(coro_fn: Callable[[asyncio.AbstractEventLoop], Any]) -> Any:
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn(loop))
    finally:
        loop.close()


# -- the accept queue's length ----------------------------------------------------------------------


@linux_only
def test_queue_depth_counts_the_connections_waiting_to_be_accepted() -> None:
    with listening() as sock:
        assert queue_depth(sock) == 0
        clients = connect(sock, 5)
        try:
            assert queue_depth(sock) == 5
            sock.setblocking(True)
            sock.accept()[0].close()
            sock.accept()[0].close()
            assert queue_depth(sock) == 3
        finally:
            for c in clients:
                c.close()


@contextlib.contextmanager
def listening_unix(path: str, backlog: int = 64) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def connect_unix(path: str, n: int) -> list[socket.socket]:
    clients = []
    for _ in range(n):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        clients.append(client)
    return clients


@linux_only
def test_queue_depth_counts_a_unix_listeners_waiting_connections(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    with listening_unix(path) as sock:
        assert queue_depth(sock) == 0
        clients = connect_unix(path, 5)
        try:
            assert queue_depth(sock) == 5
            sock.setblocking(True)
            sock.accept()[0].close()
            assert queue_depth(sock) == 4
        finally:
            for c in clients:
                c.close()


@linux_only
def test_a_unix_queue_is_unknown_where_netlink_is_refused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket

    def refusing(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_NETLINK:
            raise PermissionError(1, "Operation not permitted")  # a sandbox's seccomp
        return real(family, *args, **kwargs)

    with listening_unix(str(tmp_path / "s")) as sock:
        monkeypatch.setattr(socket, "socket", refusing)
        assert queue_depth(sock) is None
        loop = uvloop.new_event_loop()
        try:
            assert not batching_applies(loop, sock)
        finally:
            loop.close()


def test_a_unix_queue_is_unknown_without_af_netlink(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """As off Linux, where the socket module has no AF_NETLINK."""
    with listening_unix(str(tmp_path / "s")) as sock:
        monkeypatch.delattr(socket, "AF_NETLINK", raising=False)
        assert queue_depth(sock) is None


def reply(kind: int, *attributes: tuple[int, bytes], length: int | None = None) -> bytes:
    """A SOCK_DIAG_BY_FAMILY reply: netlink header, unix_diag_msg, then rtattrs (padded to 4)."""
    body = bytes(16)
    for attribute, payload in attributes:
        body += struct.pack("=HH", 4 + len(payload), attribute) + payload + bytes(-len(payload) % 4)
    return struct.pack("=IHHII", length if length is not None else 16 + len(body), kind, 0, 1, 0) + body


def test_the_queue_length_is_read_from_the_rqlen_attribute_and_nothing_else() -> None:
    rqlen = struct.pack("=II", 7, 64)
    assert accept_batch.rqlen_from_reply(reply(20, (4, rqlen))) == 7
    assert accept_batch.rqlen_from_reply(reply(20, (0, b"/tmp/s\0"), (4, rqlen))) == 7  # after UNIX_DIAG_NAME
    assert accept_batch.rqlen_from_reply(reply(20, (0, b"/tmp/s\0"))) is None  # no RQLEN
    assert accept_batch.rqlen_from_reply(reply(2, (4, rqlen))) is None  # NLMSG_ERROR
    assert accept_batch.rqlen_from_reply(reply(20, (4, rqlen))[:30]) is None  # cut short before the attributes
    assert accept_batch.rqlen_from_reply(reply(20, (4, rqlen))[:38]) is None  # cut short inside rqueue
    assert accept_batch.rqlen_from_reply(reply(20, (4, rqlen), length=38)) is None  # the header's length ends it
    assert accept_batch.rqlen_from_reply(b"") is None
    zero = struct.pack("=IHHII", 16 + 16 + 4, 20, 0, 1, 0) + bytes(16) + struct.pack("=HH", 0, 4)
    assert accept_batch.rqlen_from_reply(zero) is None  # a zero-length attribute ends the walk


@linux_only
def test_batching_applies_to_uvloop_tcp_and_unix_listeners_only(tmp_path: Any) -> None:
    with listening() as sock, listening_unix(str(tmp_path / "s")) as unix:
        uv = uvloop.new_event_loop()
        plain = asyncio.new_event_loop()
        try:
            assert batching_applies(uv, sock)
            assert batching_applies(uv, unix)
            assert not batching_applies(plain, sock)  # asyncio accepts up to the backlog per pass already
            assert not batching_applies(plain, unix)
        finally:
            uv.close()
            plain.close()


# -- one accept per pass, and several once armed -----------------------------------------------------


def test_uvloop_alone_accepts_one_connection_per_pass() -> None:
    """The premise: without the duplicates, twelve waiting connections take twelve passes."""

    async def main(loop: asyncio.AbstractEventLoop) -> list[int]:
        accepted: list[int] = []
        with listening() as sock:
            passes = Passes(loop)
            batch = batch_on(loop, sock, accepted, passes, [])
            server = await loop.create_server(batch.factory, sock=sock.dup(), backlog=64)
            clients = connect(sock, 12)
            await until(lambda: len(accepted) == 12)
            passes.stopped = True
            server.close()
            for c in clients:
                c.close()
        return accepted

    accepted = run_uvloop(main)
    assert len(set(accepted)) == 12


def test_armed_accepts_up_to_the_batch_per_pass_and_counts_them() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> tuple[list[int], int, int, int]:
        accepted: list[int] = []
        opened: list[asyncio.AbstractServer] = []
        with listening() as sock:
            passes = Passes(loop)
            batch = batch_on(loop, sock, accepted, passes, opened)
            server = await loop.create_server(batch.factory, sock=sock.dup(), backlog=64)
            batch.arm()
            await until(lambda: len(batch.extras) == accept_batch.ACCEPT_BATCH - 1)
            clients = connect(sock, 16)
            await until(lambda: len(accepted) == 16)
            passes.stopped = True
            counts = batch.accepts, batch.passes, len(opened)
            batch.close()
            server.close()
            for c in clients:
                c.close()
            assert all(not s.is_serving() for s in opened)
        return accepted, *counts

    accepted, accepts, passes, opened = run_uvloop(main)
    assert opened == accept_batch.ACCEPT_BATCH - 1
    assert accepts == 16
    assert passes == len(set(accepted))
    assert passes <= 4  # 8 servers: 16 waiting connections in 2 passes, give or take a pass
    assert max(accepted.count(p) for p in set(accepted)) > 1


# -- arming and disarming --------------------------------------------------------------------------


@linux_only
def test_a_look_arms_when_connections_queue_up_and_disarms_when_passes_take_one() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        accepted: list[int] = []
        opened: list[asyncio.AbstractServer] = []
        with listening() as sock:
            passes = Passes(loop)
            batch = batch_on(loop, sock, accepted, passes, opened)
            batch._look()  # nothing waits: stays unarmed
            assert not batch.armed and batch._timer is not None
            clients = connect(sock, 3)  # no server yet: they wait in the queue
            batch._look()
            assert batch.armed
            await until(lambda: len(batch.extras) == accept_batch.ACCEPT_BATCH - 1)
            await until(lambda: len(accepted) == 3)  # the duplicates accept them
            batch.accepts, batch.passes = 3, 1  # an interval of 3 accepts in one pass: kept
            batch._look()
            assert batch.armed and batch.accepts == batch.passes == 0
            batch.accepts, batch.passes = 4, 4  # one per pass: nothing to gain, the empty accepts cost
            batch._look()
            assert not batch.armed and batch.extras == []
            assert all(not s.is_serving() for s in opened)
            batch._look()  # an idle interval, unarmed, queue empty
            assert not batch.armed
            batch.close()
            assert batch._timer is None
            passes.stopped = True
            for c in clients:
                c.close()

    run_uvloop(main)


def test_an_idle_interval_disarms() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        with listening() as sock:
            opened: list[asyncio.AbstractServer] = []
            passes = Passes(loop)
            batch = batch_on(loop, sock, [], passes, opened)
            batch.arm()
            await until(lambda: len(batch.extras) == accept_batch.ACCEPT_BATCH - 1)
            batch._look()  # no accept at all in the interval
            assert not batch.armed
            assert all(not s.is_serving() for s in opened)
            batch.close()
            passes.stopped = True

    run_uvloop(main)


def test_disarmed_or_closed_while_opening_leaves_no_server_listening() -> None:
    """The server being opened when the batch is disarmed or closed is closed once it is open, with its
    duplicate; none after it is opened."""
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        with listening() as sock:
            for stop in ("disarm", "close"):
                opened: list[asyncio.AbstractServer] = []
                given: list[socket.socket] = []
                batch = batch_on(loop, sock, [], Passes(loop), opened, given, suspend=True)
                batch.arm()
                await asyncio.sleep(0)  # the opening task runs until its first serve() suspends
                assert len(given) == 1 and not opened
                getattr(batch, stop)()
                assert batch._opening is not None
                await batch._opening
                assert batch.extras == []
                assert len(opened) == 1 and not opened[0].is_serving()  # opened after the stop, then closed
                assert all(dup.fileno() == -1 for dup in given)  # its duplicate closed with it
                if stop == "close":
                    batch.arm()
                    assert not batch.armed  # closed for good

    run_uvloop(main)


def test_armed_again_while_an_opening_is_on_its_way_opens_no_server_too_many() -> None:
    """Disarmed and armed again while a duplicate's serve() is pending: the opening on its way goes on, armed
    again, and no second one starts beside it (which would open one server more than the batch)."""
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        with listening() as sock:
            opened: list[asyncio.AbstractServer] = []
            given: list[socket.socket] = []
            batch = batch_on(loop, sock, [], Passes(loop), opened, given, suspend=True)
            batch.arm()
            await asyncio.sleep(0)  # the first serve() is pending
            first = batch._opening
            batch.disarm()
            batch.arm()
            assert batch._opening is first
            assert first is not None
            await first
            assert len(batch.extras) == accept_batch.ACCEPT_BATCH - 1
            assert len(opened) == accept_batch.ACCEPT_BATCH - 1
            batch.close()
            assert all(dup.fileno() == -1 for dup in given)

    run_uvloop(main)


def test_a_duplicate_that_cannot_be_listened_on_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        with listening() as sock:
            given: list[socket.socket] = []

            async def serve(s: socket.socket, factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.AbstractServer:
                given.append(s)
                raise OSError(24, "Too many open files")

            batch = AcceptBatch(loop, sock, Recorder, serve)
            for _ in range(2):  # arming is retried at later looks: logged once
                batch.arm()
                assert batch._opening is not None
                await batch._opening
                assert batch.extras == []
                batch.disarm()
            batch.close()
            assert len(given) == 2 and all(dup.fileno() == -1 for dup in given)

    with caplog.at_level("WARNING", logger="bascule.error"):
        run_uvloop(main)
    assert caplog.text.count("could not listen on a duplicate of the listening socket") == 1


def test_a_duplicate_that_cannot_be_made_leaves_the_listener_as_it_was(monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        with listening() as sock:
            batch = batch_on(loop, sock, [], Passes(loop), [])
            real = socket.socket.dup
            made: list[int] = []

            def dup(self: socket.socket) -> socket.socket:
                if len(made) == 2:
                    raise OSError(24, "Too many open files")
                made.append(1)
                return real(self)

            monkeypatch.setattr(socket.socket, "dup", dup)
            batch.arm()
            assert batch._opening is not None
            await batch._opening
            assert len(batch.extras) == 2
            batch.disarm()
            batch.arm()  # the next look arms again, and fails again: not logged again
            assert batch._opening is not None
            await batch._opening
            batch.close()

    with caplog.at_level("WARNING", logger="bascule.error"):
        run_uvloop(main)
    assert caplog.text.count("could not duplicate the listening socket") == 1


# -- in the server ---------------------------------------------------------------------------------


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@linux_only
@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_the_server_batches_its_listener_and_closes_the_duplicates_on_stop(where: str, tmp_path: Any) -> None:
    path = str(tmp_path / "bascule.sock")
    options: dict[str, Any] = {"uds": path} if where == "unix" else {}

    def open_client() -> socket.socket:
        if where == "unix":
            return connect_unix(path, 1)[0]
        return socket.create_connection((srv.host, srv.port))

    with serve_in_thread(hello, **options) as srv:
        assert srv.server is not None
        batches = srv.server.accept_batches
        assert len(batches) == 1
        batch = batches[0]
        loop = batch.loop

        def arm_for_good() -> None:  # no look meanwhile: one could disarm before the duplicates are all open
            if batch._timer is not None:
                batch._timer.cancel()
                batch._timer = None
            batch.arm()

        loop.call_soon_threadsafe(arm_for_good)
        end = time.monotonic() + 5
        while len(batch.extras) < accept_batch.ACCEPT_BATCH - 1 and time.monotonic() < end:
            time.sleep(0.01)
        assert len(batch.extras) == accept_batch.ACCEPT_BATCH - 1
        extras = list(batch.extras)
        clients = [open_client() for _ in range(40)]
        for c in clients:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for c in clients:
            c.settimeout(5)
            data = b""
            while chunk := c.recv(4096):
                data += chunk
            c.close()
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nok")
        # disarming closes the duplicates' servers and leaves the listener as it was: for a Unix one, its path
        # too (a server that cleaned its socket file up on close would unlink the listener's)
        loop.call_soon_threadsafe(batch.disarm)
        end = time.monotonic() + 5
        while any(s.is_serving() for s in extras) and time.monotonic() < end:
            time.sleep(0.01)
        assert batch.extras == [] and not any(s.is_serving() for s in extras)
        if where == "unix":
            assert os.path.exists(path)
        client = open_client()
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        client.settimeout(5)
        data = b""
        while chunk := client.recv(4096):
            data += chunk
        client.close()
        assert data.startswith(b"HTTP/1.1 200 ")
    assert batch.closed and batch.extras == []
    assert all(not s.is_serving() for s in extras)
