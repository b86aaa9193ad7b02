"""One server process: load the apps, bind, serve on the event loop, and stop gracefully.

Shutdown order on SIGINT/SIGTERM: stop accepting, answer every request still arriving with
``connection: close``, close keep-alive connections once they have been idle for a moment, let requests in
flight finish up to ``timeout_graceful_shutdown``, close what is left, then run lifespan shutdown and exit 0.
A second SIGINT skips the wait. Signal handlers only record the request; the serve loop acts. With TLS,
SIGHUP reloads the certificate files into the running context (:func:`bascule.tls.reload_certificates`).

With ``--shutdown-delay``, the first SIGTERM/SIGINT only starts draining: ``/readyz`` on the admin listener
fails at once, while the listeners go on accepting and serving for the delay (so a balancer that polls it,
or Kubernetes removing the endpoint, stops sending traffic before anything is refused); the graceful stop
above follows. A second signal ends the delay early. The admin listener (``--admin-bind``, ops/) is served
on this loop from before lifespan startup until after the graceful stop.

The moment of idleness matters for zero-downtime restarts: a keep-alive client may have sent its next
request just as the server decides the connection is idle, and closing it then loses that request (the
client sees a reset, not a response). So a connection is closed only after ``DRAIN_IDLE_GRACE`` seconds of
silence; a request that arrives meanwhile is served and answered with ``connection: close``.

:func:`bascule.run.run_config` is the process entry that chooses between this and a supervised pool of
workers; this module is only the serving process, so it imports neither the supervisor nor the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from bascule import tls
from bascule.config import Config
from bascule.context import ServerContext
from bascule.listen.accept import FrontDoor, fixed_local_address, install_upgrades
from bascule.listen.accept_batch import AcceptBatch, Factory, batching_applies
from bascule.listen.listeners import BoundListener, bind_listeners, describe, remove_unix_sockets
from bascule.listen.quic import CLOSE_WAIT, QuicListeners, alt_svc, quic_addresses
from bascule.logs import reopen_log_files
from bascule.mounts import AppTable, Mount, resolve_mounts
from bascule.ops.admin_listener import AdminServer, bind_admin
from bascule.ops.metrics import Collector, parse_buckets
from bascule.ops.metrics import enabled as metrics_enabled
from bascule.ops.readiness import ReadinessCheck, load_check
from bascule.ops.sources import ProcessSource, ServingState
from bascule.ops.views import ProcessMetrics
from bascule.protocols.exchange import Exchange
from bascule.uvloop_map import lighten

_log = logging.getLogger("bascule.error")

DRAIN_IDLE_GRACE = 0.25  # seconds a keep-alive connection must be silent before a graceful stop closes it
Dispatch = Callable[[Exchange], None]


class Server:
    """Serves ``config`` (or the app object ``app``) until :meth:`request_exit` or a signal.

    A worker of the supervisor passes ``mounts`` (apps the master preloaded), ``wrap_dispatch`` (to count
    requests without touching the protocol), ``on_ready`` (called once the listeners accept),
    ``on_readiness`` (each change of the --readiness-check's answer), ``announce=False`` because the master
    already said where it serves, and ``admin=False`` because the master serves --admin-bind.
    """

    def __init__(self, config: Config, app: Any = None, *, mounts: list[Mount] | None = None,
                 wrap_dispatch: Callable[[Dispatch], Dispatch] | None = None,
                 on_ready: Callable[[], object] | None = None, announce: bool = True, admin: bool = True,
                 on_readiness: Callable[[bool, str], None] | None = None,
                 publish_metrics: Callable[[bytes, bool], None] | None = None,
                 quic: list[tuple[str, int]] | None = None) -> None:
        self.config = config
        self.quic_addresses = quic  # a worker's: the HTTP/3 addresses its master probed (None: from config)
        self.quic: QuicListeners | None = None  # set by serve() when HTTP/3 is on
        self.app = app
        self.mounts = mounts
        self.wrap_dispatch = wrap_dispatch
        self.on_ready = on_ready
        self.on_readiness = on_readiness
        self.announce = announce
        self.admin = admin and config.admin_bind is not None
        self.state = ServingState()  # what /readyz and /status.json read (ops/sources.py)
        if config.readiness_check is not None:
            self.state.check_ok, self.state.check_reason = False, "not answered yet"
        self.admin_source = ProcessSource(self.state)  # what --admin-bind answers from (metrics attach here)
        self.admin_server: AdminServer | None = None
        self._delay: asyncio.TimerHandle | None = None  # --shutdown-delay running
        self.listeners: list[BoundListener] = []
        self.accept_batches: list[AcceptBatch] = []  # uvloop: a listener's extra accepts while connections queue up
        self.sockets: list[socket.socket] = []
        self.started = asyncio.Event()
        self.force_exit = False
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ctx: ServerContext | None = None  # set by serve()
        self.publish_metrics = publish_metrics  # a worker's: snapshots to the master (bascule.ops.metrics)
        self.metrics: Collector | None = None  # set by serve() with --metrics
        self._signals = 0

    def request_exit(self, force: bool = False) -> None:
        """Ask the server to stop (thread-safe). ``force`` skips waiting for requests in flight."""
        self.force_exit = self.force_exit or force
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped already
                loop.call_soon_threadsafe(event.set)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._delay is not None:
            _log.info("received %s again: skipping the rest of --shutdown-delay", name)
            self._end_delay()
        elif self._signals > 1 and signum == signal.SIGINT:
            _log.warning("second interrupt: stopping now")
            self.request_exit(force=True)
        elif self.config.shutdown_delay > 0 and self._signals == 1 and self._loop is not None:
            _log.info("received %s: not ready from now on; serving for %g s more (--shutdown-delay), then "
                      "shutting down gracefully", name, self.config.shutdown_delay)
            self.state.draining = True
            self._delay = self._loop.call_later(self.config.shutdown_delay, self._end_delay)
        else:
            _log.info("received %s: shutting down gracefully", name)
            self.state.draining = True
            self.request_exit()

    def _end_delay(self) -> None:
        delay, self._delay = self._delay, None
        if delay is not None:
            delay.cancel()
        self.request_exit()

    def _on_quit(self) -> None:
        _log.info("received SIGQUIT: stopping now")
        self.request_exit(force=True)

    async def serve(self, listeners: list[BoundListener] | None = None, *, install_signals: bool = False) -> None:
        """Serve until asked to stop (on ``listeners``, else on those ``config`` names, bound here).

        Raises AppLoadError / StartupError if the server cannot start.
        """
        config = self.config
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = asyncio.Event()
        table = AppTable(config, self.mounts if self.mounts is not None else resolve_mounts(config, self.app))
        dispatch = table.dispatch if self.wrap_dispatch is None else self.wrap_dispatch(table.dispatch)
        ctx = ServerContext(config, loop, dispatch, access_log=config.access_log)
        self.ctx = ctx  # request observers (metrics, tests) register on it: ctx.observe
        if metrics_enabled(config):
            self.metrics = Collector(ctx, parse_buckets(config.metrics_buckets), publish=self.publish_metrics)
            ctx.observe(self.metrics)
            self.admin_source.metrics_view = ProcessMetrics(self.metrics)  # /metrics, /status.json
        if config.ws:
            ctx.websocket_route = table.websocket_route
        install_upgrades(ctx)
        # TLS before the app starts: a bad certificate stops the server with one line (ConfigError)
        ctx.ssl_context = tls.server_context(config, ["h2", "http/1.1"] if config.http2 else ["http/1.1"])
        ctx.server_cert_pem = tls.server_cert_pem(config)
        owns_sockets = listeners is None
        state = self.state
        state.connections = lambda: len(ctx.connections)
        state.in_flight = lambda: ctx.in_flight
        check = None
        if config.readiness_check is not None:  # before startup: a wrong name stops the server with one line
            check = ReadinessCheck(load_check(config.readiness_check, config.app_dir), loop,
                                   on_change=self._readiness_changed)
        table.start_threads()
        servers: list[asyncio.Server] = []
        try:
            if self.admin:
                self.admin_server = AdminServer(config, self.admin_source, bind_admin(config))
                await self.admin_server.start()
                if self.announce:
                    _log.info("bascule admin routes on %s (/livez, /readyz, /metrics, /status)",
                              self.admin_server.where)
            await table.startup()
            self.listeners = listeners if listeners is not None else bind_listeners(config)
            self.sockets = [bound.sock for bound in self.listeners]
            quic = self._bind_quic(ctx)
            for bound in self.listeners:
                # accept -> (PROXY header) -> TLS -> ALPN/preface -> protocol
                door = FrontDoor(ctx, bound.spec, fixed_local_address(bound.sock))

                def serve(sock: socket.socket, factory: Factory, door: FrontDoor = door) -> Awaitable[asyncio.Server]:
                    return loop.create_server(factory, sock=sock, backlog=config.backlog, ssl=door.ssl_context,
                                              ssl_handshake_timeout=door.ssl_handshake_timeout)

                factory = door.protocol_factory()
                if batching_applies(loop, bound.sock):  # uvloop accepts one per pass: more while they queue up
                    batch = AcceptBatch(loop, bound.sock, factory, serve, scheme=bound.spec.scheme)
                    self.accept_batches.append(batch)
                    factory = batch.factory
                servers.append(await serve(bound.sock, factory))
            for batch in self.accept_batches:
                batch.start()
            if quic is not None:
                await quic.start()
                ctx.set_alt_svc(alt_svc(quic.ports, config.http3_alt_svc_max_age))
            if install_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, self._on_signal, signum)
                loop.add_signal_handler(signal.SIGQUIT, self._on_quit)
                loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)
                if ctx.ssl_context is not None:
                    loop.add_signal_handler(signal.SIGHUP, reload_tls, ctx, quic)
            ctx.start()
            if self.metrics is not None:
                self.metrics.start()
            if self.announce:
                for bound in self.listeners:
                    _log.info("bascule serving on %s (press CTRL+C to quit)", describe(bound.sock, bound.spec.scheme))
                for where in quic.where() if quic is not None else ():
                    _log.info("bascule serving on %s (HTTP/3)", where)
            self.started.set()
            state.serving = True
            if check is not None:
                check.start()  # its first answer now, then once a second
                # READY only with an answer: the master retires the worker this one replaces on READY, and its
                # /readyz would fail meanwhile ('not run yet') with one worker; a stop asked for ends the wait
                exit_wait = asyncio.ensure_future(self._exit.wait())
                answer = asyncio.ensure_future(check.first_answer())
                await asyncio.wait((exit_wait, answer), return_when=asyncio.FIRST_COMPLETED)
                exit_wait.cancel()
                answer.cancel()
            if self.on_ready is not None:
                self.on_ready()
            await self._exit.wait()
        finally:
            state.draining = True
            if self._delay is not None:
                self._delay.cancel()
                self._delay = None
            if check is not None:
                check.stop()
            try:
                await self._shutdown(ctx, table, servers, remove_sockets=owns_sockets)
            finally:
                if self.metrics is not None:
                    self.metrics.close()  # a worker's last snapshot (also after a failed stop): the master keeps it
                if self.admin_server is not None:
                    await self.admin_server.stop()
                if install_signals:
                    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP):
                        loop.remove_signal_handler(signum)

    def _bind_quic(self, ctx: ServerContext) -> QuicListeners | None:
        """The HTTP/3 listeners' UDP sockets, bound (a server alone finds its addresses in the options and its
        TCP listeners; a worker gets them from its master and joins each address's SO_REUSEPORT group)."""
        worker = self.quic_addresses is not None
        addresses = self.quic_addresses if worker else quic_addresses(self.config, self.listeners)
        if not addresses:
            return None
        self.quic = QuicListeners(ctx, addresses, reuse_port=worker or self.config.reuse_port)
        self.quic.bind()
        return self.quic

    def _readiness_changed(self, ok: bool, reason: str) -> None:
        self.state.check_ok, self.state.check_reason = ok, reason
        if self.on_readiness is not None:
            self.on_readiness(ok, reason)

    async def _shutdown(self, ctx: ServerContext, table: AppTable, servers: list[asyncio.Server], *,
                        remove_sockets: bool = True) -> None:
        loop = asyncio.get_running_loop()
        for batch in self.accept_batches:
            batch.close()
        for server in servers:
            server.close()
        quic = self.quic
        if quic is not None:
            quic.close()  # GOAWAY on every QUIC connection; they are drained below with the TCP ones
        # Connections the loop accepted just before the close are still being set up: let them finish
        # (and read their first request) before "shutting down" would have them closed unread.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ctx.shutting_down = True  # every response from now on says connection: close
        ctx.keep_alive_timeout = min(ctx.keep_alive_timeout, DRAIN_IDLE_GRACE)
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        while True:
            now = loop.time()
            for conn in list(ctx.connections):
                conn.on_tick(now)  # closes it if idle for DRAIN_IDLE_GRACE; busy ones close after their response
            if not (ctx.connections or table.running_tasks()) or self.force_exit or now >= deadline:
                break
            await asyncio.sleep(0.02)
        timed_out = bool(ctx.connections or table.running_tasks())
        if timed_out:
            _log.warning("graceful shutdown: closing %d connection(s) still busy", len(ctx.connections))
            for conn in list(ctx.connections):
                conn.force_close()
            for task in table.running_tasks():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*table.running_tasks(), return_exceptions=True)
        if quic is not None and self.force_exit:
            quic.abort()  # CONNECTION_CLOSE on what is left, now
        elif quic is not None:  # their last packets (CONNECTION_CLOSE) out, then the sockets closed
            await quic.wait_closed(CLOSE_WAIT)
        ctx.stop()
        # Lifespan shutdown runs whenever startup ran (also when binding failed after it), so the app
        # can release what startup took; a forced stop only cancels it.
        await table.shutdown(self.config.timeout_graceful_shutdown, force=self.force_exit,
                             pool_timeout=max(0.0, deadline - loop.time()) if not timed_out else 0.0)
        if remove_sockets:
            remove_unix_sockets(self.config)
        if self.started.is_set() and self.announce:
            _log.info("bascule stopped")


def reload_tls(ctx: ServerContext, quic: QuicListeners | None = None) -> None:
    """SIGHUP in a single-process TLS server: load the certificate files again; new connections get them
    (HTTP/3's too).

    (With a master, SIGHUP replaces the workers instead, and each new worker builds a fresh context.)
    """
    if quic is not None:
        quic.reload_certificates()
    if ctx.ssl_context is None:
        return
    if tls.reload_certificates(ctx.ssl_context, ctx.config):
        ctx.server_cert_pem = tls.server_cert_pem(ctx.config)
        _log.info("received SIGHUP: reloaded the TLS certificate from %s", ctx.config.ssl_certfile)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (its transport bookkeeping lightened: uvloop_map.py), else the standard
    asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop = uvloop.new_event_loop()
    lighten(loop)
    return loop
