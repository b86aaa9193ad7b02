"""Tests of the hand-over between the event loop and the WSGI thread pool (gateways/threads.py): the pool wakes
one thread at a time, which takes the tasks queued meanwhile, wakes the next while tasks wait (so blocking
tasks still overlap), and lets busy threads take queued tasks; LoopOutbox brings the threads' calls back to
the loop in order, batched; its threads run SCHED_BATCH when asked (--wsgi-thread-policy); and through a real
server, responses under concurrency, pipelining and graceful shutdown with requests still queued. The WSGI
gateway's own behaviour is in test_wsgi.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sched_policy import needs_sched_batch

from bascule.gateways import threads as threads_module
from bascule.gateways.threads import LoopOutbox, ThreadPool
from bascule.protocols.h1 import exchange as http1_exchange
from bascule.protocols.h1.exchange import H1Exchange

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], None]]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


@pytest.fixture
def pool_factory() -> Iterator[Callable[[int], ThreadPool]]:
    pools: list[ThreadPool] = []

    def make(size: int) -> ThreadPool:
        pool = ThreadPool(size, name=f"handover-{len(pools)}")
        pool.start()
        pools.append(pool)
        assert wait_for(lambda: len(pool._idle) == size)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(1.0)


# -- ThreadPool ---------------------------------------------------------------------------------------------


def test_sequential_tasks_wake_one_thread_the_most_recently_idle(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(4)
    names: list[str] = []
    for _ in range(20):
        done = threading.Event()
        pool.submit(lambda ev: (names.append(threading.current_thread().name), ev.set()), done)
        assert done.wait(5)
        assert wait_for(lambda: len(pool._idle) == 4)  # the thread is back asleep, the others never woke
    assert len(set(names)) == 1, names


def test_busy_threads_take_queued_tasks_without_an_idle_one(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(2)
    release = threading.Event()
    for _ in range(2):
        pool.submit(lambda _: release.wait(5), None)
    assert wait_for(lambda: not pool._idle and pool.queued() == 0)
    ran: list[int] = []
    for i in range(20):
        pool.submit(ran.append, i)
    assert pool.queued() == 20
    release.set()
    assert wait_for(lambda: len(ran) == 20)
    assert sorted(ran) == list(range(20))
    assert wait_for(lambda: len(pool._idle) == 2 and pool.queued() == 0)


def test_one_thread_runs_queued_tasks_in_submit_order(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(1)
    release = threading.Event()
    pool.submit(lambda _: release.wait(5), None)
    order: list[int] = []
    for i in range(30):
        pool.submit(order.append, i)
    release.set()
    assert wait_for(lambda: len(order) == 30)
    assert order == list(range(30))


def test_a_burst_of_tasks_goes_to_the_one_thread_woken(pool_factory: Callable[[int], ThreadPool]) -> None:
    """Tasks submitted while the woken thread has not started yet (as the loop does in one pass, holding the
    GIL) wake no other thread: that one runs them all, and the one it woke in case they block finds the
    queue empty. A thread per task would make each fight for the GIL for its one task."""
    pool = pool_factory(8)
    names: list[str] = []
    done = threading.Event()
    gate = threading.Event()
    pool.submit(lambda _: gate.wait(5), None)  # holds the first thread while the burst is queued
    assert wait_for(lambda: pool.queued() == 0 and len(pool._idle) == 7)
    for i in range(50):
        pool.submit(lambda i: (names.append(threading.current_thread().name), i == 49 and done.set()), i)
    assert len(pool._idle) == 6  # one thread woken for the 50 tasks
    gate.set()
    assert done.wait(5)
    assert len(names) == 50
    assert len(set(names)) <= 3, set(names)  # the woken one, and at most the ones it and the first woke
    assert wait_for(lambda: len(pool._idle) == 8 and getattr(pool, "_coming", None) is None)


def test_submit_soon_wakes_a_thread_once_the_loop_pass_is_done(pool_factory: Callable[[int], ThreadPool]) -> None:
    """The tasks of one loop pass wake no thread while the pass runs: one thread is woken after it and runs
    them all in a row (woken at once, a thread takes the GIL whenever uvloop lets go of it between two
    callbacks, and runs each request alone)."""
    pool = pool_factory(4)
    names: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        seen_during_pass: list[int] = []

        def one_pass() -> None:
            for i in range(10):
                pool.submit_soon(lambda i: names.append(threading.current_thread().name), i, loop)
            seen_during_pass.append(len(pool._idle))
            time.sleep(0.05)  # the rest of the pass: nobody woken yet, nothing run
            seen_during_pass.append(len(names))

        loop.call_soon(one_pass)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert seen_during_pass == [4, 0]
        assert wait_for(lambda: len(names) == 10)
        assert len(set(names)) <= 3, set(names)  # the woken one, and at most the ones it and the next woke
        assert wait_for(lambda: len(pool._idle) == 4 and pool._coming is None and not pool._wake_due)
    finally:
        loop.close()


def test_submit_soon_with_a_busy_thread_loses_no_task(pool_factory: Callable[[int], ThreadPool]) -> None:
    """A thread busy when the pass ends takes the queued tasks itself; the wake-up after the pass finds them
    taken or wakes a thread for them: either way every task runs."""
    pool = pool_factory(1)
    loop = asyncio.new_event_loop()
    try:
        release = threading.Event()
        ran: list[int] = []
        pool.submit(lambda _: release.wait(5), None)
        assert wait_for(lambda: not pool._idle)
        for round_ in range(3):
            for i in range(5):
                loop.call_soon(pool.submit_soon, ran.append, round_ * 5 + i, loop)
            loop.run_until_complete(asyncio.sleep(0))
        release.set()
        assert wait_for(lambda: len(ran) == 15)
        assert ran == list(range(15))
        loop.run_until_complete(asyncio.sleep(0.01))
        for i in range(15, 20):  # the pool idle again: the next pass's tasks still wake it
            loop.call_soon(pool.submit_soon, ran.append, i, loop)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert wait_for(lambda: len(ran) == 20)
    finally:
        loop.close()


def test_a_shutdown_while_the_pass_end_wake_is_pending_runs_the_task(
        pool_factory: Callable[[int], ThreadPool]) -> None:
    """A task queued by submit_soon is in the queue at once: a shutdown() that begins before the pass ends
    (the server's runs on an executor thread while the loop goes on) runs it, and the wake-up that comes
    after finds nothing to do."""
    pool = pool_factory(2)
    threads = list(pool._threads)
    loop = asyncio.new_event_loop()
    try:
        ran: list[int] = []

        def one_pass() -> None:
            pool.submit_soon(ran.append, 1, loop)
            assert pool._wake_due
            stopper = threading.Thread(target=pool.shutdown, args=(5.0,))
            stopper.start()
            stopper.join(5)  # the pass is not over: its wake-up has not run
            assert pool._wake_due and ran == [1]

        loop.call_soon(one_pass)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not pool._wake_due and pool.queued() == 0
        assert not any(t.is_alive() for t in threads)
    finally:
        loop.close()


@pytest.mark.parametrize("size", [4, 16])
def test_blocking_tasks_queued_together_still_run_at_once(pool_factory: Callable[[int], ThreadPool],
                                                          size: int) -> None:
    """Four tasks queued in one burst that each wait for all four (a barrier) finish only if four threads
    run them at once: the woken thread wakes the next while tasks wait, so a blocking app is not
    serialised behind the one thread that came."""
    pool = pool_factory(size)
    barrier = threading.Barrier(4, timeout=5)
    passed: list[int] = []
    for i in range(4):
        pool.submit(lambda i: (barrier.wait(), passed.append(i)), i)
    assert wait_for(lambda: len(passed) == 4), (passed, barrier.broken)
    assert sorted(passed) == [0, 1, 2, 3]


def test_blocking_tasks_overlap_under_a_steady_stream(pool_factory: Callable[[int], ThreadPool]) -> None:
    """16 tasks that sleep 0.2 s each, submitted back to back, take about one sleep on 16 threads, not 16."""
    pool = pool_factory(16)
    finished: list[float] = []
    start = time.monotonic()
    for _ in range(16):
        pool.submit(lambda _: (time.sleep(0.2), finished.append(time.monotonic())), None)
    assert wait_for(lambda: len(finished) == 16)
    assert max(finished) - start < 1.5, max(finished) - start  # serialised would be 3.2 s


def test_concurrent_submitters_lose_no_task(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(3)
    counter = [0]
    lock = threading.Lock()

    def task(_: Any) -> None:
        with lock:
            counter[0] += 1

    def submitter() -> None:
        for _ in range(500):
            pool.submit(task, None)

    submitters = [threading.Thread(target=submitter) for _ in range(4)]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join(10)
    assert wait_for(lambda: counter[0] == 2000, 10), counter
    assert wait_for(lambda: len(pool._idle) == 3)


@pytest.mark.parametrize("size", [1, 2, 5])
def test_stress_many_submitters_lose_no_wake_up(pool_factory: Callable[[int], ThreadPool], size: int) -> None:
    """Lost wake-up hunt: submitters on several threads (and tasks that submit more) with random short
    pauses, a switch interval of a microsecond so the GIL changes hands between almost any two steps. Every
    task must run, and once all is quiet every thread must be idle and no thread still marked coming (a
    stale mark would stop submit() from ever waking anyone again). Bounded in count and time."""
    import random
    import sys

    pool = pool_factory(size)
    ran = [0]
    lock = threading.Lock()
    per_submitter, submitters_n = 300, 4
    rng = random.Random(size)
    pauses = [rng.choice((0.0, 0.0, 0.0, 0.00005, 0.0005)) for _ in range(64)]

    def task(i: int) -> None:
        if pauses[i % 64]:
            time.sleep(pauses[i % 64])
        with lock:
            ran[0] += 1
        if i % 7 == 0:  # a task that submits another (as a WSGI app's thread never does, but a worst case)
            pool.submit(leaf, None)

    def leaf(_: Any) -> None:
        with lock:
            ran[0] += 1

    def submitter(seed: int) -> None:
        local = random.Random(seed)
        for i in range(per_submitter):
            pool.submit(task, i)
            if local.random() < 0.05:
                time.sleep(local.choice((0.0, 0.0001, 0.001)))

    expected = submitters_n * (per_submitter + len(range(0, per_submitter, 7)))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(3):
            ran[0] = 0
            threads = [threading.Thread(target=submitter, args=(round_ * 10 + n,)) for n in range(submitters_n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert wait_for(lambda: ran[0] == expected, 20), (round_, ran[0], expected, pool.queued())
            assert wait_for(lambda: len(pool._idle) == size and pool.queued() == 0, 5), (len(pool._idle), size)
            assert pool._coming is None
            # and the pool still wakes a thread for the next lone task
            done = threading.Event()
            pool.submit(threading.Event.set, done)
            assert done.wait(5)
    finally:
        sys.setswitchinterval(old)


class RacingIdle(list[Any]):
    """An idle stack that runs ``before_push`` once, the next time a thread pushes itself: that is, after the
    thread found the queue empty and before it is on the stack, the worst moment for a submit()."""

    def __init__(self) -> None:
        super().__init__()
        self.before_push: list[Callable[[], None]] = []
        self.after_push: list[Callable[[], None]] = []  # once, just after the push (before the thread looks again)

    def append(self, worker: Any) -> None:
        if self.before_push:
            self.before_push.pop()()
        super().append(worker)
        if self.after_push:
            self.after_push.pop()()


class RacingQueue(collections.deque[Any]):
    """A task queue whose emptiness test runs ``on_empty_look`` once, on a pool thread that finds it empty:
    the answer is taken before the hook runs, so what the hook does comes just after the thread's look."""

    def __init__(self, pool_name: str) -> None:
        super().__init__()
        self.pool_name = pool_name
        self.on_empty_look: list[Callable[[], None]] = []

    def __len__(self) -> int:
        n = super().__len__()
        if not n and self.on_empty_look and threading.current_thread().name.startswith(self.pool_name):
            self.on_empty_look.pop()()
        return n


@pytest.mark.skipif(threads_module.__file__.endswith(".so"), reason="compiled code calls list.append itself")
@pytest.mark.parametrize("what", ["submit", "shutdown"])
def test_a_submit_or_shutdown_while_a_thread_goes_idle_is_not_missed(what: str) -> None:
    """The pool takes no lock (the interleaving here cannot be forced otherwise): a task submitted, or a
    shutdown begun, between a thread's last look at the queue and its push onto the idle stack must still
    be run, or stop the thread, rather than leave it asleep."""
    pool = ThreadPool(1, name="racing")
    idle = pool._idle = RacingIdle()
    pool.start()
    try:
        assert wait_for(lambda: len(idle) == 1)
        first, second = threading.Event(), threading.Event()
        if what == "submit":
            idle.before_push.append(lambda: pool.submit(threading.Event.set, second))
        else:
            idle.before_push.append(lambda: setattr(pool, "_stopping", True))
        pool.submit(threading.Event.set, first)
        assert first.wait(5)
        if what == "submit":
            assert second.wait(5), "the task submitted while the thread went idle never ran"
        else:
            pool._threads[0].join(5)
            assert not pool._threads[0].is_alive(), "the thread slept through shutdown"
    finally:
        pool.shutdown(1.0)


@pytest.mark.skipif(threads_module.__file__.endswith(".so"), reason="compiled code calls list/deque methods itself")
@pytest.mark.parametrize("moment", ["after_an_empty_look", "while_going_idle"])
def test_a_task_queued_before_shutdown_runs_whatever_the_moment(moment: str) -> None:
    """shutdown() lets tasks queued before it finish. A thread must not stop on seeing ``_stopping`` (or on
    shutdown's wake-up) while a task queued before the stop is still waiting and no other thread saw it:
    - after_an_empty_look: the task is queued (no idle thread to wake) and the stop begins between the
      thread's look at the empty queue and its check of ``_stopping``;
    - while_going_idle: the task is queued just before the thread pushes itself onto the idle stack, and
      shutdown() pops it from there (a wake-up that says stop) before the thread could take itself off."""
    pool = ThreadPool(1, name=f"stopping-{moment}")
    if moment == "after_an_empty_look":
        queue_ = RacingQueue(pool.name)
        pool._queued = queue_
        pool._enqueue = queue_.append
    else:
        idle = pool._idle = RacingIdle()
    pool.start()
    stopper: threading.Thread | None = None
    try:
        assert wait_for(lambda: len(pool._idle) == 1)
        first, second = threading.Event(), threading.Event()
        if moment == "after_an_empty_look":
            def stop_after_look() -> None:
                pool.submit(threading.Event.set, second)  # the thread is not idle: nobody to wake
                pool._stopping = True

            def arm(_: Any) -> None:  # the hook fires at the thread's look just after this task
                queue_.on_empty_look.append(stop_after_look)
                first.set()
            pool.submit(arm, None)
        else:
            def stop_now() -> None:
                nonlocal stopper
                stopper = threading.Thread(target=pool.shutdown, args=(5.0,))
                stopper.start()
                assert wait_for(lambda: list.__len__(idle) == 0)  # shutdown() popped this thread, waking it with False
            idle.before_push.append(lambda: pool.submit(threading.Event.set, second))  # nobody idle to wake
            idle.after_push.append(stop_now)
            pool.submit(threading.Event.set, first)
        assert first.wait(5)
        assert second.wait(5), "a task queued before shutdown never ran"
    finally:
        pool.shutdown(1.0)
        if stopper is not None:
            stopper.join(5)


def test_shutdown_runs_queued_work_before_the_threads_stop(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(2)
    release = threading.Event()
    for _ in range(2):
        pool.submit(lambda _: release.wait(5), None)
    done: list[int] = []
    for i in range(5):
        pool.submit(done.append, i)
    threads = list(pool._threads)
    stopper = threading.Thread(target=pool.shutdown, args=(5.0,))
    stopper.start()
    time.sleep(0.1)
    assert stopper.is_alive() and done == []  # waiting for the busy threads
    release.set()
    stopper.join(5)
    assert sorted(done) == list(range(5))
    assert not any(t.is_alive() for t in threads)


def test_shutdown_wakes_idle_threads_at_once(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(8)
    threads = list(pool._threads)
    start = time.monotonic()
    pool.shutdown(5.0)
    assert time.monotonic() - start < 1.0
    assert not any(t.is_alive() for t in threads)


# -- LoopOutbox ---------------------------------------------------------------------------------------------


class FakeLoop(asyncio.AbstractEventLoop):
    """Records call_soon_threadsafe callbacks; the test runs them."""

    def __init__(self) -> None:
        self.scheduled: list[Callable[[], object]] = []

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any,  # type: ignore[override]
                             context: Any = None) -> None:
        self.scheduled.append(lambda: callback(*args))

    def run_scheduled(self) -> None:
        scheduled, self.scheduled = self.scheduled, []
        for fn in scheduled:
            fn()


def test_outbox_posts_of_one_pass_share_one_wake_up() -> None:
    loop = FakeLoop()
    outbox = LoopOutbox(loop)
    calls: list[int] = []
    for i in range(3):
        outbox.post(calls.append, (i,))
    assert len(loop.scheduled) == 1
    loop.run_scheduled()
    assert calls == [0, 1, 2]
    outbox.post(calls.append, (3,))  # after the flush: a new one
    assert len(loop.scheduled) == 1
    loop.run_scheduled()
    assert calls == [0, 1, 2, 3]


def test_outbox_post_without_kick_waits_for_kick() -> None:
    loop = FakeLoop()
    outbox = LoopOutbox(loop)
    calls: list[str] = []
    outbox.post(calls.append, ("last",), False)
    assert loop.scheduled == []
    outbox.kick()
    outbox.kick()
    assert len(loop.scheduled) == 1
    loop.run_scheduled()
    assert calls == ["last"]
    outbox.kick()  # nothing queued: no wake-up
    assert loop.scheduled == []


def test_outbox_a_kicked_post_carries_earlier_unkicked_ones() -> None:
    loop = FakeLoop()
    outbox = LoopOutbox(loop)
    calls: list[int] = []
    outbox.post(calls.append, (1,), False)
    outbox.post(calls.append, (2,))
    assert len(loop.scheduled) == 1
    loop.run_scheduled()
    assert calls == [1, 2]
    outbox.kick()
    assert loop.scheduled == []


def test_outbox_a_failing_call_is_logged_and_the_rest_run(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("bascule.error"), "propagate", True)
    loop = FakeLoop()
    outbox = LoopOutbox(loop)
    calls: list[int] = []

    def fail() -> None:
        raise RuntimeError("callback failed")

    outbox.post(calls.append, (1,))
    outbox.post(fail, ())
    outbox.post(calls.append, (2,))
    with caplog.at_level(logging.ERROR, logger="bascule.error"):
        loop.run_scheduled()
    assert calls == [1, 2]
    assert [r.exc_info[1].args for r in caplog.records if r.exc_info and r.exc_info[1]] == [("callback failed",)]


class CountingLoop(asyncio.SelectorEventLoop):
    wake_ups = 0

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        self.wake_ups += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_outbox_keeps_every_threads_order_under_concurrency() -> None:
    loop = CountingLoop()
    outbox = LoopOutbox(loop)
    seen: dict[int, list[int]] = {}
    per_thread, threads_n = 300, 6
    finished = threading.Event()

    def record(thread: int, n: int) -> None:
        seen.setdefault(thread, []).append(n)
        if sum(map(len, seen.values())) == per_thread * threads_n:
            finished.set()

    def poster(thread: int) -> None:
        for n in range(per_thread):
            outbox.post(record, (thread, n), n % 3 == 0)
        outbox.kick()

    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        posters = [threading.Thread(target=poster, args=(t,)) for t in range(threads_n)]
        for t in posters:
            t.start()
        for t in posters:
            t.join(10)
        assert finished.wait(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
    assert seen == {t: list(range(per_thread)) for t in range(threads_n)}
    assert loop.wake_ups - 1 < per_thread * threads_n  # batched (the last one is loop.stop)


@needs_sched_batch
@pytest.mark.parametrize("batch", [True, False])
def test_the_threads_run_sched_batch_when_asked(batch: bool) -> None:
    pool = ThreadPool(3, name=f"batch-{batch}", batch=batch)
    pool.start()
    try:
        assert wait_for(lambda: len(pool._idle) == 3)  # each has run its start (start() returns before that)
        policies = {os.sched_getscheduler(t.native_id or 0) for t in pool._threads}
    finally:
        pool.shutdown(1.0)
    assert policies == {os.SCHED_BATCH if batch else os.SCHED_OTHER}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the loop's thread is left as it was


# -- through a server ---------------------------------------------------------------------------------------


def read_responses(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """The bodies of ``count`` Content-Length responses read from ``sock``."""
    sock.settimeout(timeout)
    data = b""
    bodies: list[bytes] = []
    while len(bodies) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(rest) >= length:
                assert head.startswith(b"HTTP/1.1 200 "), head
                bodies.append(rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(bodies)} of {count} responses"
        data += chunk
    return bodies


def path_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = environ["PATH_INFO"].encode()
    if environ["PATH_INFO"].endswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(2 * len(body)))])
        return iter([body, body])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def wsgi(serve: Callable[..., contextlib.AbstractContextManager[Any]]) -> Callable[..., Any]:
    def start(app: Any, **options: Any) -> contextlib.AbstractContextManager[Any]:
        options.setdefault("timeout_graceful_shutdown", 5)
        return serve(app, interface="wsgi", **options)

    return start


def test_many_connections_each_get_their_responses_in_order(wsgi: Any) -> None:
    """More connections than threads, pipelined requests: every response reaches its own connection, in order
    (one-item lists and streamed bodies mixed, so batched and direct hand-overs interleave)."""
    failures: list[BaseException] = []

    with wsgi(path_app, wsgi_threads=3) as srv:
        def client(c: int) -> None:
            try:
                with srv.connect(10) as sock:
                    for batch in range(5):
                        paths = [f"/c{c}/b{batch}/r{r}" + ("/stream" if r % 2 else "") for r in range(4)]
                        sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
                        bodies = read_responses(sock, len(paths))
                        assert bodies == [p.encode() * (2 if p.endswith("/stream") else 1) for p in paths]
            except BaseException as exc:
                failures.append(exc)

        clients = [threading.Thread(target=client, args=(c,)) for c in range(16)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
    assert not failures, failures[0]


def test_a_streamed_response_is_freed_without_the_cyclic_collector(wsgi: Any) -> None:
    """While a thread pushes a streamed body the exchange refers to the request (``writable_hook``); once the
    app is done that is undone, so reference counting frees every exchange (no cycle for the collector)."""
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return iter([b"ab", b"cd"])

    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(request)
        assert read_responses(sock, 1) == [b"abcd"]  # the server is warm
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                sock.sendall(request)
                assert read_responses(sock, 1) == [b"abcd"]
            time.sleep(0.1)  # the last worker thread has left run()
            alive = [o for o in gc.get_objects() if type(o) is H1Exchange]
        finally:
            gc.enable()
    assert len(alive) <= 2  # at most the connection's current or last one, not one per request


def test_graceful_shutdown_serves_requests_still_queued(wsgi: Any) -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/block":
            release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    bodies: dict[str, list[bytes]] = {}
    with wsgi(app, wsgi_threads=1) as srv:
        def client(path: str) -> None:
            with srv.connect(10) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                bodies[path] = read_responses(sock, 1)

        clients = [threading.Thread(target=client, args=(p,)) for p in ("/block", "/q1", "/q2")]
        clients[0].start()
        time.sleep(0.1)
        for t in clients[1:]:
            t.start()
        assert srv.server is not None
        pool = srv.server.ctx.dispatch.__self__.pool  # the AppTable's
        assert wait_for(lambda: pool.queued() == 2)
        srv.server.request_exit()
        time.sleep(0.1)
        release.set()
        for t in clients:
            t.join(10)
    assert bodies == {"/block": [b"/block"], "/q1": [b"/q1"], "/q2": [b"/q2"]}


def test_a_sendfile_response_ends_only_after_the_loop_counted_the_file(
        wsgi: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wsgi.file_wrapper file leaves from the thread (os.sendfile) and the loop counts its bytes with a
    call_soon_threadsafe of H1Exchange.send_file_blocking's own. The response's end must reach the loop after
    that count, even when a flush of the outbox (another thread's post) was queued on the loop before it:
    else the response looks short of its Content-Length, an error is logged and the connection is cut."""
    data = os.urandom(64 * 1024)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    loop_may_go_on = threading.Event()
    requests: list[Any] = []

    class File(io.FileIO):
        def close(self) -> None:  # PEP 3333: after the response's last call was posted
            loop_may_go_on.set()
            super().close()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        requests.append(environ["wsgi.early_hints"])  # the request itself: its loop and outbox
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](File(path, "rb"))  # type: ignore[no-any-return]

    real_sendfile = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        sent = real_sendfile(out_fd, in_fd, offset, count)
        if len(requests) == 1 and not loop_may_go_on.is_set():
            request = requests[0]
            request.loop.call_soon_threadsafe(loop_may_go_on.wait, 5.0)  # the loop waits for the app's close
            request.outbox.post(lambda: None, ())  # as another thread would: its flush is queued now
        return sent

    monkeypatch.setattr(http1_exchange.os, "sendfile", sendfile)
    caplog.set_level(logging.ERROR, logger="bascule.error")
    monkeypatch.setattr(logging.getLogger("bascule.error"), "propagate", True)
    request = b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n"
    with wsgi(app) as srv, srv.connect(10) as sock:
        sock.sendall(request)
        assert read_responses(sock, 1) == [data]
        sock.sendall(request)  # the connection is still open
        assert read_responses(sock, 1) == [data]
    assert not [r.getMessage() for r in caplog.records if r.name == "bascule.error"]


def policy_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.sched_getscheduler(0)).encode()]


@needs_sched_batch
@pytest.mark.parametrize("policy", ["batch", "inherit", "auto", None])
def test_the_server_runs_its_wsgi_threads_under_the_policy_asked(wsgi: Any, policy: str | None) -> None:
    """A WSGI app alone: ``auto`` (the default, None here) takes batch (tests/test_mounts.py has the rest)."""
    options = {} if policy is None else {"wsgi_thread_policy": policy}
    with wsgi(policy_app, **options) as srv, socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        bodies = read_responses(sock, 3)
    assert bodies == [str(os.SCHED_OTHER if policy == "inherit" else os.SCHED_BATCH).encode()] * 3
