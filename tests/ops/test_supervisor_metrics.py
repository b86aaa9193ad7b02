"""The master's side of the metrics (bascule.supervisor with --metrics): snapshot frames reach the book, a
reaped worker's counts are retired, and each replacement is counted in bascule_worker_restarts_total."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from test_merge import snap

from bascule.config import Config
from bascule.supervisor import State, Supervisor, Worker
from bascule.workers import SNAPSHOT, frame


def supervisor(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Supervisor:
    sup = Supervisor(Config(app="a:b", workers=2, **options))
    monkeypatch.setattr(sup, "_maintain", lambda now: None)  # no forks here
    monkeypatch.setattr(sup, "_retire", lambda w, fast: setattr(w, "state", State.RETIRING))  # no signals
    return sup


def worker(pid: int, **fields: Any) -> Worker:
    return Worker(pid=pid, number=pid, report_fd=-1, spawned=0.0, generation=1, **fields)


def test_no_book_without_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    assert supervisor(monkeypatch).metrics is None


def test_snapshot_frames_reach_the_book(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = supervisor(monkeypatch, metrics=True)
    r, w = os.pipe()
    try:
        wk = worker(7, state=State.SERVING)
        wk.report_fd = r
        os.set_blocking(r, False)
        os.write(w, frame(SNAPSHOT, json.dumps(snap(4)).encode()) + frame(SNAPSHOT, json.dumps(snap(9)).encode()))
        sup._read_reports(wk)
    finally:
        os.close(r)
        os.close(w)
    assert sup.metrics is not None
    total, per_worker, _ = sup.metrics.total()
    assert total.requests_total == 9 and set(per_worker) == {7}


def test_a_crash_and_a_stuck_worker_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = supervisor(monkeypatch, metrics=True)
    other = worker(2, state=State.SERVING, ready_at=1.0)
    crashed = worker(3, state=State.SERVING, ready_at=1.0)
    stuck = worker(4, state=State.SERVING, ready_at=1.0, stuck=True)
    sup.workers = [other]
    sup._on_exit(crashed, 1, "exited with code 1")
    sup._on_exit(stuck, 137, "was killed by SIGKILL")
    assert sup.metrics is not None
    restarts = sup.metrics.total()[2]
    assert restarts["crash"] == 1 and restarts["heartbeat"] == 1


def test_a_requested_stop_is_no_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = supervisor(monkeypatch, metrics=True)
    sup._on_exit(worker(3, state=State.RETIRING, ready_at=1.0), 0, "exited with code 0")
    assert sup.metrics is not None
    assert sum(sup.metrics.total()[2].values()) == 0


@pytest.mark.parametrize("reason", ["max-requests", "memory", "reload"])
def test_replacements_count_their_reason(monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    sup = supervisor(monkeypatch, metrics=True)
    old = worker(2, state=State.SERVING, ready_at=1.0, recycle=reason)
    new = worker(3, replaces=old)
    old.replaced_by = new
    sup.workers = [old, new]
    sup._on_ready(new, 5.0)
    assert sup.metrics is not None
    assert sup.metrics.total()[2][reason] == 1


@pytest.mark.parametrize("reason", ["max-requests", "memory", "reload"])
def test_a_worker_that_dies_while_its_replacement_boots_is_counted_once(monkeypatch: pytest.MonkeyPatch,
                                                                        reason: str) -> None:
    """The old worker crashes before its replacement is READY: one restart (crash), the replacement takes
    the dead worker's place, and the master never signals the dead (reaped, maybe reused) pid."""
    sup = supervisor(monkeypatch, metrics=True)
    retired: list[int] = []
    monkeypatch.setattr(sup, "_retire", lambda w, fast: retired.append(w.pid))
    old = worker(2, state=State.SERVING, ready_at=1.0, recycle=reason)
    new = worker(3, replaces=old)
    old.replaced_by = new
    other = worker(4, state=State.SERVING, ready_at=1.0)
    sup.workers = [other, new]  # old was reaped: _reap removed it before _on_exit
    sup._on_exit(old, 1, "exited with code 1")
    assert sup._primaries() == [other, new]  # the replacement fills the slot: no third worker is started
    sup._on_ready(new, 5.0)
    assert sup.metrics is not None
    restarts = sup.metrics.total()[2]
    assert restarts["crash"] == 1 and sum(restarts.values()) == 1
    assert retired == []
