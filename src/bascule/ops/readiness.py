"""``--readiness-check MODULE:ATTR``: the app's own say in ``/readyz`` (a database reachable, a cache warm).

The check runs on the serving event loop, at most once a second, never twice at a time: a probe then reads
the last answer instead of calling into the app per probe (a balancer checking every 200 ms from several
places would otherwise multiply the app's work). A sync callable runs on the loop, so it must be quick; an
async one runs as a task and counts as failing once it has not answered for ``CHECK_TIMEOUT`` seconds.
Anything true passes; a false value, an exception or a timeout fails, logged once per change (not once per
second). Each change is passed to ``on_change``: a worker reports it to its master (workers.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from bascule.errors import AppLoadError
from bascule.loader import import_from_string

_log = logging.getLogger("bascule.error")

CHECK_INTERVAL = 1.0
CHECK_TIMEOUT = 5.0


def load_check(spec: str, app_dir: str = ".") -> Callable[[], Any]:
    """The callable ``spec`` names (MODULE:ATTR); AppLoadError with one line when it is missing or not callable."""
    target = import_from_string(spec, app_dir=app_dir)
    if not callable(target):
        raise AppLoadError(f"readiness_check {spec!r} is {type(target).__name__}, not a callable")
    check: Callable[[], Any] = target
    return check


class ReadinessCheck:
    """Runs ``check`` every second on ``loop`` and keeps its last answer as (:attr:`ok`, :attr:`reason`)."""

    def __init__(self, check: Callable[[], Any], loop: asyncio.AbstractEventLoop, *,
                 on_change: Callable[[bool, str], None] | None = None, interval: float = CHECK_INTERVAL,
                 timeout: float = CHECK_TIMEOUT) -> None:
        self.check = check
        self.loop = loop
        self.on_change = on_change
        self.interval = interval
        self.timeout = timeout
        self.ok = False
        self.reason = "the readiness check has not answered yet"
        self._reported: bool | None = None  # the last state logged and passed on (None: none yet)
        self._pending: asyncio.Task[Any] | None = None
        self._pending_since = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._run()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _run(self) -> None:
        self._handle = self.loop.call_later(self.interval, self._run)
        pending = self._pending
        if pending is not None:
            if self.loop.time() - self._pending_since > self.timeout:
                self._set(False, f"no answer within {self.timeout:g} s")
            return
        try:
            result = self.check()
        except Exception as exc:
            self._set(False, f"raised {type(exc).__name__}: {exc}")
            return
        if inspect.isawaitable(result):
            self._pending = asyncio.ensure_future(result, loop=self.loop)
            self._pending_since = self.loop.time()
            self._pending.add_done_callback(self._done)
        else:
            self._answer(result)

    def _done(self, task: asyncio.Future[Any]) -> None:
        if task is not self._pending:
            return
        self._pending = None
        if task.cancelled():
            self._set(False, "cancelled")
        elif (exc := task.exception()) is not None:
            self._set(False, f"raised {type(exc).__name__}: {exc}")
        else:
            self._answer(task.result())

    def _answer(self, result: Any) -> None:
        if result:
            self._set(True, "")
        else:
            self._set(False, f"returned {result!r}")

    def _set(self, ok: bool, reason: str) -> None:
        self.ok, self.reason = ok, reason
        if ok is self._reported:
            return
        if ok:
            if self._reported is not None:
                _log.info("readiness check passes again")
        else:
            _log.warning("readiness check failing: %s", reason)
        self._reported = ok
        if self.on_change is not None:
            self.on_change(ok, reason)
