"""benchmarks/run.py: the whole report from a run's results (docs/benchmarks.md with the sections other scripts
measured kept, the JSON, what it prints) byte for byte as before run.py was split in modules."""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import loadtools
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


#: benchmarks/apps.py's WSGI app behind wsgiref, started in benchmarks/ like every server run.py measures.
WSGIREF = ("import sys\nfrom wsgiref.simple_server import WSGIRequestHandler, make_server\nimport apps\n"
           "WSGIRequestHandler.log_message = lambda *a: None\n"
           "make_server('127.0.0.1', int(sys.argv[1]), apps.wsgi_app).serve_forever()")


class FakeTools(loadtools.Tools):
    """The load tool's figures without a load tool; remembers how long it was asked to run."""

    def run(self, sc: loadtools.Scenario, port: int, seconds: float) -> loadtools.Load:
        with self.scratch.joinpath("runs").open("a") as runs:
            runs.write(f"{sc.name} {seconds:g}\n")
        return loadtools.Load(rps=1234.5, requests=6000, p50_ms=1.5, p99_ms=9.0)


def small_plan(tmp_path: Path, argv: list[str], warmup: float = 0.0) -> suite.Plan:
    server = suite.Server("fake", "wsgi", "fake", lambda env, port: [*argv, str(port)])
    return suite.Plan(servers=[server], scenarios=[suite.SCENARIOS["json"]], seconds=1, warmup=warmup, repeat=1,
                      env=suite.Env(tmp_path, sys.executable), tools=FakeTools(tmp_path, None), server_cpu=None,
                      start_timeout=20, log_dir=tmp_path)


def test_measure_starts_checks_loads_and_stops_a_server(tmp_path: Path) -> None:
    plan = small_plan(tmp_path, [sys.executable, "-c", WSGIREF], warmup=0.5)
    result = run.measure(plan, plan.servers[0], suite.SCENARIOS["json"], run.load_apps())
    assert (result.status, result.note, result.rps, result.requests, result.runs_rps) == ("ok", "", 1234.5, 6000,
                                                                                          [1234.5])
    assert result.idle_rss_kib is not None and result.peak_rss_kib is not None
    assert result.peak_rss_kib >= result.idle_rss_kib > 0 and result.others_cpu_pct is not None
    assert (tmp_path / "runs").read_text() == "json 0.5\njson 1\n"  # the warm-up, then the measured run
    assert result.log == str(tmp_path / "fake-json.log")
    skipped = run.measure(plan, plan.servers[0], suite.SCENARIOS["h2c"], run.load_apps())
    assert (skipped.status, skipped.note) == ("skipped", "no h2c support")


def test_measure_fails_a_server_that_does_not_start(tmp_path: Path) -> None:
    plan = small_plan(tmp_path, [sys.executable, "-c", "import sys; print('no such flag'); sys.exit(2)"])
    result = run.measure(plan, plan.servers[0], suite.SCENARIOS["json"], run.load_apps())
    assert result.status == "failed"
    assert result.note == f"did not start (exited with 2); log {tmp_path / 'fake-json.log'}: no such flag"
    assert not (tmp_path / "runs").exists()


def test_check_asks_once_and_compares_the_body(tmp_path: Path) -> None:
    port = procs.free_port()
    proc = procs.spawn([sys.executable, "-c", WSGIREF, str(port)], tmp_path / "wsgiref.log")
    try:
        assert procs.not_started(port, proc, 20) == ""
        apps = run.load_apps()
        for name in ("text", "json", "big", "echo", "stream", "newconn", "h2c"):
            assert run.check(suite.SCENARIOS[name], port, apps) == "", name
        other = types.ModuleType("other_apps")
        vars(other).update(TEXT=b"other", JSON=b"", BIG=b"")
        assert run.check(suite.SCENARIOS["text"], port, other) == "check request got 13 body bytes, expected 5"
    finally:
        procs.stop(proc)
    assert run.check(suite.SCENARIOS["text"], port, apps).startswith("check request failed: ConnectionRefusedError")


def test_run_all_takes_turns_and_merges_each_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, str, int]] = []

    def measure_calmly(plan: suite.Plan, server: suite.Server, sc: loadtools.Scenario, apps: object,
                       round_no: int) -> suite.Result:
        calls.append((sc.name, server.name, round_no))
        return suite.Result(server.name, sc.name, rps=float(len(calls)))

    monkeypatch.setattr(run, "measure_calmly", measure_calmly)
    monkeypatch.setattr(run, "missing_executable", lambda plan, s: "not installed" if s.name == "uvicorn-asgi" else "")
    plan = small_plan(tmp_path, [])
    plan.servers = [suite.SERVERS["bascule-asgi"], suite.SERVERS["uvicorn-asgi"], suite.SERVERS["granian-asgi"]]
    plan.scenarios = [suite.SCENARIOS["text"], suite.SCENARIOS["echo"]]
    plan.repeat = 2
    heard: list[suite.Result] = []
    results, every = run.run_all(plan, heard.append)
    assert calls == [("text", "bascule-asgi", 0), ("text", "granian-asgi", 0), ("text", "bascule-asgi", 1),
                     ("text", "granian-asgi", 1), ("echo", "bascule-asgi", 0), ("echo", "granian-asgi", 0),
                     ("echo", "bascule-asgi", 1), ("echo", "granian-asgi", 1)]
    assert heard == results and [(r.server, r.scenario, r.rps, r.status) for r in results] == [
        ("bascule-asgi", "text", 3.0, "ok"), ("uvicorn-asgi", "text", 0.0, "failed"),
        ("granian-asgi", "text", 4.0, "ok"), ("bascule-asgi", "echo", 7.0, "ok"),
        ("uvicorn-asgi", "echo", 0.0, "failed"), ("granian-asgi", "echo", 8.0, "ok")]
    assert results[1].note == "not installed" and results[0].runs_rps == [1.0, 3.0]
    assert len(every) == 12
    assert capsys.readouterr().out.count("  round ") == 12
