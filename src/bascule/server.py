"""One server process: load the apps, bind, serve on the event loop, and stop gracefully.

Shutdown order on SIGINT/SIGTERM: stop accepting, close idle keep-alive connections at once, let requests
in flight finish up to ``timeout_graceful_shutdown``, close what is left, then run lifespan shutdown and
exit 0. A second SIGINT skips the wait. Signal handlers only record the request; the serve loop acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable
from typing import Any

from bascule.config import Config
from bascule.context import ServerContext
from bascule.listeners import bind_sockets, describe
from bascule.logs import configure_logging
from bascule.mounts import AppTable, resolve_mounts
from bascule.protocols.http1 import H1Connection

_log = logging.getLogger("bascule.error")


class Server:
    """Serves ``config`` (or the app object ``app``) until :meth:`request_exit` or a signal."""

    def __init__(self, config: Config, app: Any = None) -> None:
        self.config = config
        self.app = app
        self.sockets: list[socket.socket] = []
        self.started = asyncio.Event()
        self.force_exit = False
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0

    def request_exit(self, force: bool = False) -> None:
        """Ask the server to stop (thread-safe). ``force`` skips waiting for requests in flight."""
        self.force_exit = self.force_exit or force
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            _log.warning("second interrupt: stopping now")
            self.request_exit(force=True)
        else:
            _log.info("received %s: shutting down gracefully", signal.Signals(signum).name)
            self.request_exit()

    async def serve(self, sockets: list[socket.socket] | None = None, *, install_signals: bool = False) -> None:
        """Serve until asked to stop. Raises AppLoadError / StartupError if the server cannot start."""
        config = self.config
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = asyncio.Event()
        table = AppTable(config, resolve_mounts(config, self.app))
        ctx = ServerContext(config, loop, table.dispatch, access_log=config.access_log)
        table.start_threads()
        servers: list[asyncio.Server] = []
        try:
            await table.startup()
            self.sockets = sockets if sockets is not None else bind_sockets(config)
            for sock in self.sockets:
                server = await loop.create_server(lambda: H1Connection(ctx), sock=sock, backlog=config.backlog)
                servers.append(server)
            if install_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, self._on_signal, signum)
            ctx.start()
            for sock in self.sockets:
                _log.info("bascule serving on %s (press CTRL+C to quit)", describe(sock))
            self.started.set()
            await self._exit.wait()
        finally:
            await self._shutdown(ctx, table, servers)
            if install_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)

    async def _shutdown(self, ctx: ServerContext, table: AppTable, servers: list[asyncio.Server]) -> None:
        loop = asyncio.get_running_loop()
        ctx.shutting_down = True
        for server in servers:
            server.close()
        for conn in list(ctx.connections):
            conn.shutdown()
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        while (ctx.connections or table.running_tasks()) and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.05)
        timed_out = bool(ctx.connections or table.running_tasks())
        if timed_out:
            _log.warning("graceful shutdown: closing %d connection(s) still busy", len(ctx.connections))
            for conn in list(ctx.connections):
                conn.force_close()
            for task in table.running_tasks():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*table.running_tasks(), return_exceptions=True)
        ctx.stop()
        # Lifespan shutdown runs whenever startup ran (also when binding failed after it), so the app
        # can release what startup took; a forced stop only cancels it.
        await table.shutdown(self.config.timeout_graceful_shutdown, force=self.force_exit,
                             pool_timeout=max(0.0, deadline - loop.time()) if not timed_out else 0.0)
        self._remove_unix_sockets()
        if self.started.is_set():
            _log.info("bascule stopped")

    def _remove_unix_sockets(self) -> None:
        """Remove the socket files we bound (not those inherited with --fd), as uvicorn and gunicorn do."""
        if self.config.uds and self.config.fd is None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(self.config.uds).st_mode):
                    os.unlink(self.config.uds)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed, else the standard asyncio loop."""
    factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop
    except ImportError:
        factory = asyncio.new_event_loop
    else:
        factory = uvloop.new_event_loop
    return factory()


def run_config(config: Config, app: Any = None) -> int:
    """Serve ``config`` in this process until a signal; the exit code (0 after a graceful stop)."""
    configure_logging(config)
    server = Server(config, app)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(server.serve(install_signals=True))
    return 0
