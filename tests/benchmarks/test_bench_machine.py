"""benchmarks/machine.py: the machine's facts and the versions of packages, asked of the interpreter that runs
them."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import machine


def test_machine_info() -> None:
    info = machine.machine_info()
    assert list(info) == ["cpu", "nproc", "memory", "kernel", "python"]
    assert info["python"] == platform.python_version() and int(info["nproc"]) >= 1


def test_dist_versions_asks_the_interpreter(tmp_path: Path) -> None:
    found = machine.dist_versions(sys.executable, ["pytest", "no-such-distribution-here"])
    assert found == {"pytest": pytest.__version__}
    assert machine.dist_versions(str(tmp_path / "no-python"), ["pytest"]) == {}


def test_bascule_build() -> None:
    assert machine.bascule_build(sys.executable) in ("compiled (mypyc)", "pure Python (editable install? see README)")
    assert machine.bascule_build("/nonexistent/python") == "unknown"
