"""Tests of bascule.tuning (--runtime-tuning): glibc's heap keeps its padding between bursts of request-sized
allocations (no brk shrink and regrow per burst), blocks up to 4 MiB come from the heap, and a user's own
tuning is left alone; the garbage collector's young threshold is raised unless the app set its own, and what
is alive after start-up is frozen; the serving entry points apply both only with the option on; a thread
marks itself SCHED_BATCH only from the default policy.

Each case runs in a fresh interpreter: mallopt changes the whole process, and the heap's history matters.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from sched_policy import in_a_thread, needs_sched_batch

from bascule.tuning import GC_DEFAULTS, GC_YOUNG_THRESHOLD, batch_thread, tune_malloc, user_tuned

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc malloc only")

#: 40 bursts of 200 blocks of 16 KiB (3.2 MiB, as 64 connections' 16 KiB bodies read a few times over), all
#: freed after each burst. The program break (sbrk(0)) is read at each burst's peak and after its free: a
#: burst after the first that lowers the break on free gave the heap back (a trim), one whose peak is above
#: the last burst's end took it again (a brk that grows). Between bursts nothing is read from a file and the
#: list's array is made before its blocks: a block left above them would pin the heap's top by chance of
#: layout. Then one 2 MiB block: with the threshold at 4 MiB it is carved from the heap, not a mapping of its own.
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from bascule.tuning import tune_malloc

    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = (ctypes.c_ssize_t,)

    def mappings():
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)

    tuned = tune_malloc() if sys.argv[1] == "tune" else False
    libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD at glibc's default, whatever start-up raised it to
    start = libc.sbrk(0)
    peaks = [0] * 40
    ends = [0] * 40
    for burst in range(40):
        blocks = [b""] * 200
        for i in range(200):
            blocks[i] = bytes(16384)
        peaks[burst] = libc.sbrk(0)
        del blocks
        ends[burst] = libc.sbrk(0)
    trims = sum(1 for i in range(1, 40) if ends[i] < peaks[i])
    regrowths = sum(1 for i in range(1, 40) if peaks[i] > ends[i - 1])
    before = mappings()
    big = bytearray(2 * 1024 * 1024)
    grew = mappings() - before
    del big
    print(json.dumps({"tuned": tuned, "trims": trims, "regrowths": regrowths, "new_mappings_for_2mib": grew,
                      "first_burst_kib": (peaks[0] - start) // 1024,
                      "peaks_kib": [(p - ends[0]) // 1024 for p in peaks[:8]],
                      "ends_kib": [(e - ends[0]) // 1024 for e in ends[:8]]}))
""")


#: What else in the environment decides where the blocks come from: another allocator preloaded, or CPython's
#: own choice of allocator (mimalloc on later versions)
OTHER_ALLOCATORS = ("GLIBC_TUNABLES", "LD_PRELOAD", "PYTHONMALLOC")


def probe(mode: str, **env: str) -> dict[str, object]:
    """The probe's findings in a fresh interpreter; skips where the blocks do not come from glibc's heap."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in OTHER_ALLOCATORS}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                         env=environ, check=True).stdout
    result: dict[str, object] = json.loads(out)
    first = result["first_burst_kib"]
    if isinstance(first, int) and first < 1024:  # of its 3,200 KiB (some fits in what start-up freed), none from brk
        pytest.skip(f"the probe's blocks do not come from glibc's brk heap here ({result})")
    return result


@glibc_only
def test_the_heap_keeps_its_padding_between_bursts() -> None:
    tuned = probe("tune")
    assert tuned["tuned"] is True
    assert tuned["trims"] == 0 and tuned["regrowths"] == 0, tuned  # grown in the first burst, then kept
    assert tuned["new_mappings_for_2mib"] == 0, tuned


@glibc_only
def test_the_probe_sees_glibc_give_the_heap_back_after_every_burst() -> None:
    """The control: the same probe without tune_malloc sees the brk that the test above must not see.

    In both, the probe sets glibc's trim threshold to its documented default (128 KiB) before the bursts:
    left alone, glibc raises it to twice the largest mmapped block freed so far, so whether a fresh
    interpreter trims would depend on what its start-up happened to free (and the test above could pass
    with tune_malloc doing nothing). tune_malloc's 4 MiB padding keeps the heap whatever the threshold.
    """
    plain = probe("plain")
    assert plain["tuned"] is False
    assert isinstance(plain["trims"], int) and plain["trims"] >= 30, plain
    assert isinstance(plain["regrowths"], int) and plain["regrowths"] >= 30, plain


@glibc_only
@pytest.mark.parametrize("env", [{"MALLOC_TOP_PAD_": "131072"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                 {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_a_users_own_malloc_tuning_is_left_alone(env: dict[str, str]) -> None:
    assert user_tuned(env)
    assert tune_malloc(env) is False
    assert probe("tune", **env)["tuned"] is False


@pytest.mark.parametrize("env", [{"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "PATH": "/usr/bin"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, {"MALLOC_ARENA_MAX": "2"}])
def test_other_tunables_do_not_count_as_malloc_tuning(env: dict[str, str]) -> None:
    """Settings of other things (arenas, threads) are the same whichever way they are given, and leave the
    heap's padding and threshold to tune_malloc."""
    assert not user_tuned(env)


