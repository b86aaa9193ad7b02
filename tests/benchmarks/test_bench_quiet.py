"""benchmarks/quiet.py: other work's share of the CPUs during a run, waiting for a quiet machine, and measuring
a disturbed run again."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quiet


@dataclass
class Rnd:
    variant: str
    rps: float = 0.0
    status: str = "ok"
    others_cpu_pct: float | None = None


def test_cpu_audit_reads_a_share_of_a_cpu() -> None:
    audit = quiet.CpuAudit(os.getpid())
    time.sleep(0.05)
    pct = audit.others_pct()
    assert pct is not None and 0.0 <= pct <= 100.0 * (os.cpu_count() or 1)
    assert quiet.CpuAudit(None).server_pid is None


def test_wait_quiet_until_other_work_stops_or_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([50.0, 20.0, 3.0, 99.0])
    monkeypatch.setattr(quiet.CpuAudit, "others_pct", lambda self: next(readings))
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert quiet.wait_quiet(60.0) == 3.0  # the first reading under BUSY_PCT
    assert slept == [0.5, 1.0, 0.5, 1.0, 0.5]
    assert quiet.wait_quiet(0.0) == 99.0  # no time to wait: the one reading, however busy


def test_calmly_measures_again_when_disturbed(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(quiet, "wait_quiet", lambda seconds: waits.append(seconds))
    readings = iter([50.0, 30.0, 40.0])
    heard: list[float | None] = []

    def measure() -> Rnd:
        return Rnd("a", rps=1, others_cpu_pct=next(readings))

    best, attempts = quiet.calmly(measure, 5.0, 2, lambda r: heard.append(r.others_cpu_pct))
    assert (best.others_cpu_pct, attempts) == (30.0, 3)  # the least disturbed of the three
    assert heard == [50.0, 30.0]  # not the last one: nothing follows it
    assert waits == [5.0, 5.0, 5.0]
    # calm at once, or failed: no second attempt; no quiet wait asked, none made
    best, attempts = quiet.calmly(lambda: Rnd("a", others_cpu_pct=2.0), 0.0, 3)
    assert attempts == 1 and len(waits) == 3
    best, attempts = quiet.calmly(lambda: Rnd("a", status="failed", others_cpu_pct=90.0), 0.0, 3)
    assert attempts == 1 and best.status == "failed"


