"""A small fixed pool of worker threads for WSGI apps (one wake-up per task handed to an idle thread, none
when the pool is busy), and the outbox that brings their calls back to the event loop.

concurrent.futures.ThreadPoolExecutor creates a Future and a work item per call and re-checks its thread
count each time; WSGI results travel back through the exchange, so none of that is needed here. A task is
a function and one argument; exceptions are the task's own business (the WSGI runner catches them).

Why not one queue.SimpleQueue that every idle thread waits on: its get() releases the queue's lock after
taking an item whenever it had to wait, which wakes a second idle thread only to find the queue empty and go
back to sleep. Under strace (benchmarks/wakeups.py) that was two threads woken, and the GIL fought over,
for every request of a lone connection (17 futex calls per request; 5 now). Here each thread sleeps on a
SimpleQueue of its own (its only reader: nobody else to wake), idle threads wait on a stack (the most
recently idle one, whose memory is warm, goes first) and submit() wakes at most one of them; a thread that
finishes a task takes the next queued one without sleeping. Tasks start in submit order (one deque).

No lock: a threading.Lock's acquire() parses its arguments (~250 instructions, callgrind) and the hot path
would take three. The deque and list operations used are each atomic under the GIL, and the order of the
steps makes every interleaving safe (see _work).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("bascule.error")

Task = tuple[Callable[[Any], None], Any]
Call = tuple[Callable[..., object], tuple[Any, ...]]


class _Worker:
    """One pool thread's wake-up: True to look for tasks, False to stop. Exactly one item is put for every
    time the worker is popped off the idle stack, and the worker takes it."""

    __slots__ = ("sleep", "wake")

    def __init__(self) -> None:
        inbox: queue.SimpleQueue[bool] = queue.SimpleQueue()
        # bound once: compiled code calls a method of a non-native object by name, looking it up each time
        self.wake: Callable[[bool], None] = inbox.put
        self.sleep: Callable[[], bool] = inbox.get


class ThreadPool:
    """``size`` daemon threads running ``fn(arg)`` tasks in arrival order."""

    def __init__(self, size: int, name: str = "bascule-wsgi") -> None:
        self.size = size
        self.name = name
        self._idle: list[_Worker] = []  # threads asleep (or about to be) on their inbox, most recently idle last
        self._queued: deque[Task] = deque()  # tasks not taken by a thread yet, oldest first
        self._enqueue = self._queued.append
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            thread = threading.Thread(target=self._work, args=(_Worker(),), name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on a pool thread: queued, and one idle thread (if any) woken to take it."""
        self._enqueue((fn, arg))
        idle = self._idle
        if idle:
            try:
                worker = idle.pop()
            except IndexError:  # another thread took the last one between the two lines
                return
            worker.wake(True)

    def queued(self) -> int:
        """Tasks waiting for a thread."""
        return len(self._queued)

    def _work(self, worker: _Worker) -> None:
        """Take queued tasks until there are none, then sleep on the inbox until submit() or shutdown().

        Why no task is left queued with every thread asleep: submit() queues before it looks for an idle
        thread, and a thread pushes itself onto the idle stack before it looks at the queue once more. So
        either submit() finds the thread on the stack (and wakes it), or the thread finds the task. A thread
        that then tries to take itself off the stack and is no longer on it was popped by a submit(): its
        wake-up is coming, and it takes it before going on. The same goes for shutdown() and ``_stopping``.
        """
        queued = self._queued
        take = queued.popleft
        idle = self._idle
        sleep = worker.sleep
        while True:
            task: Task | None = None
            if queued:
                try:  # noqa: SIM105 (contextlib.suppress costs a context manager per task)
                    task = take()
                except IndexError:  # another thread took it
                    pass
            if task is not None:
                try:
                    task[0](task[1])
                except BaseException:  # a task must never kill its thread
                    _log.exception("unhandled error in a WSGI worker thread")
                # an idle thread must not keep its last request alive (its exchange, environ, body buffers)
                task = None
                continue
            if self._stopping:
                return
            idle.append(worker)
            if queued or self._stopping:  # queued (or told to stop) after the look above: don't sleep
                try:
                    idle.remove(worker)
                except ValueError:  # popped meanwhile: its wake-up is on its way
                    if not sleep():
                        return
                continue
            if not sleep():
                return

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued tasks finish, then stop the threads (bounded by ``timeout`` in all)."""
        self._stopping = True
        idle = self._idle
        while idle:
            try:
                worker = idle.pop()
            except IndexError:
                break
            worker.wake(False)  # busy threads stop once the queue is empty
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

    __slots__ = ("_append", "_calls", "_flush_now", "_schedule", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: deque[Call] = deque()
        self.scheduled = False  # a flush is on the loop's ready queue and has not started yet
        # bound once (compiled code looks a non-native object's method up by name at every call)
        self._append = self._calls.append
        self._schedule = loop.call_soon_threadsafe
        self._flush_now = self._flush

    def post(self, fn: Callable[..., object], args: tuple[Any, ...], kick: bool = True) -> None:
        """Queue ``fn(*args)`` for the loop (any thread); ``kick``: make sure a flush is scheduled now."""
        self._append((fn, args))
        if kick and not self.scheduled:
            self.scheduled = True
            self._schedule(self._flush_now)

    def kick(self) -> None:
        """Schedule a flush if calls wait and none is scheduled (any thread)."""
        if not self.scheduled and self._calls:
            self.scheduled = True
            self._schedule(self._flush_now)

    def _flush(self) -> None:
        self.scheduled = False
        calls = self._calls
        take = calls.popleft
        while calls:
            fn, args = take()
            try:
                fn(*args)
            except Exception:  # as a loop handle's failure: logged, and the calls after it still run
                _log.exception("unhandled error in a WSGI response callback on the loop")
