"""What a benchmark ran on and with: the machine's facts and the versions of the Python packages measured.

Every report names them (run.py's docs/benchmarks.md, the round-based scripts' JSON), since absolute figures
mean little without them. A package's version is asked of the interpreter that runs it (bascule's, each
``--bascule-build``'s, the peers' venv), not of this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path


def machine_info() -> dict[str, str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return {"cpu": cpu, "nproc": str(os.cpu_count() or 0), "memory": mem,
            "kernel": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


_VERSION_PROBE = """\
import importlib.metadata as m, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


def dist_versions(python: str, names: Sequence[str]) -> dict[str, str]:
    try:
        done = subprocess.run([python, "-c", _VERSION_PROBE, *names], capture_output=True, text=True, timeout=30)
        found: dict[str, str] = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return found


def bascule_build(python: str) -> str:
    """'compiled (mypyc)' or 'pure Python': an editable install runs the slower pure-Python modules."""
    # protocols/http1.py was the HTTP/1.1 module until issue 13, and a --bascule-build may be that old
    probe = ("try:\n import bascule.protocols.h1.connection as m\n"
             "except ImportError:\n import bascule.protocols.http1 as m\nprint(m.__file__)")
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    path = done.stdout.strip()
    if not path:
        return "unknown"
    return "pure Python (editable install? see README)" if path.endswith(".py") else "compiled (mypyc)"
