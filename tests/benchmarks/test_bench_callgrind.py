"""benchmarks/callgrind.py's server handling: why a server under valgrind is not listening, as a BenchError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import callgrind
import procs


def test_wait_port_says_why_the_server_is_not_listening(tmp_path: Path) -> None:
    port = procs.free_port()
    exits = procs.spawn([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "exits.log")
    with pytest.raises(callgrind.BenchError) as failed:
        callgrind.wait_port(port, exits, 10)
    assert str(failed.value) == "the server exited with status 3 before listening"
    mute = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "mute.log")
    try:
        with pytest.raises(callgrind.BenchError) as failed:
            callgrind.wait_port(port, mute, 0.2)
        assert str(failed.value) == f"the server did not listen on port {port} within 0.2 s"
    finally:
        procs.stop(mute, grace=callgrind.STOP_GRACE)
    assert mute.returncode == -15
