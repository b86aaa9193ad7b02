"""Coverage-guided fuzzing of the HTTP/1.1 parser with atheris (libFuzzer), for long runs outside CI.

Runs the same harness as tests/protocols/h1/test_fuzz_h1.py (a connection over a fake transport, an
in-memory app) on libFuzzer's inputs: the first byte picks where the input is split into two reads, and
the verdict must not depend on it. Usage (see the README's Development section)::

    pip install atheris
    python tests/fuzz/fuzz_h1.py -max_total_time=3600 tests/fuzz/corpus

Seed the corpus directory with tests/corpus/*/*.http for a head start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-not-found]

sys.path.insert(0, str(Path(__file__).parent.parent / "protocols"))

with atheris.instrument_imports():
    from test_fuzz_h1 import drive


def one_input(data: bytes) -> None:
    if not data:
        return
    cut = data[0] % len(data)
    body = data[1:]
    whole = drive([body])
    assert drive([body[:cut], body[cut:]]) == whole


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
