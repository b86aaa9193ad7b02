"""The master's view of its workers' metrics: their snapshots merged, dead workers' counts kept.

Each worker sends a cumulative snapshot every second and once as it stops (:mod:`bascule.ops.metrics`).
:class:`MetricsBook` keeps the last one per live worker. When the master reaps a worker it first reads
what the worker still had in the pipe, then :meth:`MetricsBook.retire` adds that worker's counters and
histograms to ``retired``: the sum over workers never goes back, so a counter Prometheus reads stays a
counter through crashes, recycling and reloads (what a worker counted after its last snapshot is lost with
it, at most a second's worth for a crash, nothing for a graceful stop). Gauges (in flight, connections,
WebSockets, the loop's lag) are the live workers' only.

The supervisor writes from its loop and the admin listener reads from its thread, so every method takes
the book's lock; the work under it is a few dict additions.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from bascule.ops.metrics import DEFAULT_BUCKETS, LAG_BUCKETS

_log = logging.getLogger("bascule.error")
RESTART_REASONS = ("crash", "heartbeat", "max-requests", "memory", "reload")
"""bascule_worker_restarts_total's reasons, always shown (at 0 until one happens)."""


class Totals:
    """Counters, histograms and gauges of one process or summed over several (same bucket bounds)."""

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations = [0] * (len(bounds) + 1)
        self.duration_sum = 0.0
        self.received = 0
        self.sent = 0
        self.static: dict[str, int] = {}
        self.lag = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        # gauges
        self.lag_last = 0.0  # the worst of the live processes
        self.in_flight = 0
        self.connections: dict[str, int] = {}
        self.websockets = 0

    @classmethod
    def of(cls, snapshot: Mapping[str, Any]) -> Totals:
        """One process's snapshot (ValueError/TypeError/KeyError if it is not one)."""
        totals = cls(tuple(float(b) for b in snapshot["bounds"]))
        totals.add(snapshot, gauges=True)
        return totals

    def add(self, snapshot: Mapping[str, Any] | Totals, *, gauges: bool) -> None:
        """Add a snapshot's (or other totals') counters, and with ``gauges`` its gauges too."""
        other = snapshot if isinstance(snapshot, Totals) else _parsed(snapshot)
        if other.bounds != self.bounds:
            raise ValueError(f"bucket bounds differ: {other.bounds} against {self.bounds}")
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
        self.durations = [a + b for a, b in zip(self.durations, other.durations, strict=True)]
        self.duration_sum += other.duration_sum
        self.received += other.received
        self.sent += other.sent
        for status, count in other.static.items():
            self.static[status] = self.static.get(status, 0) + count
        self.lag = [a + b for a, b in zip(self.lag, other.lag, strict=True)]
        self.lag_sum += other.lag_sum
        if gauges:
            self.lag_last = max(self.lag_last, other.lag_last)
            self.in_flight += other.in_flight
            for proto, count in other.connections.items():
                self.connections[proto] = self.connections.get(proto, 0) + count
            self.websockets += other.websockets

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())


def _parsed(snapshot: Mapping[str, Any]) -> Totals:
    """A snapshot dict checked and typed (raises ValueError/TypeError/KeyError on anything else)."""
    bounds = tuple(float(b) for b in snapshot["bounds"])
    t = Totals(bounds)
    for method, status, proto, count in snapshot["requests"]:
        key = (str(method), str(status), str(proto))
        t.requests[key] = t.requests.get(key, 0) + _count(count)
    t.durations = [_count(c) for c in snapshot["duration"]]
    t.lag = [_count(c) for c in snapshot["lag"]]
    if len(t.durations) != len(bounds) + 1 or len(t.lag) != len(LAG_BUCKETS) + 1:
        raise ValueError("a histogram's bucket counts do not match its bounds")
    t.duration_sum = float(snapshot["duration_sum"])
    t.lag_sum = float(snapshot["lag_sum"])
    t.lag_last = float(snapshot["lag_last"])
    t.received = _count(snapshot["received"])
    t.sent = _count(snapshot["sent"])
    for status, count in snapshot["static"]:
        t.static[str(status)] = t.static.get(str(status), 0) + _count(count)
    t.in_flight = _count(snapshot["in_flight"])
    t.connections = {str(proto): _count(count) for proto, count in dict(snapshot["connections"]).items()}
    t.websockets = _count(snapshot["websockets"])
    return t


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"a count must be a non-negative integer, got {value!r}")
    return value


class WorkerFigures:
    """What the book keeps of one live worker: its last snapshot, parsed."""

    __slots__ = ("pid", "started", "totals")

    def __init__(self, pid: int, started: float, totals: Totals) -> None:
        self.pid = pid
        self.started = started
        self.totals = totals


class MetricsBook:
    """The live workers' last snapshots, the retired workers' counts, and the master's restart counts."""

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        self.lock = threading.Lock()
        self.live: dict[int, WorkerFigures] = {}
        self.retired = Totals(bounds)
        self.restarts: dict[str, int] = dict.fromkeys(RESTART_REASONS, 0)
        self._warned = False

    def update(self, pid: int, payload: bytes) -> None:
        """A worker's snapshot frame arrived (a malformed one is logged once and ignored)."""
        try:
            data = json.loads(payload)
            totals = _parsed(data)
            if totals.bounds != self.bounds:
                raise ValueError(f"bucket bounds {totals.bounds} are not the master's {self.bounds}")
            started = float(data.get("started", 0.0))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if not self._warned:
                self._warned = True
                _log.warning("worker %d sent a metrics snapshot the master cannot read (%s): ignored", pid, exc)
            return
        with self.lock:
            self.live[pid] = WorkerFigures(pid, started, totals)

    def retire(self, pid: int) -> None:
        """Worker ``pid`` is gone (reaped): its last counts join the retired total; its gauges are dropped."""
        with self.lock:
            figures = self.live.pop(pid, None)
            if figures is not None:
                self.retired.add(figures.totals, gauges=False)

    def restarted(self, reason: str) -> None:
        """The master replaced a worker (crash, heartbeat, max-requests, memory, reload)."""
        with self.lock:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def total(self) -> tuple[Totals, dict[int, Totals], dict[str, int]]:
        """(everything summed, each live worker's own, restarts by reason): copies, safe to read unlocked."""
        with self.lock:
            total = Totals(self.bounds)
            total.add(self.retired, gauges=False)
            per_worker = {}
            for pid, figures in self.live.items():
                total.add(figures.totals, gauges=True)
                per_worker[pid] = figures.totals
            return total, per_worker, dict(self.restarts)
