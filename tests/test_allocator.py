"""Tests of bascule.allocator: glibc's heap keeps its padding between bursts of request-sized allocations (no
brk shrink and regrow per burst), blocks up to 4 MiB come from the heap, and a user's own tuning is left alone.

Each case runs in a fresh interpreter: mallopt changes the whole process, and the heap's history matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bascule.allocator import tune_malloc, user_tuned

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc malloc only")

#: 40 bursts of 200 blocks of 16 KiB (3.2 MiB, as 64 connections' 16 KiB bodies read a few times over), all
#: freed after each burst; the [heap] mapping's size is read after every burst, and every change is a brk.
#: Then one 2 MiB block: with the threshold at 4 MiB it is carved from the heap, not a mapping of its own.
PROBE = textwrap.dedent("""
    import json, sys
    from bascule.allocator import tune_malloc

    def heap_size():
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[heap]"):
                    start, end = line.split()[0].split("-")
                    return int(end, 16) - int(start, 16)
        return 0

    def mappings():
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)

    tuned = tune_malloc() if sys.argv[1] == "tune" else False
    sizes = []
    for burst in range(40):
        blocks = [bytes(16384) for _ in range(200)]
        del blocks
        sizes.append(heap_size())
    changes = sum(1 for a, b in zip(sizes, sizes[1:]) if a != b)
    before = mappings()
    big = bytearray(2 * 1024 * 1024)
    grew = mappings() - before
    del big
    print(json.dumps({"tuned": tuned, "changes": changes, "new_mappings_for_2mib": grew}))
""")


def probe(mode: str, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                         env=environ, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_the_heap_keeps_its_padding_between_bursts() -> None:
    tuned = probe("tune")
    assert tuned["tuned"] is True
    assert tuned["changes"] == 0, tuned  # grown once (before the first reading), never shrunk and regrown
    assert tuned["new_mappings_for_2mib"] == 0, tuned


def test_without_it_glibc_gives_the_heap_back_after_every_burst() -> None:
    """The behaviour it replaces (what makes the test above fail without tune_malloc)."""
    plain = probe("plain")
    assert plain["tuned"] is False
    assert isinstance(plain["changes"], int) and plain["changes"] >= 30, plain


@pytest.mark.parametrize("env", [{"MALLOC_TOP_PAD_": "131072"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                 {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_a_users_own_malloc_tuning_is_left_alone(env: dict[str, str]) -> None:
    assert user_tuned(env)
    assert tune_malloc(env) is False
    assert probe("tune", **env)["tuned"] is False


def test_other_tunables_do_not_count_as_malloc_tuning() -> None:
    assert not user_tuned({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "PATH": "/usr/bin"})
