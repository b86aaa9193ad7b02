"""benchmarks/report.py: the figures' formats, the ratio table, the busy warning, the chart's colours and the
chart itself, and the sections of docs/benchmarks.md that a rewrite keeps. (The whole document, byte for
byte, is test_bench_run.py's golden test.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import loadtools
import report
import suite


def plan(tmp_path: Path, servers: list[str], scenarios: list[str]) -> suite.Plan:
    return suite.Plan(servers=[suite.SERVERS[s] for s in servers], scenarios=[suite.SCENARIOS[s] for s in scenarios],
                      seconds=5, warmup=2, repeat=1, env=suite.Env(tmp_path, "python"),
                      tools=loadtools.Tools(tmp_path, None), server_cpu=None, start_timeout=30, log_dir=tmp_path)


def test_formats() -> None:
    assert [report.fmt_ms(v) for v in (None, 0.1234, 99.994, 100.0, 1234.5)] == [
        "-", "0.12 ms", "99.99 ms", "100 ms", "1,234 ms"]
    assert [report.fmt_mib(v) for v in (None, 0, 1536)] == ["-", "0.0 MiB", "1.5 MiB"]
    assert [report.fmt_pct(v) for v in (None, 0.4, 12.5)] == ["-", "0%", "12%"]
    ok = suite.Result("a", "text", rps=1234.5, errors=2, error_detail="read 2")
    assert (report.fmt_rps(ok), report.fmt_errors(ok)) == ("1,234", "2 (read 2)")
    failed = suite.Result("a", "text", status="failed", errors=2)
    assert (report.fmt_rps(failed), report.fmt_errors(failed)) == ("failed", "-")


def test_ratio_table_needs_both_sides_ok() -> None:
    r = suite.Result
    results = [r("a", "text", rps=300), r("b", "text", rps=100), r("c", "text", status="failed"),
               r("a", "echo", rps=10), r("b", "echo", rps=0)]
    servers = [suite.Server(n, "asgi", n, suite.SERVERS["uvicorn-asgi"].argv) for n in ("a", "b", "c", "d")]
    scenarios = [suite.SCENARIOS["text"], suite.SCENARIOS["echo"]]
    assert report.ratio_table(results, "a", scenarios, servers) == [
        "| a / peer | text | echo |", "|---|---:|---:|", "| b | 3.00x | - |", "| c | - | - |", "| d | - | - |"]


def test_busy_warning_counts_the_disturbed_runs() -> None:
    quiet_runs = [suite.Result("a", "text", others_cpu_pct=p) for p in (None, 0.0, 10.0)]
    assert report.busy_warning(quiet_runs) == ""
    warning = report.busy_warning([*quiet_runs, suite.Result("a", "echo", others_cpu_pct=10.1),
                                   suite.Result("b", "echo", others_cpu_pct=55.5)])
    assert warning.startswith("other work on the machine used more than 10% of a CPU during 2 of 5 runs (up to 56%;")


def test_bar_colors_tell_bascule_from_the_peers() -> None:
    names = ["uvicorn-asgi", "bascule-asgi", "granian-asgi", "bascule-wsgi", "bascule-wsgi-loop", "hypercorn-asgi"]
    assert report.bar_colors([suite.SERVERS[n] for n in names]) == [
        (report.PEER_COLORS[0], "none"), ("#c0392b", "black"), (report.PEER_COLORS[1], "none"),
        ("#e67e22", "black"), ("#f5b041", "black"), (report.PEER_COLORS[2], "none")]
    many = [suite.Server(f"p{i}", "asgi", "peer", suite.SERVERS["uvicorn-asgi"].argv)
            for i in range(len(report.PEER_COLORS) + 1)]
    assert report.bar_colors(many)[-1] == (report.PEER_COLORS[0], "none")  # the colours go round


def test_draw_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = [suite.Result("bascule-asgi", "text", rps=1000), suite.Result("uvicorn-asgi", "text", rps=500),
               suite.Result("uvicorn-asgi", "echo", status="failed")]
    path = tmp_path / "out" / "chart.png"
    assert report.draw_chart(plan(tmp_path, ["bascule-asgi", "uvicorn-asgi"], ["text", "echo"]), results, path,
                             "today") == ""
    assert path.read_bytes().startswith(b"\x89PNG")


def test_document_keeps_what_other_scripts_wrote(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    meta = {"date": "D", "command": "c", "versions": {}, "machine": {"cpu": "C", "nproc": "2", "memory": "",
                                                                      "kernel": "K", "python": "3"}}
    p = plan(tmp_path, ["bascule-asgi"], ["text"])
    results = [suite.Result("bascule-asgi", "text", rps=1)]
    fresh = report.document(p, results, meta, None, out, [])
    assert fresh == report.markdown(p, results, meta, None, out, []) + "\n"
    out.write_text("# Benchmarks\n\nold\n\n## Static files\n\n| s |\n")
    assert report.document(p, results, meta, None, out, []) == fresh + "\n## Static files\n\n| s |\n"


def test_kept_sections(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    assert report.kept_sections(doc) == ""  # no file yet
    doc.write_text("# Benchmarks\n\n## Requests per second\n\n| a |\n")
    assert report.kept_sections(doc) == ""
    doc.write_text("# Benchmarks\n\nsee ## Behind nginx below\n\n## Behind nginx\n\nchain\n\n### text\n\n| b |\n")
    assert report.kept_sections(doc) == "## Behind nginx\n\nchain\n\n### text\n\n| b |\n"


def test_kept_sections_static_files(tmp_path: Path) -> None:
    """benchmarks/static.py's section is kept too, alone or after the nginx chain's."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Requests per second\n\n| a |\n\n## Static files\n\n| s |\n")
    assert report.kept_sections(doc) == "## Static files\n\n| s |\n"
    doc.write_text("# Benchmarks\n\n| a |\n\n## Behind nginx\n\nchain\n\n## Static files\n\n| s |\n")
    assert report.kept_sections(doc) == "## Behind nginx\n\nchain\n\n## Static files\n\n| s |\n"
