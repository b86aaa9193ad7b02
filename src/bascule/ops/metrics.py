"""Metrics collected where requests are served: one :class:`Collector` per serving process (or worker).

The collector is a request observer (:class:`bascule.context.RequestObserver`): ``request_finished`` runs
once per request on the event-loop thread, so it does the least it can there. It adds one to a plain dict
keyed by the raw ``(method, status, wire, http_version)`` tuple (or to a run of requests of the same kind),
one to a histogram bucket, and the body bytes to two ints: no locks (one thread), no label formatting, no client-library
objects. Turning raw keys into label values (unknown methods folded into ``other``, the protocol's name)
happens in :meth:`Collector.fold`, at most every half second, which also empties the raw dict, so a client
sending many odd methods costs memory for under a second.

Gauges are read when a snapshot is made, not kept per request: requests in flight from
``ServerContext.in_flight``, connections and open WebSockets by walking ``ServerContext.connections``. The
event loop's lag is measured by a timer that notes how late it fires.

A snapshot (:meth:`Collector.snapshot`) is JSON-ready and cumulative since the process started: a worker
sends one to its master every second and once more when it stops (bascule.workers, frame ``SNAPSHOT``);
the master keeps the last per worker and adds a dead worker's counts to a retired total
(:mod:`bascule.ops.merge`), so what a worker reported is never lost. docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from bascule.config import Config
    from bascule.context import ServerContext
    from bascule.protocols.exchange import Exchange

DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Request duration buckets in seconds (prometheus_client's defaults): --metrics-buckets replaces them."""
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Event-loop lag buckets in seconds: a healthy loop is under a millisecond late."""
LAG_INTERVAL: Final = 0.25  # seconds between lag probes
PUBLISH_INTERVAL: Final = 1.0  # seconds between snapshots sent to the master
METHODS: Final = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"))
"""Methods kept as label values; any other is counted as ``other`` (a client chooses the method)."""
DROPPED_STATUS: Final = "499"
"""The status label of a request whose client went away before its response was complete (nginx's 499)."""
_CONNECTION_LABELS: Final = {"H1Connection": "http/1.1", "H2Connection": "h2", "H3Conn": "h3",
                             "WSConnection": "websocket", "StreamWebSocket": "websocket", "FcgiConnection": "fastcgi"}


def enabled(config: Config) -> bool:
    """--metrics, or when it is not given, whether an admin listener will serve them."""
    if config.metrics is not None:
        return config.metrics
    return config.admin_bind is not None


def parse_buckets(text: str) -> tuple[float, ...]:
    """--metrics-buckets: comma-separated upper bounds in seconds, increasing, finite and positive; empty:
    :data:`DEFAULT_BUCKETS`. Raises ValueError with what is wrong."""
    if not text.strip():
        return DEFAULT_BUCKETS
    bounds: list[float] = []
    for word in text.split(","):
        try:
            bound = float(word.strip())
        except ValueError:
            raise ValueError(f"{word.strip()!r} is not a number of seconds") from None
        if not math.isfinite(bound) or bound <= 0:
            raise ValueError(f"bucket bounds must be positive and finite, got {word.strip()!r}")
        if bounds and bound <= bounds[-1]:
            raise ValueError(f"bucket bounds must increase, got {bounds[-1]:g} then {bound:g}")
        bounds.append(bound)
    if len(bounds) > 64:
        raise ValueError(f"at most 64 bucket bounds, got {len(bounds)}")
    return tuple(bounds)


def protocol_label(wire: str, http_version: str) -> str:
    """The ``protocol`` label: ``http/1.0`` or ``http/1.1`` for HTTP/1.x, else the wire (h2, uwsgi...)."""
    return "http/" + http_version if wire == "http" else wire


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class Collector:
    """Counts what a serving process does (see the module docstring); ``publish`` sends a snapshot on."""

    def __init__(self, ctx: ServerContext, bounds: tuple[float, ...] = DEFAULT_BUCKETS, *,
                 publish: Callable[[bytes, bool], None] | None = None) -> None:
        self.ctx = ctx
        self.loop: asyncio.AbstractEventLoop = ctx.loop
        self.clock: Callable[[], float] = time.perf_counter  # durations from Exchange.perf_start (sub-millisecond)
        self.bounds = bounds
        self.publish = publish
        self.pid = os.getpid()
        self.started = time.time()
        # per request (request_finished)
        self._raw: dict[tuple[str, int, str, str], int] = {}
        self._run = 0  # requests of the kind below not yet in _raw
        self._run_method = ""
        self._run_status = 0
        self._run_wire = ""
        self._run_version = ""
        self._durations = [0] * (len(bounds) + 1)
        self._duration_sum = 0.0
        self._sent = 0
        self._received = 0
        self._static: dict[int, int] = {}
        # folded (labels), cumulative
        self.requests: dict[tuple[str, str, str], int] = {}
        # the loop's lag
        self._lag = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        self._lag_last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._publish_at = 0.0

    # -- the observer ---------------------------------------------------------------------------------
    def request_started(self, ex: Exchange) -> None:
        """Nothing to count yet: requests in flight are ServerContext's count, read with each snapshot."""

    def request_finished(self, ex: Exchange) -> None:
        method = ex.method
        wire = ex.wire
        version = ex.http_version
        dropped = ex.dropped
        status = 499 if dropped else ex.status
        # Requests come in runs of the same kind (GET 200 over HTTP/1.1): a run is counted in an int and
        # goes to the dict when the kind changes, which spares most requests hashing a 4-tuple twice.
        if (status == self._run_status and method == self._run_method and wire == self._run_wire
                and version == self._run_version):
            self._run += 1
        else:
            self._end_run()
            self._run_method, self._run_status, self._run_wire, self._run_version = method, status, wire, version
            self._run = 1
        if not dropped:
            duration = self.clock() - ex.perf_start
            bounds = self.bounds
            i = 0
            n = len(bounds)
            while i < n and duration > bounds[i]:  # most requests stop at the first bucket: cheaper than bisect
                i += 1
            self._durations[i] += 1
            self._duration_sum += duration
        self._sent += ex.sent
        self._received += ex.received
        if ex.static:
            static = self._static
            static[ex.status] = static.get(ex.status, 0) + 1

    def _end_run(self) -> None:
        run = self._run
        if run:
            self._run = 0
            key = (self._run_method, self._run_status, self._run_wire, self._run_version)
            self._raw[key] = self._raw.get(key, 0) + run

    # -- timers ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start probing the loop's lag (and publishing snapshots, with ``publish``)."""
        now = self.loop.time()
        self._publish_at = now + PUBLISH_INTERVAL
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        self._due = now + LAG_INTERVAL
        self._timer = self.loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.observe_lag(max(0.0, now - self._due))
        self.fold()
        if self.publish is not None and now >= self._publish_at:
            self._publish_at = now + PUBLISH_INTERVAL
            self._send(final=False)
        self._schedule(now)

    def observe_lag(self, lag: float) -> None:
        self._lag[bisect_left(LAG_BUCKETS, lag)] += 1
        self._lag_sum += lag
        self._lag_last = lag

    def close(self) -> None:
        """Stop the timers and publish the last snapshot (the master keeps it when this worker is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.publish is not None:
            self._send(final=True)

    def _send(self, *, final: bool) -> None:
        publish = self.publish
        if publish is None:
            return
        try:
            publish(json.dumps(self.snapshot(), separators=(",", ":")).encode(), final)
        except Exception:  # metrics must never take the server down
            self.ctx.error_log.exception("could not publish a metrics snapshot")

    # -- snapshots ------------------------------------------------------------------------------------
    def fold(self) -> None:
        """Move the per-request raw counts into the labelled totals (and empty the raw dict)."""
        self._end_run()
        raw, self._raw = self._raw, {}
        requests = self.requests
        for (method, status, wire, version), count in raw.items():
            label = (method_label(method), str(status), protocol_label(wire, version))
            requests[label] = requests.get(label, 0) + count

    def gauges(self) -> tuple[dict[str, int], int]:
        """(connections by protocol, open WebSockets), from the server's connection set."""
        connections: dict[str, int] = {}
        websockets = 0
        for conn in list(self.ctx.connections):
            name = type(conn).__name__
            label = _CONNECTION_LABELS.get(name)
            if label is None:
                dialect = getattr(conn, "dialect", None)  # OneshotConnection: uwsgi or scgi
                label = str(getattr(dialect, "name", None) or name).lower()
            connections[label] = connections.get(label, 0) + 1
            if label == "websocket":
                phase = getattr(conn, "phase", None)
                if getattr(phase, "name", "") == "OPEN":
                    websockets += 1
        return connections, websockets

    def snapshot(self) -> dict[str, Any]:
        """Every figure, JSON-ready: counters cumulative since the start, gauges as of now."""
        self.fold()
        connections, websockets = self.gauges()
        return {
            "pid": self.pid,
            "started": self.started,
            "time": time.time(),
            "requests": [[m, s, p, n] for (m, s, p), n in self.requests.items()],
            "bounds": list(self.bounds),
            "duration": list(self._durations),
            "duration_sum": self._duration_sum,
            "received": self._received,
            "sent": self._sent,
            "static": [[str(status), n] for status, n in self._static.items()],
            "lag": list(self._lag),
            "lag_sum": self._lag_sum,
            "lag_last": self._lag_last,
            "in_flight": self.ctx.in_flight,
            "connections": connections,
            "websockets": websockets,
        }
