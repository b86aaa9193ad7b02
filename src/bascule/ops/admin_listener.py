"""Serving the admin routes (ops/admin.py): in the serving process, or in a thread of the master.

The admin listener is an ordinary bascule listener with its own :class:`~bascule.context.ServerContext`
whose dispatch is :meth:`~bascule.ops.admin.AdminRoutes.dispatch`: requests go through the same front door
and HTTP/1.1 parser as the app's (limits, timeouts, malformed input answered 400), and never reach the app
table. HTTP/1.1 only, no TLS, no upgrades, no access log; bound to loopback or a Unix socket (config.py).

- One process: :class:`AdminServer` runs on the serving loop, started before lifespan startup (so
  ``/readyz`` says "starting" while the app boots) and stopped after the graceful stop (so it says
  "draining" throughout).
- A master: its own loop is a selector loop that must not block, so :class:`AdminThread` runs an asyncio
  loop in a daemon thread. The master forks workers while that thread runs; :meth:`AdminThread.child_fds`
  names the descriptors a worker closes after the fork, so the admin port and its connections belong to the
  master alone (a connection kept open in a worker would not see its close).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import threading
from typing import Any

from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import StartupError
from bascule.listen.accept import FrontDoor
from bascule.listen.listeners import DEFAULT_UDS_MODE, BoundListener, Listener, bind_tcp, bind_unix, describe
from bascule.ops.admin import AdminRoutes
from bascule.ops.contract import AdminSource
from bascule.specs import parse_bind, parse_uds_mode

ADMIN_BACKLOG = 64
ADMIN_CONNECTIONS = 64  # probes and scrapers: a few at a time; more get 503 and a close
START_TIMEOUT = 10.0


def admin_config(config: Config) -> Config:
    """The options the admin listener's context reads: the server's, minus what only the app's listeners do."""
    return config.replace(http2=False, header=(), limit_concurrency=None, limit_connections=ADMIN_CONNECTIONS,
                          timeout_request=None, proxy_headers=False)


