"""benchmarks/run.py: the whole report from a run's results (docs/benchmarks.md with the sections other scripts
measured kept, the JSON, what it prints) byte for byte as before run.py was split in modules."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import machine
import procs
import report
import run
import suite

GOLDEN = Path(__file__).with_name("golden_benchmarks.md")
KEPT = "## Behind nginx\n\nthe chain's tables\n"


def synthetic_results() -> list[suite.Result]:
    """Every kind of cell the report has: ok with and without notes, errors, latencies under and over 100 ms,
    a busy run, a failed server (with a '|' in its note), a skipped one, a peer at 0 req/s, a missing cell."""
    r = suite.Result
    return [
        r("bascule-asgi", "text", rps=12345.6, p50_ms=1.234, p99_ms=150.0, requests=61728, runs_rps=[12000.0, 12345.6,
          12500.0], idle_rss_kib=20480, peak_rss_kib=30822, others_cpu_pct=2.0),
        r("bascule-wsgi", "text", rps=9876.5, p50_ms=2.5, p99_ms=9.75, errors=3, error_detail="timeout 3",
          requests=49382, idle_rss_kib=22000, peak_rss_kib=25000, others_cpu_pct=15.04,
          note="1 of 3 rounds failed: check request answered 500"),
        r("uvicorn-asgi", "text", rps=8000.0, p50_ms=3.0, p99_ms=12.0, idle_rss_kib=18000, peak_rss_kib=19000,
          others_cpu_pct=0.0),
        r("granian-wsgi", "text", status="failed", note="did not start (exited with 1); log /l/g.log: a | b"),
        r("hypercorn-asgi", "text", rps=5000.4, p50_ms=None, p99_ms=None, idle_rss_kib=None, peak_rss_kib=None,
          others_cpu_pct=None),
        r("bascule-asgi", "echo", rps=3000.0, p50_ms=20.0, p99_ms=1234.5, idle_rss_kib=20480, peak_rss_kib=40960,
          others_cpu_pct=31.2),
        r("bascule-wsgi", "echo", rps=2500.0, p50_ms=25.0, p99_ms=99.99, idle_rss_kib=20480, peak_rss_kib=40960,
          others_cpu_pct=1.0),
        r("uvicorn-asgi", "echo", rps=0.0, p50_ms=1.0, p99_ms=1.0, idle_rss_kib=1, peak_rss_kib=2, others_cpu_pct=0.4),
        r("hypercorn-asgi", "echo", rps=1500.0, p50_ms=30.0, p99_ms=60.0, idle_rss_kib=1024, peak_rss_kib=2048,
          others_cpu_pct=0.0, note="server exited with 0"),
        r("bascule-asgi", "h2c", rps=40000.0, p50_ms=0.5, p99_ms=2.0, idle_rss_kib=20480, peak_rss_kib=22000,
          others_cpu_pct=0.0),
        r("bascule-wsgi", "h2c", rps=30000.0, p50_ms=0.7, p99_ms=3.0, errors=1234, error_detail="failed 1234",
          idle_rss_kib=20480, peak_rss_kib=22000, others_cpu_pct=0.0),
        r("uvicorn-asgi", "h2c", status="skipped", note="no h2c support"),
        r("granian-wsgi", "h2c", rps=35000.0, p50_ms=0.6, p99_ms=2.5, idle_rss_kib=30000, peak_rss_kib=31000,
          others_cpu_pct=0.0),
        r("hypercorn-asgi", "h2c", rps=10000.0, p50_ms=1.6, p99_ms=5.5, idle_rss_kib=30000, peak_rss_kib=31000,
          others_cpu_pct=0.0),
    ]


def run_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], chart_note: str,
             *extra: str) -> str:
    """run.main on the synthetic results into TMP/docs/benchmarks.md (whatever it held before stays there),
    nothing measured, no load tool needed: the file it wrote and what it printed, dates shown as DATE, the
    scratch dir as TMP."""

    def run_all(plan: suite.Plan, on_result: Any) -> tuple[list[suite.Result], list[suite.Result]]:
        results = synthetic_results()
        for r in results:
            on_result(r)
        return results, [*results, suite.Result("bascule-asgi", "text", rps=1.0)]

    monkeypatch.setattr(run, "run_all", run_all)
    monkeypatch.setattr(procs, "can_pin", lambda no_pin: not no_pin)
    monkeypatch.setattr(procs, "keep_off_server_cpu", lambda: None)  # the test process stays where it is
    monkeypatch.setattr(procs, "raise_nofile", lambda: None)
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(machine, "machine_info", lambda: {"cpu": "Test CPU", "nproc": "2", "memory": "4 GiB",
                                                      "kernel": "Linux 6.0", "python": "3.11.7"})
    monkeypatch.setattr(report, "versions", lambda plan: {"bascule": "1.0", "uvicorn": "0.30.1", "wrk": "4.2.0"})
    monkeypatch.setattr(report, "draw_chart", lambda plan, results, path, subtitle: chart_note)
    out = tmp_path / "docs" / "benchmarks.md"
    argv = ["--servers", "bascule-asgi,bascule-wsgi,uvicorn-asgi,granian-wsgi,hypercorn-asgi",
            "--scenarios", "text,echo,h2c", "--out", str(out), "--log-dir", str(tmp_path / "logs"), *extra]
    assert run.main(argv) == 0  # bascule's servers all answered (a peer's failure does not fail the run)
    printed = capsys.readouterr()
    text = out.read_text() + "--- printed\n" + printed.out + "--- stderr\n" + printed.err
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "DATE", text).replace(str(tmp_path), "TMP")


def test_main_writes_the_report_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """docs/benchmarks.md and the console as run.py has always written them (the golden file): pinned, three
    rounds, the chart, a kept section carried over; then unpinned, one round, no chart, nothing to keep."""
    (tmp_path / "a" / "docs").mkdir(parents=True)
    (tmp_path / "a" / "docs" / "benchmarks.md").write_text(f"# Benchmarks\n\nold tables\n\n{KEPT}")
    first = run_main(tmp_path / "a", monkeypatch, capsys, "", "--repeat", "3")
    second = run_main(tmp_path / "b", monkeypatch, capsys, "matplotlib is not installed: no chart drawn", "--no-pin",
                      "--quiet-wait", "0", "--busy-retries", "2", "--baseline", "uvicorn-asgi,nobody")
    third = run_main(tmp_path / "c", monkeypatch, capsys, "", "--repeat", "2", "--quiet-wait", "5",
                     "--busy-retries", "0")
    got = f"{first}=== unpinned, one round, no chart\n{second}=== two rounds, a quiet wait, no retries\n{third}"
    # the golden file was written by run.py as it was before it was split in modules
    assert got == GOLDEN.read_text()
    assert first.split("--- printed")[0].endswith("\n\n" + KEPT)
    data = json.loads((tmp_path / "a" / "logs" / "benchmarks.json").read_text())
    assert list(data) == ["meta", "results", "rounds"]
    assert [r["rps"] for r in data["results"]] == [r.rps for r in synthetic_results()]
    assert len(data["rounds"]) == len(data["results"]) + 1
    assert data["meta"]["command"].startswith("python --servers bascule-asgi,")
    assert data["meta"]["pinning"] == {"server_cpu": "0", "client_cpu": "1"}
    assert data["meta"]["repeat"] == 3 and list(data["meta"]["scenarios"]) == ["text", "echo", "h2c"]


def test_merge_keeps_the_median_round_with_every_round_s_rate() -> None:
    r = suite.Result
    three = [r("a", "text", rps=30, p50_ms=3.0, peak_rss_kib=100), r("a", "text", rps=10, peak_rss_kib=300),
             r("a", "text", rps=20, p50_ms=2.0, peak_rss_kib=200)]
    merged = run.merge(three)
    assert (merged.rps, merged.p50_ms, merged.runs_rps, merged.peak_rss_kib) == (20, 2.0, [10, 20, 30], 300)
    assert merged.note == ""
    two = run.merge([r("a", "text", rps=10), r("a", "text", rps=30, p50_ms=1.0)])
    assert (two.rps, two.p50_ms, two.runs_rps) == (30, 1.0, [10, 30])  # an even count: the faster middle round
    partly = run.merge([r("a", "text", status="failed", note="did not start", peak_rss_kib=999),
                        r("a", "text", rps=10, peak_rss_kib=5), r("a", "text", rps=30, peak_rss_kib=6)])
    assert (partly.rps, partly.runs_rps, partly.peak_rss_kib) == (30, [10, 30], 6)
    assert partly.note == "1 of 3 rounds failed: did not start"
    none_ok = [r("a", "text", status="skipped", note="no h2c"), r("a", "text", status="skipped")]
    assert run.merge(none_ok) is none_ok[0]
