"""Other work on the machine: how much CPU it took during a run, waiting for it to stop, measuring again.

On a shared or virtual machine other processes take CPU time from a run at random moments, and a run they
disturbed says little, even as a ratio. So every run's share of other work is measured (:class:`CpuAudit`)
and reported beside it, and :func:`calmly` waits for a quiet machine before a run and measures a disturbed
one again, keeping the least disturbed attempt. run.py and the round-based scripts share this policy.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import procs

BUSY_PCT = 10.0  # other work's CPU (% of one CPU) above which a run is flagged as disturbed


class CpuAudit:
    """How much CPU went to anything but the server, the load generator and this runner, over a span.

    Machine-wide busy time (/proc/stat) minus the server tree's (/proc/PID/stat), minus this process's and
    its reaped children's (wrk) from getrusage. What is left is other work that shared the CPUs, which
    makes a cell's numbers unreliable; it is reported beside each result.
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.hz = os.sysconf("SC_CLK_TCK")
        self._start = self._snapshot()
        self._t0 = time.monotonic()

    @staticmethod
    def _machine_busy() -> int:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal: irq/softirq time is left out, since on
        # loopback most of it is this run's own packets, which no process is charged for.
        user, nice, system = cpu[:3]
        steal = cpu[7] if len(cpu) > 7 else 0
        return user + nice + system + steal

    def _snapshot(self) -> tuple[float, float]:
        mine = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            mine += usage.ru_utime + usage.ru_stime
        server = procs.cpu_seconds([self.server_pid]) if self.server_pid is not None else 0.0
        return self._machine_busy() / self.hz, mine + server

    def others_pct(self) -> float | None:
        """Other work's CPU over the span, in % of one CPU (200% = both CPUs of a 2-CPU machine)."""
        try:
            end = self._snapshot()
        except (OSError, ValueError):
            return None
        wall = time.monotonic() - self._t0
        if wall <= 0:
            return None
        others = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return max(0.0, round(100 * others / wall, 1))


def wait_quiet(max_wait: float) -> float | None:
    """Wait (at most ``max_wait`` s) until other work uses under BUSY_PCT of a CPU; returns the last reading."""
    deadline = time.monotonic() + max_wait
    reading = None
    while True:
        audit = CpuAudit(None)
        time.sleep(0.5)
        reading = audit.others_pct()
        if reading is None or reading < BUSY_PCT or time.monotonic() >= deadline:
            return reading
        time.sleep(1.0)


class Disturbable(Protocol):
    """What :func:`calmly` reads of a measurement (run.py's Result, the other scripts' Round)."""

    status: str
    others_cpu_pct: float | None


D = TypeVar("D", bound=Disturbable)


def calmly(measure: Callable[[], D], quiet_wait: float, busy_retries: int,
           on_disturbed: Callable[[D], None] | None = None) -> tuple[D, int]:
    """``measure()`` on a quiet machine if one comes within ``quiet_wait`` seconds, again if other work used
    over BUSY_PCT of a CPU during it anyway (up to ``busy_retries`` times; ``on_disturbed`` hears of each
    attempt measured again). Returns the least disturbed ok attempt (else the last) and the attempts made."""
    attempts: list[D] = []
    for attempt in range(busy_retries + 1):
        if quiet_wait > 0:
            wait_quiet(quiet_wait)
        result = measure()
        attempts.append(result)
        if result.status != "ok" or (result.others_cpu_pct or 0.0) <= BUSY_PCT:
            break
        if attempt < busy_retries and on_disturbed is not None:
            on_disturbed(result)
    ok = [r for r in attempts if r.status == "ok"]
    return (min(ok, key=lambda r: r.others_cpu_pct or 0.0) if ok else attempts[-1]), len(attempts)
