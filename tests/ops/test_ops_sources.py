"""ops/sources.py: what the process and the master answer for /livez, /readyz and /status.json."""

from __future__ import annotations

import os
import threading

from bascule.ops.sources import (
    MASTER_STALL,
    WORKER_STALL,
    MasterSource,
    MasterState,
    ProcessSource,
    ServingState,
    WorkerRow,
    resident_mib,
)


class View:
    def exposition(self) -> bytes:
        return b""

    def summary(self) -> dict[str, object]:
        return {"requests_total": 7, "per_worker": {os.getpid(): {"requests": 7}, 11: {"requests": 2}}}


def test_process_readiness_follows_its_state() -> None:
    state = ServingState()
    source = ProcessSource(state, rss=lambda pid: 12.34)
    assert source.livez() == (True, "ok")
    assert source.readyz() == (False, "starting: lifespan startup is not done yet")
    state.serving = True
    assert source.readyz() == (True, "ok")
    state.check_ok, state.check_reason = False, "returned False"
    assert source.readyz() == (False, "readiness check failing: returned False")
    state.check_ok = True
    state.draining = True
    assert source.readyz() == (False, "draining: the server is stopping")


def test_process_status() -> None:
    state = ServingState()
    state.serving = True
    state.connections = lambda: 3
    source = ProcessSource(state, rss=lambda pid: 12.34)
    status = source.status()
    assert status["mode"] == "process" and status["ready"] is True and status["metrics"] is None
    [row] = status["workers"]
    assert row["pid"] == os.getpid() and row["rss_mib"] == 12.3 and row["state"] == "serving"
    assert row["connections"] == 3 and row["requests"] is None and row["restarts"] == 0
    assert source.metrics is None
    source.metrics_view = View()
    status = source.status()
    assert status["metrics"]["requests_total"] == 7 and status["workers"][0]["requests"] == 7


def row(pid: int, state: str = "serving", *, beat: float = 100.0, ok: bool = True, reason: str = "") -> WorkerRow:
    return WorkerRow(pid=pid, number=pid, spawned=50.0, state=state, last_beat=beat, restarts=1, check_ok=ok,
                     check_reason=reason)


def master(rows: tuple[WorkerRow, ...], *, draining: bool = False, now: float = 100.0,
           check: bool = False) -> MasterSource:
    state = MasterState(readiness_check=check)
    state.publish(rows, draining=draining, restarts=4, now=100.0)
    return MasterSource(state, rss=lambda pid: float(pid), clock=lambda: now)


def test_master_readiness() -> None:
    assert master(()).readyz() == (False, "no worker serving yet")
    assert master((row(10, "booting"),)).readyz() == (False, "no worker serving yet")
    assert master((row(10, "retiring"),)).readyz() == (False, "no worker serving")
    assert master((row(10, "booting"), row(11))).readyz() == (True, "ok")
    assert master((row(11),), draining=True).readyz() == (False, "draining: the server is stopping")
    assert master((row(11, ok=False, reason="db down"),), check=True).readyz() == (
        False, "readiness check failing: db down")
    assert master((row(11, ok=False), row(12)), check=True).readyz() == (True, "ok")
    assert master((row(11, ok=False),), check=False).readyz() == (True, "ok")  # no check configured


def test_master_liveness() -> None:
    assert master((row(11),)).livez() == (True, "ok")
    assert master(()).livez() == (True, "ok")  # booting: nothing serving is not dead
    ok, why = master((row(11),), now=100.0 + MASTER_STALL + 1).livez()
    assert not ok and "master's loop" in why
    state = master((row(11, beat=100.0 - WORKER_STALL - 1), row(12, beat=100.0 - WORKER_STALL - 2)))
    assert state.livez()[0] is False
    assert master((row(11, beat=100.0 - WORKER_STALL - 1), row(12))).livez() == (True, "ok")


def test_master_status_rows() -> None:
    source = master((row(11), row(12, "retiring")), now=110.0)
    status = source.status()
    assert status["mode"] == "master" and status["ready"] is True and status["restarts"] == 4
    assert status["workers"] == [
        {"pid": 11, "number": 11, "uptime_s": 60.0, "requests": None, "rss_mib": 11.0, "restarts": 1,
         "state": "serving"},
        {"pid": 12, "number": 12, "uptime_s": 60.0, "requests": None, "rss_mib": 12.0, "restarts": 1,
         "state": "retiring"}]
    source.metrics_view = View()
    assert source.status()["workers"][0]["requests"] == 2


def test_master_state_is_read_whole_under_its_lock() -> None:
    state = MasterState()
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            state.publish((row(n), row(n)), draining=n % 2 == 0, restarts=n, now=float(n))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(2000):
            rows, draining, beat = state.snapshot()
            if rows:
                assert rows[0].pid == rows[1].pid == int(beat) and draining == (int(beat) % 2 == 0)
    finally:
        stop.set()
        thread.join()


def test_resident_mib() -> None:
    mib = resident_mib(os.getpid())
    assert mib is not None and 1 < mib < 100_000
    assert resident_mib(2**22 + 12345) is None
