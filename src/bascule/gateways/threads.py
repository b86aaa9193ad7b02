"""A small fixed pool of worker threads for WSGI apps (one thread woken at a time, which takes every task
queued meanwhile), and the outbox that brings their calls back to the event loop.

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

One thread coming at a time: a woken thread that has not taken a task yet is "coming" (``_coming``), and
while one is, submit() wakes no other. The tasks of one loop pass then go to the thread that comes, and it
runs them one after the other, where one thread woken per task made each of them wake, block on the GIL the
loop held, and pass the GIL on to the next after its one task: two context switches and a GIL hand-over per
request, for nothing, since only one thread holds the GIL at a time (wrk, 64 connections, server on one core:
36.6k req/s with 16 threads, 56.7k with one). A thread that takes a task and leaves others queued wakes the
next one (unless one is coming already): if its task blocks (a database, a sleep) and lets go of the GIL, that
next thread takes the next task, so requests that wait on I/O still overlap as they did with a wake-up each;
when nothing blocks, the thread it woke finds the queue empty once the first is done and sleeps again: one
wasted wake-up per batch instead of one per request.

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

from bascule.tuning import batch_thread

_log = logging.getLogger("bascule.error")

Task = tuple[Callable[[Any], None], Any]
Call = tuple[Callable[..., object], tuple[Any, ...]]


class _Worker:
    """One pool thread's wake-up: True from submit(), False from shutdown(); either way the thread looks at
    the queue again (and stops once it finds it empty with the pool stopping). Exactly one item is put for
    every time the worker is popped off the idle stack, and the worker takes it."""

    __slots__ = ("sleep", "wake")

    def __init__(self) -> None:
        inbox: queue.SimpleQueue[bool] = queue.SimpleQueue()
        # bound once: compiled code calls a method of a non-native object by name, looking it up each time
        self.wake: Callable[[bool], None] = inbox.put
        self.sleep: Callable[[], bool] = inbox.get


class ThreadPool:
    """``size`` daemon threads running ``fn(arg)`` tasks in arrival order."""

    def __init__(self, size: int, name: str = "bascule-wsgi", batch: bool = False) -> None:
        self.size = size
        self.name = name
        #: each thread marks itself SCHED_BATCH as it starts, so waking it does not take the CPU from the loop
        #: mid-pass (``--wsgi-thread-policy``; tuning.py says why, and why not in every server)
        self.batch = batch
        self._idle: list[_Worker] = []  # threads asleep (or about to be) on their inbox, most recently idle last
        #: the thread woken to take a task that has not taken one yet (None: none is); set before its wake-up
        #: is sent, cleared by that thread once it has looked at the queue (see _work)
        self._coming: _Worker | None = None
        self._queued: deque[Task] = deque()  # tasks not taken by a thread yet, oldest first
        self._enqueue = self._queued.append
        self._wake_due = False  # submit_soon's wake-up is on the loop's ready queue (read and set on the loop only)
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            thread = threading.Thread(target=self._work, args=(_Worker(),), name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on a pool thread: queued, and an idle thread woken to take it unless one is
        coming already."""
        self._enqueue((fn, arg))
        if self._coming is None:
            self._wake_one()

    def submit_soon(self, fn: Callable[[Any], None], arg: Any, loop: asyncio.AbstractEventLoop) -> None:
        """From the event loop: queue ``fn(arg)`` like :meth:`submit`, and wake a thread for it once this loop
        pass has run its callbacks (once per pass, for all its tasks), not at once.

        Woken at once, a thread takes the GIL as soon as the loop lets go of it, and uvloop does between any
        two of its callbacks: the thread then ran each request alone, the loop and the thread handing the
        GIL to each other per request (3.4 context switches per request, new connection per request, 32
        clients). Woken after the pass, it finds every request the pass read queued and runs them in a row.
        """
        self._enqueue((fn, arg))
        if self._coming is None and not self._wake_due:
            self._wake_due = True
            loop.call_soon(self._wake_after_pass)

    def _wake_after_pass(self) -> None:
        self._wake_due = False
        if self._coming is None and self._queued:
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake the most recently idle thread (if any) and mark it coming: set before its wake-up is sent,
        so the mark is never cleared before it is made."""
        idle = self._idle
        if idle:
            try:
                worker = idle.pop()
            except IndexError:  # another thread took the last one between the two lines
                return
            self._coming = worker
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
        wake-up is coming, and it takes it before going on. The same goes for shutdown() and ``_stopping``,
        except that a thread stops only once it has seen the queue empty with ``_stopping`` set: a task queued
        before shutdown() that no thread had seen yet (every one between its look and its push, or popped by
        shutdown() while taking itself off the stack) still runs; shutdown()'s wake-up is one to look again.
        A submit() that wakes nobody because a thread is coming leaves its task to that thread, which looks
        at the queue after its mark is set (the mark is made before the wake-up is sent, and only the marked
        thread clears it, after its look); if a busy thread took the task first, the coming one finds the
        queue empty and goes idle as above.
        """
        if self.batch:
            batch_thread()
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
            if self._coming is worker:  # it has looked: a task taken, or one another thread took first
                self._coming = None
            if task is not None:
                if queued and self._coming is None:  # more waiting: the next thread comes, in case this task blocks
                    self._wake_one()
                try:
                    task[0](task[1])
                except BaseException:  # a task must never kill its thread
                    _log.exception("unhandled error in a WSGI worker thread")
                # an idle thread must not keep its last request alive (its exchange, environ, body buffers)
                task = None
                continue
            if self._stopping:
                if not queued:
                    return
                continue  # queued after the look above, before the stop: it runs first
            idle.append(worker)
            if queued or self._stopping:  # queued (or told to stop) after the look above: don't sleep
                try:
                    idle.remove(worker)
                except ValueError:  # popped meanwhile: its wake-up is on its way
                    sleep()
                continue
            # a wake-up says look again, and stop once nothing is queued (False: shutdown(), with _stopping set)
            sleep()

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


class LoopCall:
    """A call for the loop that is an object of its own, posted with :meth:`LoopOutbox.post_call`: the flush
    calls its :meth:`on_loop` directly (a native method), where a ``(fn, args)`` call costs a bound method, two
    tuples and the parsing of its arguments (~500 instructions, callgrind). For the call every response of a
    WSGI pool thread makes: its request finishing it on the loop (gateways/wsgi.py)."""

    __slots__ = ()

    def on_loop(self) -> None:
        raise NotImplementedError


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
        self._calls: deque[Call | LoopCall] = deque()
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

    def post_call(self, call: LoopCall) -> None:
        """Queue ``call.on_loop()`` for the loop (any thread), in order with :meth:`post`'s calls, without
        waking it (the caller kicks: see ``post(..., kick=False)``)."""
        self._append(call)

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
            call = take()
            try:
                if isinstance(call, LoopCall):
                    call.on_loop()
                else:
                    fn, args = call
                    fn(*args)
            except Exception:  # as a loop handle's failure: logged, and the calls after it still run
                _log.exception("unhandled error in a WSGI response callback on the loop")
