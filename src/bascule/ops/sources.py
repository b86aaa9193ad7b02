"""The two :class:`~bascule.ops.contract.AdminSource` implementations: the serving process, and the master.

:class:`ProcessSource` answers for one process serving alone (no workers), on its own event loop: the admin
routes run there too, so reading the server's state needs no lock, and a loop that is stuck answers nothing
(which is what a liveness probe's timeout is for).

:class:`MasterSource` answers for a master and its workers. The master's loop (supervisor.py) is a
selector loop in the main thread; the admin listener runs on an asyncio loop in another thread. The two meet
at :class:`MasterState`: the master publishes an immutable snapshot of its workers after each pass of its
loop, under a lock, and the admin thread reads the last one. Nothing of the supervisor's own objects crosses
the thread boundary.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bascule.ops.contract import MetricsView

MASTER_STALL = 10.0
"""Seconds without a pass of the master's loop (it passes at least once a second) before /livez fails."""

WORKER_STALL = 10.0
"""Seconds without a heartbeat (a worker beats at least once a second) after which a serving worker's loop
counts as stuck for /livez; the master replaces it after --timeout-worker-healthcheck either way."""

ResidentMiB = Callable[[int], "float | None"]


def resident_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, from /proc (None if it is gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _requests_by_pid(metrics: MetricsView | None) -> dict[str, Any]:
    """Per-worker request counts from the metrics summary (keyed by pid), when metrics are on."""
    if metrics is None:
        return {}
    per_worker = metrics.summary().get("per_worker")
    return {str(pid): row for pid, row in per_worker.items()} if isinstance(per_worker, dict) else {}


class ServingState:
    """What a serving process says of itself; :class:`bascule.server.Server` sets it as it starts and stops."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.serving = False
        """Lifespan startup is done and the listeners accept."""
        self.draining = False
        """A stop was asked for (--shutdown-delay running, or the graceful stop itself): /readyz fails."""
        self.check_ok = True
        """The --readiness-check's last answer (True when there is none)."""
        self.check_reason = ""
        self.connections: Callable[[], int] = lambda: 0
        self.in_flight: Callable[[], int] = lambda: 0


class ProcessSource:
    """AdminSource of one process serving alone: asked on the loop that serves, so it reads plain attributes."""

    def __init__(self, state: ServingState, *, rss: ResidentMiB = resident_mib) -> None:
        self.state = state
        self.rss = rss
        self.metrics_view: MetricsView | None = None  # set where metrics are on (ops/metrics.py)

    @property
    def metrics(self) -> MetricsView | None:
        return self.metrics_view

    def livez(self) -> tuple[bool, str]:
        return True, "ok"  # answered by the serving loop itself: if it were stuck, there would be no answer

    def readyz(self) -> tuple[bool, str]:
        state = self.state
        if state.draining:
            return False, "draining: the server is stopping"
        if not state.serving:
            return False, "starting: lifespan startup is not done yet"
        if not state.check_ok:
            return False, f"readiness check failing: {state.check_reason}"
        return True, "ok"

    def status(self) -> dict[str, Any]:
        state = self.state
        ready, _ = self.readyz()
        pid = os.getpid()
        metrics = self.metrics
        requests = _requests_by_pid(metrics).get(str(pid), {}).get("requests")
        row = {"pid": pid, "number": 0, "uptime_s": round(time.monotonic() - state.started_at, 1),
               "requests": requests, "rss_mib": _rounded(self.rss(pid)), "restarts": 0,
               "state": "draining" if state.draining else "serving" if state.serving else "booting",
               "connections": state.connections(), "in_flight": state.in_flight()}
        return {"time": time.time(), "mode": "process", "ready": ready, "draining": state.draining,
                "workers": [row], "restarts": 0, "metrics": metrics.summary() if metrics is not None else None}


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker as the master last saw it (a snapshot: the admin thread never reads the live Worker)."""

    pid: int
    number: int
    spawned: float  # time.monotonic() at fork
    state: str  # "booting", "serving", "retiring"
    last_beat: float  # time.monotonic() of its last report
    restarts: int  # workers this one's place had before it (deaths and replacements)
    check_ok: bool = True
    check_reason: str = ""


class MasterState:
    """The master's snapshot for the admin thread, replaced whole under a lock after each pass of its loop."""

    def __init__(self, *, readiness_check: bool = False) -> None:
        self.lock = threading.Lock()
        self.readiness_check = readiness_check
        self.started_at = time.monotonic()
        self.beat = self.started_at
        self.rows: tuple[WorkerRow, ...] = ()
        self.draining = False
        self.restarts = 0

    def publish(self, rows: tuple[WorkerRow, ...], *, draining: bool, restarts: int, now: float) -> None:
        with self.lock:
            self.rows, self.draining, self.restarts, self.beat = rows, draining, restarts, now

    def snapshot(self) -> tuple[tuple[WorkerRow, ...], bool, float]:
        with self.lock:
            return self.rows, self.draining, self.beat


class MasterSource:
    """AdminSource of a master: answers from the last :class:`MasterState` snapshot, on the admin thread."""

    def __init__(self, state: MasterState, *, rss: ResidentMiB = resident_mib,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.rss = rss
        self.clock = clock
        self.metrics_view: MetricsView | None = None
        """The master's merge of worker snapshots, when metrics are on. Its methods are called on the admin
        thread while the master's loop merges: it guards its own state (a lock, or whole-object swaps)."""

    @property
    def metrics(self) -> MetricsView | None:
        return self.metrics_view

    def livez(self) -> tuple[bool, str]:
        rows, _, beat = self.state.snapshot()
        now = self.clock()
        if now - beat > MASTER_STALL:
            return False, f"the master's loop has not run for {now - beat:.0f} s"
        serving = [row for row in rows if row.state == "serving"]
        if serving and all(now - row.last_beat > WORKER_STALL for row in serving):
            return False, f"no serving worker has reported for {WORKER_STALL:g} s"
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        rows, draining, _ = self.state.snapshot()
        if draining:
            return False, "draining: the server is stopping"
        serving = [row for row in rows if row.state == "serving"]
        if not serving:
            booting = not rows or any(row.state == "booting" for row in rows)
            return False, "no worker serving yet" if booting else "no worker serving"
        if self.state.readiness_check:
            passing = [row for row in serving if row.check_ok]
            if not passing:
                return False, f"readiness check failing: {serving[0].check_reason or 'not run yet'}"
        return True, "ok"

    def status(self) -> dict[str, Any]:
        rows, draining, _ = self.state.snapshot()
        now = self.clock()
        ready, _ = self.readyz()
        metrics = self.metrics
        requests = _requests_by_pid(metrics)
        workers = [{"pid": row.pid, "number": row.number, "uptime_s": round(now - row.spawned, 1),
                    "requests": requests.get(str(row.pid), {}).get("requests"), "rss_mib": _rounded(self.rss(row.pid)),
                    "restarts": row.restarts, "state": row.state}
                   for row in rows]
        return {"time": time.time(), "mode": "master", "ready": ready, "draining": draining, "workers": workers,
                "restarts": self.state.restarts, "metrics": metrics.summary() if metrics is not None else None}
