"""ops/readiness.py: the --readiness-check hook, run on the loop once a second, its answer kept."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bascule.errors import AppLoadError
from bascule.ops.readiness import ReadinessCheck, load_check


def run(check: Any, *, seconds: float, timeout: float = 5.0) -> tuple[ReadinessCheck, list[tuple[bool, str]]]:
    changes: list[tuple[bool, str]] = []

    async def main() -> ReadinessCheck:
        rc = ReadinessCheck(check, asyncio.get_running_loop(), on_change=lambda ok, why: changes.append((ok, why)),
                            interval=0.02, timeout=timeout)
        rc.start()
        await asyncio.sleep(seconds)
        rc.stop()
        return rc

    return asyncio.run(main()), changes


def test_sync_check_true_then_false_reports_changes_only() -> None:
    answers = iter([True, True, False, False, 1, "yes"] + [True] * 100)
    rc, changes = run(lambda: next(answers), seconds=0.3)
    assert changes == [(True, ""), (False, "returned False"), (True, "")]
    assert rc.ok


def test_async_check_and_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def check() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("db down")
        return True

    caplog.set_level(logging.INFO, "bascule.error")
    _rc, changes = run(check, seconds=0.3)
    assert changes[:3] == [(True, ""), (False, "raised ConnectionError: db down"), (True, "")]
    assert "readiness check failing: raised ConnectionError: db down" in caplog.text
    assert caplog.text.count("readiness check failing") == 1  # once per change, not per run


def test_a_slow_async_check_runs_once_at_a_time_and_times_out() -> None:
    started = 0

    async def check() -> bool:
        nonlocal started
        started += 1
        await asyncio.sleep(10)
        return True

    rc, changes = run(check, seconds=0.3, timeout=0.1)
    assert started == 1
    assert changes == [(False, "no answer within 0.1 s")] and not rc.ok


def test_before_its_first_answer_it_is_not_ready() -> None:
    rc = ReadinessCheck(lambda: True, asyncio.new_event_loop())
    assert not rc.ok and "not answered" in rc.reason
    rc.loop.close()


def test_load_check(tmp_path: Path) -> None:
    (tmp_path / "probe_mod_a.py").write_text("def ready():\n    return True\nNOT = 3\n")
    assert load_check("probe_mod_a:ready", str(tmp_path))() is True
    with pytest.raises(AppLoadError, match="not a callable"):
        load_check("probe_mod_a:NOT", str(tmp_path))
    with pytest.raises(AppLoadError):
        load_check("probe_mod_a:missing", str(tmp_path))
