"""Whether the scheduling-policy tests can run here: a new thread of this process starts under SCHED_OTHER
and may switch itself to SCHED_BATCH. Not so outside Linux, when the tests themselves run under another
policy (``chrt``), or in a sandbox that refuses sched_setscheduler (gVisor, a strict seccomp profile): the
tests would then fail on the machine, not on bascule, so they are skipped."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest


def in_a_thread(fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, run on a thread of its own (a policy set there stays with that thread)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(10)
    return out[0] if out else None


def thread_can_go_batch() -> bool:
    if not hasattr(os, "SCHED_BATCH") or os.sched_getscheduler(0) != os.SCHED_OTHER:
        return False

    def probe() -> bool:
        try:
            if os.sched_getscheduler(0) != os.SCHED_OTHER:
                return False
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            return os.sched_getscheduler(0) == os.SCHED_BATCH
        except OSError:
            return False

    return in_a_thread(probe) is True


needs_sched_batch = pytest.mark.skipif(
    not thread_can_go_batch(),
    reason="a new thread here does not start under SCHED_OTHER or may not switch to SCHED_BATCH")
