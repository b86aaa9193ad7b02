"""The apps a server serves and how a request finds its app: mounts, gateways, lifespans.

One app alone is served straight through its gateway's ``handle`` (no routing on the hot path). With
mounts, the longest matching path prefix wins: ``/api`` matches ``/api`` and ``/api/x`` but not ``/apix``.
Static directories (``--static``, bascule.static) are routes of the same table, answered by the server.
Each ASGI app gets its own lifespan and state; WSGI apps share one thread pool.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bascule.compress import from_options
from bascule.config import Config
from bascule.errors import ConfigError
from bascule.gateways.asgi import ASGIGateway, decode_path
from bascule.gateways.lifespan import Lifespan
from bascule.gateways.threads import ThreadPool
from bascule.gateways.wsgi import WSGIGateway
from bascule.loader import LoadedApp, classify, load_app
from bascule.protocols.exchange import Exchange, WebSocketSession
from bascule.specs import parse_mount, parse_static
from bascule.static.handler import StaticMount

Gateway = ASGIGateway | WSGIGateway | StaticMount


@dataclass(frozen=True, slots=True)
class Mount:
    prefix: str
    loaded: LoadedApp


def resolve_mounts(config: Config, app: Any = None) -> list[Mount]:
    """Import (or classify) every app the config names: the root app and each --mount."""
    mounts: list[Mount] = []
    if app is not None:
        mounts.append(Mount("", classify(app, config.interface, label=getattr(app, "__name__", "app"))))
    elif config.app is not None:
        mounts.append(Mount("", load_app(config.app, factory=config.factory, app_dir=config.app_dir,
                                         interface=config.interface)))
    for spec in config.mount:
        prefix, target = parse_mount(spec)
        mounts.append(Mount(prefix, load_app(target, app_dir=config.app_dir)))
    taken = {mount.prefix for mount in mounts}
    for spec in config.static:
        prefix, directory = parse_static(spec)
        if prefix in taken:
            raise ConfigError(f"static {spec!r}: {prefix or '/'} is already mounted; give each mount its own prefix")
        taken.add(prefix)
        StaticMount(prefix, directory, max_age=0, immutable=False, fallback=config.static_fallback,  # checks, once
                    follow_symlinks=config.static_follow_symlinks)
    return mounts


def thread_policy_batch(config: Config, mounts: list[Mount], cpus: int | None = None) -> bool:
    """Whether the WSGI pool's threads run SCHED_BATCH (``--wsgi-thread-policy``; tuning.py says what it does).

    ``auto`` takes it only where the event loop works for the pool's threads alone, on plain bytes, and the
    process has a core to itself: every mount WSGI, no static directory, no TLS, no HTTP/3, and no more
    workers than the CPUs it may run on (``cpus``, the affinity mask's count by default). There the loop
    reads requests for the threads and writes what they answer, and runs out of work when they fall behind,
    so threads that never preempt it still get the CPU at each epoll wait. An ASGI app or a static file can
    keep the loop busy on its own (WSGI streams beside ASGI ones starved), and so can TLS handshakes and
    encryption, or HTTP/3's packets, which aioquic handles in Python on the loop. Workers beyond the CPUs
    compete with each other's loops, and a thread that never preempts would wait behind them.
    """
    policy = config.wsgi_thread_policy
    if policy != "auto":
        return policy == "batch"
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return (not config.static and config.ssl_certfile is None and not config.http3 and config.workers <= cpus
            and all(mount.loaded.interface == "wsgi" for mount in mounts))


class AppTable:
    """Gateways for every mount, their lifespans, and the dispatch function the protocols call."""

    def __init__(self, config: Config, mounts: list[Mount]) -> None:
        self.config = config
        self.pool: ThreadPool | None = None
        self.lifespans: list[Lifespan] = []
        self.asgi_gateways: list[ASGIGateway] = []
        compress = from_options(config.compress_min_size, config.compress_types) if config.compress else None
        routes: list[tuple[str, Gateway]] = []
        lifespan_by_app: dict[int, Lifespan] = {}
        batch = thread_policy_batch(config, mounts)
        for mount in mounts:
            gateway: Gateway
            if mount.loaded.interface == "wsgi":
                if self.pool is None and config.wsgi_mode == "threads":
                    self.pool = ThreadPool(config.wsgi_threads, batch=batch)
                gateway = WSGIGateway(mount.loaded.app, self.pool, root_path=config.root_path, prefix=mount.prefix,
                                      multiprocess=config.workers > 1, compress=compress)
            else:
                gateway = ASGIGateway(mount.loaded.app, root_path=config.root_path, prefix=mount.prefix,
                                      compress=compress)
                self.asgi_gateways.append(gateway)
                lifespan = lifespan_by_app.get(id(mount.loaded.app))
                if lifespan is None:
                    lifespan = Lifespan(mount.loaded.app, mode=config.lifespan, label=mount.loaded.label,
                                        state=gateway.state)
                    lifespan_by_app[id(mount.loaded.app)] = lifespan
                    self.lifespans.append(lifespan)
                else:
                    gateway.state = lifespan.state
            routes.append((mount.prefix, gateway))
        self.static_mounts: list[StaticMount] = []
        for spec in config.static:
            prefix, directory = parse_static(spec)
            static = StaticMount(prefix, directory, max_age=config.static_max_age, immutable=config.static_immutable,
                                 fallback=config.static_fallback, follow_symlinks=config.static_follow_symlinks)
            self.static_mounts.append(static)
            routes.append((prefix, static))
        routes.sort(key=lambda route: len(route[0]), reverse=True)
        self.routes = routes
        self.dispatch: Callable[[Exchange], None]
        if len(routes) == 1 and routes[0][0] == "":
            self.dispatch = routes[0][1].handle
        else:
            self.dispatch = self._route

    def _route(self, ex: Exchange) -> None:
        path = decode_path(ex.raw_path)
        for prefix, gateway in self.routes:
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                gateway.handle(ex)
                return
        ex.send_simple(404, b"Not Found\n")

    def websocket_route(self, raw_path: bytes) -> Callable[[WebSocketSession], None] | None:
        """The handler for a WebSocket to ``raw_path``: its route's ASGI gateway, or None.

        None (a WSGI route, or no route) leaves the upgrade request to plain HTTP, where a WSGI app gets
        it as an ordinary GET and an unrouted path its 404. Called once per upgrade request, never per
        HTTP request.
        """
        routes = self.routes
        if len(routes) == 1 and routes[0][0] == "":
            gateway = routes[0][1]
        else:
            path = decode_path(raw_path)
            for prefix, candidate in routes:
                if not prefix or path == prefix or path.startswith(prefix + "/"):
                    gateway = candidate
                    break
            else:
                return None
        return gateway.handle_websocket if isinstance(gateway, ASGIGateway) else None

    def start_threads(self) -> None:
        if self.pool is not None:
            self.pool.start()

    async def startup(self) -> None:
        for lifespan in self.lifespans:
            await lifespan.startup()

    async def shutdown(self, timeout: float, *, force: bool = False, pool_timeout: float | None = None) -> None:
        """Lifespan shutdown (skipped, the tasks just cancelled, when ``force``), then the thread pool.

        ``pool_timeout`` bounds the wait for WSGI threads (default ``timeout``): after the graceful deadline
        has passed, threads still stuck in an app are not waited for again.
        """
        for lifespan in reversed(self.lifespans):
            if force:
                await lifespan.cancel()
            else:
                await lifespan.shutdown(timeout)
        if self.pool is not None:
            wait = 0.0 if force else (timeout if pool_timeout is None else pool_timeout)
            await asyncio.get_running_loop().run_in_executor(None, self.pool.shutdown, wait)

    def running_tasks(self) -> set[asyncio.Task[None]]:
        tasks: set[asyncio.Task[None]] = set()
        for gateway in self.asgi_gateways:
            tasks |= gateway.tasks
        for static in self.static_mounts:
            tasks |= static.tasks
        return tasks
