"""The serving process tuned for a server's allocation pattern (``--runtime-tuning``, on by default): glibc
malloc keeps a few MiB of freed heap, and Python's garbage collector runs less often and skips what was
alive once the app had started.

**malloc.** A server allocates and frees the same working set over and over (a 16 KiB request body is read
into bytes three times, and 64 connections make that a few MiB per loop pass). glibc's defaults give the top
of the heap back to the kernel (brk) as soon as 128 KiB of it is free (its trim threshold, which glibc raises
only after freeing a large mmapped block), and take it back on the next pass: the
kernel then zeroes every page again and the first touch of each page faults. With wrk posting 16 KiB to an
echo app over 64 connections that was one brk per ~10 requests and a fifth of the server's time in page
faults and page clearing (perf); keeping 4 MiB of padding took the WSGI loop mode from 38.7k to 59k req/s.
Setting any of these parameters also stops glibc from raising its mmap threshold by itself (its "dynamic"
threshold, which learns from freed large blocks): every block over 128 KiB would then be a fresh mmap, paged
in and zeroed at each use, and a 1 MiB echo ran 9% slower. So the threshold is set with it, to 4 MiB, past
what the dynamic threshold reaches for request-sized buffers (the 1 MiB echo then ran 2.1x faster in loop
mode, 1.1x in threads mode). Cost: up to 4 MiB of freed memory kept per arena rather than returned. glibc's
own MALLOC_*_ variables or glibc.malloc tunables in the environment win (``MALLOC_TOP_PAD_=131072`` restores
glibc's behaviour); other C libraries (musl) and platforms are left alone.

**The garbage collector.** CPython collects its youngest generation every 700 net new container objects.
A server with many connections keeps every connection's request in flight (its Task, scope, exchange), so
each collection found them alive and promoted them, and the older generations filled with objects that
die a moment later: with wrk on 1000 connections, 755 young collections, 69 middle and 6 full ones in 5 s,
~450 ms of collecting, and each full collection walks every object the app and its framework made at import.
With the young threshold at 10,000 it was 7, 1 and 0 collections; :func:`gc.freeze` after start-up moves the
app's own long-lived objects out of every later collection (a full collection then took 3 ms, not 23 ms).
Thresholds an app set itself (at import) are kept; only CPython 3.11's and 3.12's defaults are raised. The
cost: up to 10,000 objects' worth of unreachable cycles waits longer for collection.

**The WSGI pool's threads** (``--wsgi-thread-policy``: ``batch`` where the loop works for them alone, by
default). In ``--wsgi-mode threads`` the event loop wakes a pool thread for the requests of each loop pass. On
a busy core the kernel gives the woken thread the CPU at once (wakeup preemption), in the middle of the loop's
pass, and the loop and the thread then pass the CPU and the GIL to each other several times per pass: with a
new connection per request (wrk, 32 clients, server on one core) 0.95 context switches and 1.15 futex calls
per request, ~4 per loop pass. With ``batch`` each pool thread marks itself ``SCHED_BATCH`` (Linux): the same
share of the CPU as any other thread (the nice value is kept), but its wake-up no longer preempts the thread
that woke it, so it runs once the loop blocks in epoll or its time slice ends, and takes every request the
loop read meanwhile. Same run: 0.27 context switches and 0.33 futex calls per request, 3 us less CPU per
request, +7.5% req/s. Keep-alive requests, which the thread answers itself and which seldom switch, did not
change (wrk ``GET /``, 64 connections). Why not everywhere: every wake-up of the thread loses, the
GIL's hand-over included, so where the loop itself keeps the core busy (ASGI streams beside WSGI ones on one
HTTP/2 connection, tests/integration/test_it_h2_backpressure.py) the WSGI threads ran only at the end of the
loop's slices or at the GIL's 5 ms switch interval: their streams got 0.00-0.04 of the bytes against 0.20-0.26
with ``inherit``. So ``auto``, the default, takes it only when every app is WSGI, with no static directory, TLS
or HTTP/3, and no more workers than CPUs (mounts.thread_policy_batch says why each). A process started under
another policy (``chrt``: an idle, batch or real-time one) is left as it is, and so are systems that refuse
the call. Threads and processes the app starts from a pool thread inherit the policy, as they inherit the
nice value (a library's background thread started by a request, a subprocess).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Mapping

_log = logging.getLogger("bascule.error")

M_TOP_PAD = -2  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
TOP_PAD = 4 * 1024 * 1024
MMAP_THRESHOLD = 4 * 1024 * 1024
#: glibc's own knobs for what is set here and what it interacts with (environment variables read at start-up,
#: and the same as GLIBC_TUNABLES): set by the user, they win. Other malloc settings (arena_max...) do not count.
USER_SETTINGS = ("MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")
USER_TUNABLES = ("glibc.malloc.top_pad", "glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold",
                 "glibc.malloc.mmap_max")


#: CPython's default thresholds, per version, that may be raised (3.14's incremental collector: left alone)
GC_DEFAULTS = {(3, 11): (700, 10, 10), (3, 12): (700, 10, 10)}  # the versions checked; others are left as they are
GC_YOUNG_THRESHOLD = 10_000


def user_tuned(environ: Mapping[str, str]) -> bool:
    """True if the environment sets what tune_malloc would (glibc's MALLOC_*_ variables or tunables for the
    heap's padding, trimming and mmap threshold)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return any(name in environ for name in USER_SETTINGS) or any(name + "=" in tunables for name in USER_TUNABLES)


def tune_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Set glibc's heap padding and mmap threshold for a serving process; True if they were set.

    Called once per serving process (the single process, or each worker), before it serves.
    """
    if not sys.platform.startswith("linux") or user_tuned(environ):
        return False
    import ctypes  # here: gateways/threads.py imports this module, and with it the master (which tunes nothing)

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt accepts and ignores everything)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TOP_PAD, TOP_PAD) == 1
    _log.debug("glibc malloc: top pad and mmap threshold %s", "set to 4 MiB" if done else "left (mallopt refused)")
    return done


def tune_gc() -> bool:
    """Raise the young generation's threshold (unless the app set its own) and freeze what is alive now;
    True if the threshold was raised.

    Called once the app has started (its lifespan startup done), so what it built is frozen. A full
    collection first, so no garbage is frozen with it: it runs once, on the loop, as the server starts
    serving (tens of milliseconds for a large app). What is frozen is never collected: an object alive at
    that moment that later becomes part of a garbage cycle stays (a one-time cost, bounded by what was
    alive then).
    """
    raised = False
    threshold = gc.get_threshold()
    if GC_DEFAULTS.get(sys.version_info[:2]) == threshold:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
        raised = True
    gc.collect()
    gc.freeze()
    _log.debug("gc: young threshold %s, %d objects frozen", gc.get_threshold()[0], gc.get_freeze_count())
    return raised


def batch_thread() -> bool:
    """Mark the calling thread ``SCHED_BATCH`` (a WSGI pool thread, as it starts); True if it was.

    Only on Linux, and only from ``SCHED_OTHER``: a process started under another policy keeps it. The
    module's docstring says why.
    """
    if sys.platform != "linux":
        return False
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return False
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: the calling thread, on Linux
    except OSError:  # a sandbox that refuses it (seccomp): the thread runs as before
        return False
    return True
