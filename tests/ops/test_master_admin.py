"""The master's side of the admin listener (supervisor.py): the snapshot it publishes, readiness reports from
workers, restart counts, and --shutdown-delay's signal handling. No process is forked here."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from bascule.config import Config
from bascule.supervisor import State, Supervisor, Worker
from bascule.workers import READINESS, READY, frame


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        os.close(fd)


def supervisor(**options: object) -> Supervisor:
    return Supervisor(Config(app="x:app", workers=2, **options))  # type: ignore[arg-type]


def worker(pid: int, fd: int, **fields: object) -> Worker:
    return Worker(pid=pid, number=pid, report_fd=fd, spawned=1.0, generation=1, last_beat=1.0, **fields)  # type: ignore[arg-type]


def test_published_rows_and_readiness_reports(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sup = supervisor(readiness_check="x:ready")
    assert sup.admin_source.readyz() == (False, "no worker serving yet")
    booting = worker(101, r, check_ok=False)
    sup.workers = [booting]
    os.write(w, frame(READY))
    sup._read_reports(booting)
    sup._publish(5.0)
    assert booting.state is State.SERVING
    assert sup.admin_source.readyz() == (False, "readiness check failing: not run yet")
    os.write(w, frame(READINESS, json.dumps({"ok": False, "reason": "returned None"}).encode()))
    sup._read_reports(booting)
    sup._publish(5.0)
    assert sup.admin_source.readyz() == (False, "readiness check failing: returned None")
    os.write(w, frame(READINESS, json.dumps({"ok": True, "reason": ""}).encode()))
    sup._read_reports(booting)
    sup._publish(5.0)
    assert sup.admin_source.readyz() == (True, "ok")
    [row] = sup.admin_state.rows
    assert (row.pid, row.state, row.check_ok, row.last_beat) == (101, "serving", True, booting.last_beat)


def test_a_garbled_readiness_report_is_ignored(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sup = supervisor()
    one = worker(101, r, check_ok=True)
    os.write(w, frame(READINESS, b"{not json"))
    sup._read_reports(one)
    assert one.check_ok


def test_draining_is_published_during_the_delay_and_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = supervisor(shutdown_delay=5)
    stops: list[bool] = []
    monkeypatch.setattr(sup, "_stop", lambda *, fast: stops.append(fast))
    sup._signals = [signal.SIGTERM]
    sup._handle_signals()
    assert stops == [] and sup.delay_until is not None
    sup._publish(1.0)
    assert sup.admin_source.readyz() == (False, "draining: the server is stopping")
    assert sup._wait(sup.delay_until - 0.5) <= 0.5  # the loop wakes for the end of the delay
    sup._signals = [signal.SIGTERM]  # a second one: the stop now
    sup._handle_signals()
    assert stops == [False]


def test_sigquit_during_the_delay_is_a_fast_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = supervisor(shutdown_delay=5)
    stops: list[bool] = []
    monkeypatch.setattr(sup, "_stop", lambda *, fast: stops.append(fast))
    sup._signals = [signal.SIGINT, signal.SIGQUIT]
    sup._handle_signals()
    assert stops == [True]


def test_without_a_delay_the_stop_is_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = supervisor()
    stops: list[bool] = []
    monkeypatch.setattr(sup, "_stop", lambda *, fast: stops.append(fast))
    sup._signals = [signal.SIGTERM]
    sup._handle_signals()
    assert stops == [False] and sup.delay_until is None


def test_restart_counts_follow_the_place(monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]) -> None:
    sup = supervisor()
    dead = worker(101, pipe[0], restarts=2, ready_at=1.0)
    dead.state = State.SERVING
    other = worker(102, pipe[0])
    other.state = State.SERVING
    sup.workers = [other]
    monkeypatch.setattr(sup, "_maintain", lambda now: None)
    sup._on_exit(dead, 1, "exited with code 1")
    assert sup._inherited == [2]
    forked: list[int] = []
    monkeypatch.setattr(sup, "_fork_worker", lambda setup, report_r: forked.append(setup.number) or 999999)
    monkeypatch.setattr(sup._selector, "register", lambda *args: None)
    new = sup._spawn(10.0)
    assert new is not None and new.restarts == 3 and sup.restarts == 1
    replacement = sup._spawn(10.0, replaces=other)
    assert replacement is not None and replacement.restarts == 1 and sup.restarts == 2
    fresh = sup._spawn(10.0)
    assert fresh is not None and fresh.restarts == 0 and sup.restarts == 2
    for w in (new, replacement, fresh):
        os.close(w.report_fd)