def bind_admin(config: Config) -> BoundListener:
    """The admin socket ``--admin-bind`` names, bound and listening; StartupError with one line if it cannot be."""
    assert config.admin_bind is not None
    endpoint = parse_bind(config.admin_bind)
    address = endpoint.address
    if endpoint.kind == "unix" and isinstance(address, str):
        mode = parse_uds_mode(config.uds_mode) if config.uds_mode is not None else DEFAULT_UDS_MODE
        sock = bind_unix(address, mode)
    elif isinstance(address, tuple):
        try:
            sock = bind_tcp(address[0], address[1])
        except StartupError as exc:  # its hint names --port: this address came from --admin-bind
            raise StartupError(str(exc).replace("--port", "--admin-bind")) from None
    else:  # config.py lets only loopback HOST:PORT and unix:PATH through
        raise StartupError(f"admin_bind {config.admin_bind!r}: not a HOST:PORT or unix:PATH")
    try:
        sock.listen(ADMIN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on the admin address {config.admin_bind}: {exc.strerror}") from None
    return BoundListener(Listener(endpoint.kind, address), sock)


class AdminServer:
    """The admin listener on the running loop: :meth:`start`, then :meth:`stop` (which closes the socket)."""

    def __init__(self, config: Config, source: AdminSource, bound: BoundListener) -> None:
        self.config = config
        self.bound = bound
        self.routes = AdminRoutes(source)
        self.ctx: ServerContext | None = None
        self._server: asyncio.Server | None = None
        self.address: Any = bound.sock.getsockname()
        self.file = socket_file(bound.spec)  # the socket file bound, to remove at the stop only if still this one

    @property
    def where(self) -> str:
        return describe(self.bound.sock)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = ServerContext(admin_config(self.config), loop, self.routes.dispatch, access_log=False)
        self.ctx = ctx
        door = FrontDoor(ctx, self.bound.spec)
        self._server = await loop.create_server(door.protocol_factory(), sock=self.bound.sock, backlog=ADMIN_BACKLOG)
        ctx.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        ctx = self.ctx
        if ctx is not None:
            for conn in list(ctx.connections):
                conn.force_close()
            ctx.stop()
        await asyncio.sleep(0)  # the closes take effect on the next pass
        self.bound.sock.close()
        remove_socket_file(self.bound.spec, self.file)

    def fds(self) -> list[int]:
        """The descriptors this listener holds: its socket and its connections' (for a forked child to close)."""
        fds = [self.bound.sock.fileno()]
        ctx = self.ctx
        if ctx is not None:
            for conn in list(ctx.connections):
                transport: Any = getattr(conn, "transport", None)
                sock = transport.get_extra_info("socket") if transport is not None else None
                if sock is not None:
                    fds.append(sock.fileno())
        return [fd for fd in fds if fd >= 0]


def loop_fds(loop: asyncio.AbstractEventLoop | None) -> list[int]:
    """The descriptors an asyncio selector loop holds for itself: its selector's and its self-pipe's.

    asyncio names no public way to them; a loop without these attributes gives what it has."""
    fds: list[int] = []
    if loop is None:
        return fds
    selector: Any = getattr(loop, "_selector", None)
    if selector is not None:
        with contextlib.suppress(Exception):
            fds.append(selector.fileno())
    for name in ("_ssock", "_csock"):
        sock: Any = getattr(loop, name, None)
        if sock is not None:
            fds.append(sock.fileno())
    return [fd for fd in fds if isinstance(fd, int) and fd >= 0]


def socket_file(spec: Listener) -> tuple[int, int] | None:
    """(device, inode) of a unix: listener's socket file, None for TCP (or a file already gone)."""
    if spec.kind == "unix" and isinstance(spec.address, str):
        with contextlib.suppress(OSError):
            st = os.stat(spec.address)
            return st.st_dev, st.st_ino
    return None


def remove_socket_file(spec: Listener, ours: tuple[int, int] | None) -> None:
    """Remove a unix: listener's socket file if it is still the one bound (``ours``): another instance started on
    the same path since (a restart overlapping this one's drain) has replaced it, and keeps its own."""
    if ours is not None and isinstance(spec.address, str):
        with contextlib.suppress(OSError):
            st = os.stat(spec.address)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == ours:
                os.unlink(spec.address)


class AdminThread:
    """The admin listener of a master: an asyncio loop of its own in a daemon thread."""

    def __init__(self, config: Config, source: AdminSource, bound: BoundListener) -> None:
        self.admin = AdminServer(config, source, bound)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def where(self) -> str:
        return self.admin.where

    def start(self) -> None:
        """Start the thread and wait until the listener accepts (its start's error is raised here)."""
        self._thread = threading.Thread(target=self._run, name="bascule-admin", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise StartupError("the admin listener did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        # asyncio's own loop, whatever the policy (an app the master preloads may install uvloop's): forking
        # beside it is plain, and child_fds() knows its descriptors
        loop = asyncio.SelectorEventLoop()
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self.admin.start())
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._started.set()
            loop.run_forever()
            loop.run_until_complete(self.admin.stop())
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop the loop and the thread; the socket is closed (and a socket file removed) either way."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
        self.admin.bound.sock.close()
        remove_socket_file(self.admin.bound.spec, self.admin.file)

    def child_fds(self) -> list[int]:
        """Descriptors a forked worker must close: the admin socket, the admin connections open at the fork, and
        the thread's loop's own (its selector, its self-pipe socket pair)."""
        return [*self.admin.fds(), *loop_fds(self._loop)]

    def close_in_child(self) -> None:
        """In a worker just forked: close its copies of the admin socket and of every connection accepted on it.

        A copy left open would keep a connection alive after the master closes it (no FIN until the worker
        exits: a probe waiting for the end of the response would hang). The connections the admin loop knows
        are not all of them: one accepted in the instant before the fork has no protocol yet. So on Linux every
        inherited stream socket whose local address is the admin socket's is closed too (an accepted socket
        has its listener's local address; the app's own sockets have other ones)."""
        address = self.admin.address
        family = self.admin.bound.sock.family
        for fd in self.child_fds():
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:
            return
        for name in names:
            fd = int(name)
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                continue  # not a socket (or already closed)
            try:
                ours = sock.family == family and sock.type == socket.SOCK_STREAM and sock.getsockname() == address
            except OSError:
                ours = False
            finally:
                sock.detach()
            if ours:
                with contextlib.suppress(OSError):
                    os.close(fd)