GC_PROBE = textwrap.dedent("""
    import gc, json, sys
    from bascule.tuning import tune_gc
    if sys.argv[1] == "app-set":
        gc.set_threshold(1234, 5, 5)  # as an app could at import
    kept = [object() for _ in range(10)]  # untracked, but lists are: something alive to freeze
    holder = [[i] for i in range(1000)]
    raised = tune_gc()
    print(json.dumps({"raised": raised, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
""")


def gc_probe(mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", GC_PROBE, mode], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.skipif(sys.version_info[:2] not in GC_DEFAULTS, reason="CPython versions whose defaults are known")
def test_the_young_threshold_is_raised_and_the_started_app_frozen() -> None:
    result = gc_probe("default")
    assert result["raised"] is True
    assert result["threshold"][0] == GC_YOUNG_THRESHOLD
    assert result["threshold"][1:] == list(GC_DEFAULTS[sys.version_info[:2]][1:])
    assert result["frozen"] > 1000  # the 1000 lists, the modules, everything alive at start-up


def test_thresholds_an_app_set_itself_are_kept() -> None:
    result = gc_probe("app-set")
    assert result["raised"] is False
    assert result["threshold"] == [1234, 5, 5]
    assert result["frozen"] > 1000  # frozen all the same


class FakeServer:
    """Stands in for bascule.server.Server in run_config: records its on_ready, serves nothing."""

    seen: list[Any] = []

    def __init__(self, config: Any, app: Any = None, *, on_ready: Any = None) -> None:
        FakeServer.seen.append(on_ready)

    async def serve(self, install_signals: bool = False) -> None:
        return None


@pytest.mark.parametrize("on", [True, False])
def test_the_single_process_tunes_only_with_the_option(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    import importlib

    run_module = importlib.import_module("bascule.run")  # `bascule.run` the attribute is the run() function
    from bascule import server as server_module
    from bascule import tuning
    from bascule.config import Config

    malloc_calls: list[int] = []
    loggers = [logging.getLogger(name) for name in ("bascule.error", "bascule.access")]
    for logger in loggers:  # run_config configures logging: put back after the test
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "propagate", logger.propagate)
    levels = [logger.level for logger in loggers]
    monkeypatch.setattr(server_module, "Server", FakeServer)
    monkeypatch.setattr(tuning, "tune_malloc", lambda: malloc_calls.append(1) or True)
    FakeServer.seen.clear()
    try:
        assert run_module.run_config(Config(app="x:y", runtime_tuning=on, access_log=False)) == 0
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)  # setLevel, not the attribute: it also clears logging's isEnabledFor cache
    assert FakeServer.seen == [tuning.tune_gc if on else None]
    assert malloc_calls == ([1] if on else [])


@needs_sched_batch
def test_a_thread_marks_itself_batch_and_only_itself() -> None:
    def probe() -> tuple[bool, int, int]:
        return batch_thread(), os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)

    assert in_a_thread(probe) == (True, os.SCHED_BATCH, os.getpriority(os.PRIO_PROCESS, 0))  # nice value kept
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling thread, not the process


@needs_sched_batch
@pytest.mark.parametrize("policy", ["SCHED_IDLE", "SCHED_BATCH"])
def test_a_thread_started_under_another_policy_keeps_it(policy: str) -> None:
    def probe() -> tuple[bool, int]:
        os.sched_setscheduler(0, getattr(os, policy), os.sched_param(0))  # as under `chrt --idle 0`
        return batch_thread(), os.sched_getscheduler(0)

    assert in_a_thread(probe) == (False, getattr(os, policy))


@needs_sched_batch
def test_a_refused_call_leaves_the_thread_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")  # seccomp

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert in_a_thread(lambda: (batch_thread(), os.sched_getscheduler(0))) == (False, os.SCHED_OTHER)
