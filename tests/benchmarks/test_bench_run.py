"""benchmarks/run.py: rewriting docs/benchmarks.md keeps the sections other scripts measured."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import run


def test_kept_sections(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    assert run.kept_sections(doc) == ""  # no file yet
    doc.write_text("# Benchmarks\n\n## Requests per second\n\n| a |\n")
    assert run.kept_sections(doc) == ""
    doc.write_text("# Benchmarks\n\nsee ## Behind nginx below\n\n## Behind nginx\n\nchain\n\n### text\n\n| b |\n")
    assert run.kept_sections(doc) == "## Behind nginx\n\nchain\n\n### text\n\n| b |\n"


def test_kept_sections_static_files(tmp_path: Path) -> None:
    """benchmarks/static.py's section is kept too, alone or after the nginx chain's."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Requests per second\n\n| a |\n\n## Static files\n\n| s |\n")
    assert run.kept_sections(doc) == "## Static files\n\n| s |\n"
    doc.write_text("# Benchmarks\n\n| a |\n\n## Behind nginx\n\nchain\n\n## Static files\n\n| s |\n")
    assert run.kept_sections(doc) == "## Behind nginx\n\nchain\n\n## Static files\n\n| s |\n"
