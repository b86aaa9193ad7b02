"""ops/readiness.py: the --readiness-check hook, run on the loop once a second, its answer kept."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
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
    started = running = most = 0

    async def check() -> bool:
        nonlocal started, running, most
        started += 1
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(10)
        finally:
            running -= 1
        return True

    rc, changes = run(check, seconds=0.3, timeout=0.1)
    assert most == 1 and 1 <= started <= 3  # each run is cancelled at its timeout before the next one starts
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


def test_a_blocking_sync_check_does_not_block_the_loop() -> None:
    # a sync check that waits on the network (a database ping with no timeout) must not stall the loop that
    # serves the requests, the heartbeat and, in one process, /livez itself
    release = threading.Event()
    started = 0

    def check() -> bool:
        nonlocal started
        started += 1
        release.wait(0.3)
        return True

    gaps: list[float] = []

    async def main() -> ReadinessCheck:
        loop = asyncio.get_running_loop()
        rc = ReadinessCheck(check, loop, interval=0.02, timeout=0.1)
        rc.start()
        last = loop.time()
        for _ in range(20):
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()
        failing = (rc.ok, rc.reason)
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if rc.ok:
                break
        rc.stop()
        assert failing == (False, "no answer within 0.1 s")
        return rc

    rc = asyncio.run(main())
    assert max(gaps) < 0.1, gaps
    assert started >= 1 and rc.ok


def test_a_sync_check_runs_once_at_a_time_and_its_exceptions_count() -> None:
    running = 0
    most = 0

    def check() -> bool:
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.05)
        running -= 1
        raise ConnectionError("db down")

    rc, changes = run(check, seconds=0.3)
    assert most == 1
    assert changes == [(False, "raised ConnectionError: db down")] and not rc.ok


def test_a_hung_async_check_is_cancelled_at_its_timeout_and_tried_again() -> None:
    # one answer that never comes (a lost packet, a client without a timeout) must not fail /readyz for good
    calls = 0
    cancelled = 0

    async def check() -> bool:
        nonlocal calls, cancelled
        calls += 1
        if calls == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled += 1
                raise
        return True

    rc, changes = run(check, seconds=0.4, timeout=0.1)
    assert cancelled == 1
    assert changes == [(False, "no answer within 0.1 s"), (True, "")] and rc.ok


def test_an_object_with_an_async_call_runs_on_the_loop() -> None:
    class Check:
        thread = ""

        async def __call__(self) -> bool:
            Check.thread = threading.current_thread().name
            return True

    _rc, changes = run(Check(), seconds=0.1)
    assert changes == [(True, "")] and Check.thread == threading.main_thread().name


def test_a_sync_callable_returning_a_coroutine_is_awaited() -> None:
    async def ping() -> bool:
        return False

    changes: list[tuple[bool, str]] = []

    async def main() -> None:  # one run only: a later one in flight at the stop would leave its coroutine unawaited
        rc = ReadinessCheck(lambda: ping(), asyncio.get_running_loop(), interval=60,
                            on_change=lambda ok, why: changes.append((ok, why)))
        rc.start()
        await rc.first_answer()
        rc.stop()

    asyncio.run(main())
    assert changes == [(False, "returned False")]


def test_a_reason_is_one_short_line() -> None:
    # /readyz answers one line (what a probe logs), and each change goes over the report pipe and into the log:
    # a driver's multi-line error, or the repr of a large false value, is cut down
    def check() -> Any:
        raise ConnectionError("connection refused\n\tIs the server running on host 'db'?\n" + "x" * 5000)

    _rc, changes = run(check, seconds=0.1)
    [(ok, reason)] = changes
    assert not ok and "\n" not in reason and "\t" not in reason and len(reason) <= 300
    assert reason.startswith("raised ConnectionError: connection refused Is the server running on host 'db'? xxx")
    assert reason.endswith("...")
    _rc, changes = run(lambda: [], seconds=0.1)
    assert changes == [(False, "returned []")]


def test_a_sync_check_that_raises_systemexit_fails_and_is_tried_again() -> None:
    # in its thread, an exception outside Exception ended the thread without an answer: 'no answer' for good
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise SystemExit(3)
        return True

    _rc, changes = run(check, seconds=0.3)
    assert changes == [(False, "raised SystemExit: 3"), (True, "")]
