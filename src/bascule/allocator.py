"""glibc malloc, told to keep a few MiB of freed heap instead of giving it back to the kernel after every burst.

Why: a server allocates and frees the same working set over and over (a 16 KiB request body is read into
bytes three times, and 64 connections make that a few MiB per loop pass). glibc's defaults give the top of
the heap back to the kernel (brk) as soon as 128 KiB of it is free, and take it back on the next pass: the
kernel then zeroes every page again and the first touch of each page faults. With wrk posting 16 KiB to an
echo app over 64 connections that was one brk per ~10 requests and a fifth of the server's time in page
faults and page clearing (perf); keeping 4 MiB of padding took the WSGI loop mode from 38.7k to 59k req/s.

But setting any of these parameters also stops glibc from raising its mmap threshold by itself (its
"dynamic" threshold, which learns from freed large blocks): every block over 128 KiB would then be a fresh
mmap, paged in and zeroed at each use, and a 1 MiB echo ran 9% slower. So the threshold is set with it, to
4 MiB, past what the dynamic threshold reaches for request-sized buffers (the 1 MiB echo then ran 2.1x faster
in loop mode, 1.1x in threads mode).

What it costs: up to M_TOP_PAD (4 MiB) of freed memory kept per arena rather than returned, so a worker's
RSS after a burst stays a few MiB higher. Whoever tunes glibc themselves keeps their tuning: with any of
glibc's MALLOC_*_ variables or a glibc.malloc tunable in the environment nothing is changed, and
``MALLOC_TOP_PAD_=131072`` restores glibc's own behaviour. Other C libraries (musl) and platforms are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Mapping

_log = logging.getLogger("bascule.error")

M_TOP_PAD = -2  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
TOP_PAD = 4 * 1024 * 1024
MMAP_THRESHOLD = 4 * 1024 * 1024
#: glibc's own knobs (environment variables read at start-up): set by the user, they win
USER_SETTINGS = ("MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")


def user_tuned(environ: Mapping[str, str]) -> bool:
    """True if the environment tunes glibc malloc already (its MALLOC_*_ variables or glibc.malloc tunables)."""
    return any(name in environ for name in USER_SETTINGS) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def tune_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Set glibc's heap padding and mmap threshold for a serving process; True if they were set.

    Called once per serving process (the single process, or each worker), before it serves.
    """
    if not sys.platform.startswith("linux") or user_tuned(environ):
        return False
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
