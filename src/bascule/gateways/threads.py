"""A small fixed pool of worker threads for WSGI apps: one wake-up per task handed to an idle thread, none
when the pool is busy.

concurrent.futures.ThreadPoolExecutor creates a Future and a work item per call and re-checks its thread
count each time; WSGI results travel back through the exchange, so none of that is needed here. A task is
a function and one argument; exceptions are the task's own business (the WSGI runner catches them).

Why not one queue.SimpleQueue that every idle thread waits on: its get() releases the queue's lock after
taking an item whenever it had to wait, which wakes a second idle thread only to find the queue empty and go
back to sleep. Under strace (benchmarks/wakeups.py) that was two threads woken, and the GIL fought over,
for every request of a lone connection. Here each thread sleeps on a lock of its own, idle threads wait on
a stack (the most recently idle one, whose memory is warm, goes first) and submit() hands a task to exactly
one of them; a thread that finishes a task takes the next queued one without sleeping. Queued tasks start in
submit order: a task is queued only while no thread is idle, and a thread goes idle only with the queue empty.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("bascule.error")

Task = tuple[Callable[[Any], None], Any]
Call = tuple[Callable[..., object], tuple[Any, ...]]


class _Worker:
    """One pool thread's mailbox: the task handed to it and the lock it sleeps on until then."""

    __slots__ = ("task", "wake")

    def __init__(self) -> None:
        self.task: Task | None = None  # None when woken: stop
        self.wake = threading.Lock()
        self.wake.acquire()  # held while the thread has nothing to do: its acquire() sleeps


class ThreadPool:
    """``size`` daemon threads running ``fn(arg)`` tasks in arrival order."""

    def __init__(self, size: int, name: str = "bascule-wsgi") -> None:
        self.size = size
        self.name = name
        self._mutex = threading.Lock()  # guards _idle, _queued and _stopping, held for a few operations
        self._idle: list[_Worker] = []  # threads asleep on their wake lock, most recently idle last
        self._queued: deque[Task] = deque()  # tasks no thread was idle for, oldest first
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            worker = _Worker()
            thread = threading.Thread(target=self._work, args=(worker,), name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on a pool thread: wake an idle one, else queue it for the next to finish."""
        mutex = self._mutex
        mutex.acquire()
        idle = self._idle
        if idle:
            worker = idle.pop()
            mutex.release()
            worker.task = (fn, arg)
            worker.wake.release()
        else:
            self._queued.append((fn, arg))
            mutex.release()

    def queued(self) -> int:
        """Tasks waiting for a thread (none is idle)."""
        return len(self._queued)

    def _work(self, worker: _Worker) -> None:
        mutex = self._mutex
        queued = self._queued
        task: Task | None = None
        while True:
            if task is None:
                mutex.acquire()
                if queued:
                    task = queued.popleft()
                elif self._stopping:
                    mutex.release()
                    return
                else:
                    self._idle.append(worker)
                mutex.release()
                if task is None:
                    worker.wake.acquire()  # until submit() or shutdown() releases it
                    task = worker.task
                    worker.task = None
                    if task is None:
                        return
            try:
                task[0](task[1])
            except BaseException:  # a task must never kill its thread
                _log.exception("unhandled error in a WSGI worker thread")
            # an idle thread must not keep its last request alive (its exchange, environ, body buffers)
            task = None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued tasks finish, then stop the threads (bounded by ``timeout`` in all)."""
        with self._mutex:
            self._stopping = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake.release()  # its task None: return (busy threads return once the queue is empty)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()


class LoopOutbox:
    """Calls from pool threads to run on one event loop, in the order posted, with one loop wake-up per pass.

    loop.call_soon_threadsafe makes a handle and writes the loop's wake-up fd (unless a write is already
    pending) for every call. Here a post appends to a deque and schedules one flush only if none is
    scheduled yet: the responses of every thread that finished during a loop pass go out with one callback.
    All of a request's calls go through the same outbox, so they keep their order (a flush takes them oldest
    first, whoever scheduled it).

    ``post(..., kick=False)`` queues without waking the loop: the caller wakes it with :meth:`kick` as the
    last thing its task does, just before its thread sleeps, so the loop, woken, finds the GIL free rather
    than waiting for the thread to let go of it (with strace: futex calls on the GIL, per request).

    Lock-free: deque append and popleft are atomic under the GIL. The flush clears ``scheduled`` before it
    empties the deque, so a post it does not see has seen ``scheduled`` false and scheduled another flush;
    at worst a flush finds nothing to do.
    """

    __slots__ = ("_calls", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: deque[Call] = deque()
        self.scheduled = False  # a flush is on the loop's ready queue and has not started yet

    def post(self, fn: Callable[..., object], args: tuple[Any, ...], kick: bool = True) -> None:
        """Queue ``fn(*args)`` for the loop (any thread); ``kick``: make sure a flush is scheduled now."""
        self._calls.append((fn, args))
        if kick and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self._flush)

    def kick(self) -> None:
        """Schedule a flush if calls wait and none is scheduled (any thread)."""
        if self._calls and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:  # as a loop handle's failure: logged, and the calls after it still run
                _log.exception("unhandled error in a WSGI response callback on the loop")
