"""``--readiness-check MODULE:ATTR``: the app's own say in ``/readyz`` (a database reachable, a cache warm).

The check runs at most once a second, never twice at a time: a probe then reads the last answer instead of
calling into the app per probe (a balancer checking every 200 ms from several places would otherwise multiply
the app's work). An async callable runs as a task on the serving loop; a sync one runs in a thread of its own,
because a check is exactly the code that waits on something else (a database ping, a socket) and on the loop
it would stall every request, the worker's heartbeat (the master would kill it as stuck) and, in one process,
``/livez``. Either counts as failing once it has not answered for ``CHECK_TIMEOUT`` seconds; a task is then
cancelled and tried again on the next tick (one lost answer must not fail ``/readyz`` for good), while a thread,
which cannot be stopped, is waited for before the next run. Anything true passes; a false value, an exception
or a timeout fails, logged once per change (not once per second). Each change is passed to ``on_change``: a
worker reports it to its master (workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from bascule.errors import AppLoadError
from bascule.loader import import_from_string

_log = logging.getLogger("bascule.error")

CHECK_INTERVAL = 1.0
CHECK_TIMEOUT = 5.0
REASON_MAX = 200


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
        self._pending: asyncio.Future[Any] | None = None  # the run not answered yet: a task, or a thread's outcome
        self._task = False  # _pending is a task (cancellable), not a thread's
        self._pending_since = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._answered = asyncio.Event()  # set at the first answer (a pass, a failure or a timeout)

    def start(self) -> None:
        self._run()

    async def first_answer(self) -> None:
        """Wait for the first answer: it comes within the timeout (and a tick), as a pass, a failure or no answer."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), self.timeout + 2 * self.interval)

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
                if self._task:  # a thread cannot be stopped: it is waited for; a task is tried again
                    self._pending = None
                    pending.cancel()
            return
        if self._is_async:
            try:
                result = self.check()
            except Exception as exc:
                self._set(False, f"raised {type(exc).__name__}: {exc}")
                return
            if not inspect.isawaitable(result):
                self._answer(result)
                return
            self._wait_for(asyncio.ensure_future(result, loop=self.loop), task=True)
        else:
            self._wait_for(self._in_thread(), task=False)

    @property
    def _is_async(self) -> bool:
        check: Any = self.check
        return inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(type(check).__call__)

    def _wait_for(self, future: asyncio.Future[Any], *, task: bool) -> None:
        self._pending, self._task = future, task
        self._pending_since = self.loop.time()
        future.add_done_callback(self._done)

    def _in_thread(self) -> asyncio.Future[Any]:
        """Call the sync check in a daemon thread (one per run: never two at a time, and one blocked for good is
        not joined at exit); its outcome comes back to the loop as a future's."""
        loop = self.loop
        future: asyncio.Future[Any] = loop.create_future()
        check = self.check

        def settle(ok: bool, value: Any) -> None:
            if future.done():  # stopped meanwhile
                drop(value)
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def call() -> None:
            try:
                outcome: tuple[bool, Any] = (True, check())
            except BaseException as exc:  # SystemExit too: the thread must answer, or it is 'no answer' for good
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(settle, *outcome)
            except RuntimeError:  # the loop closed meanwhile
                drop(outcome[1])

        threading.Thread(target=call, name="bascule-readiness-check", daemon=True).start()
        return future

    def _done(self, task: asyncio.Future[Any]) -> None:
        if task is not self._pending:
            return
        self._pending = None
        if task.cancelled():
            self._set(False, "cancelled")
        elif (exc := task.exception()) is not None:
            self._set(False, f"raised {type(exc).__name__}: {exc}")
        elif inspect.isawaitable(result := task.result()):  # a sync callable that returned a coroutine
            self._wait_for(asyncio.ensure_future(result, loop=self.loop), task=True)
        else:
            self._answer(result)

    def _answer(self, result: Any) -> None:
        if result:
            self._set(True, "")
        else:
            self._set(False, f"returned {result!r}")

    def _set(self, ok: bool, reason: str) -> None:
        reason = one_line(reason)
        self.ok, self.reason = ok, reason
        self._answered.set()
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


def drop(value: Any) -> None:
    """An answer nobody will read: a coroutine a sync callable returned is closed (no 'never awaited' warning)."""
    if inspect.iscoroutine(value):
        value.close()


def one_line(reason: str) -> str:
    """``reason`` as /readyz answers it: one line (whitespace runs collapsed), at most about REASON_MAX characters
    (a driver's error can span lines, and a false value's repr can be long)."""
    text = " ".join(reason.split())
    return text if len(text) <= REASON_MAX else text[:REASON_MAX] + "..."
