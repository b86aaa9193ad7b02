"""benchmarks/common.py and the helpers the round-based scripts share with run.py: the order of the runs, the
median, the ratios, the tables, the one-off request."""

from __future__ import annotations

import argparse
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common
import machine
import procs
import run


@dataclass
class Rnd:
    variant: str
    scenario: str = "text"
    rps: float = 0.0
    status: str = "ok"
    note: str = ""
    errors: int = 0
    others_cpu_pct: float | None = None
    round: int = 1


def test_interleaved_takes_every_variant_in_turn_round_by_round() -> None:
    order = list(common.interleaved(["s1", "s2"], 2, ["a", "b", "c"]))
    assert order == [("s1", 0, "a"), ("s1", 0, "b"), ("s1", 0, "c"), ("s1", 1, "a"), ("s1", 1, "b"),
                     ("s1", 1, "c"), ("s2", 0, "a"), ("s2", 0, "b"), ("s2", 0, "c"), ("s2", 1, "a"),
                     ("s2", 1, "b"), ("s2", 1, "c")]


def test_run_rounds_measures_in_that_order_and_prints_each(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, str, int]] = []

    def measure(v: str, sc: str, round_no: int) -> Rnd:
        seen.append((v, sc, round_no))
        return Rnd(v, sc, rps=10.0 * len(seen), round=round_no + 1)

    every = common.run_rounds(["x"], 2, ["a", "b"], measure, lambda r: f"{r.variant} {r.round} {r.rps:g}")
    assert seen == [("a", "x", 0), ("b", "x", 0), ("a", "x", 1), ("b", "x", 1)]
    assert [r.rps for r in every] == [10, 20, 30, 40]
    assert capsys.readouterr().out.splitlines() == ["a 1 10", "b 1 20", "a 2 30", "b 2 40"]


def test_medians_take_the_middle_ok_round() -> None:
    rounds = [Rnd("a", rps=3), Rnd("a", rps=1), Rnd("a", rps=2), Rnd("b", rps=5, status="failed"), Rnd("b", rps=4),
              Rnd("c", rps=0, status="skipped"), Rnd("c", "other", rps=7)]
    best = common.medians(rounds)
    assert best[("a", "text")].rps == 2
    assert best[("b", "text")].rps == 4  # the failed round does not count
    assert best[("c", "text")].status == "skipped"  # no ok round: its first one
    assert best[("c", "other")].rps == 7  # per scenario
    assert common.medians([Rnd("d", rps=1), Rnd("d", rps=3)])[("d", "text")].rps == 3  # even count: the upper middle


def test_median_round_of_an_even_count_is_the_faster_middle_one() -> None:
    """Other work only slows rounds down: of two middle rounds the faster is the less disturbed. An odd count
    has one middle round, whichever rule."""
    def median(*rps: float) -> float | None:
        best = common.median_round([Rnd("a", rps=v) for v in rps])
        return None if best is None else best.rps

    assert median() is None
    assert (median(5), median(7, 5), median(7, 5, 6), median(9, 1, 3, 5), median(4, 2, 1, 5, 3)) == (5, 7, 6, 5, 3)
    failed = Rnd("a", rps=100, status="failed")
    assert common.median_round([failed]) is None
    assert common.median_round([Rnd("a", rps=2), failed, Rnd("a", rps=1)]) == Rnd("a", rps=2)
    same = [Rnd("a", rps=1, round=1), Rnd("a", rps=1, round=2)]
    assert common.median_round(same) is same[1]  # a tie: the later of the two (a stable sort)


def test_speedup_needs_both_ok_and_theirs_above_zero() -> None:
    assert common.speedup(Rnd("a", rps=3), Rnd("b", rps=2)) == 1.5
    assert common.speedup(Rnd("a", rps=1), Rnd("b", rps=3)) == 1 / 3  # not rounded: each caller formats it
    for mine, theirs in ((None, Rnd("b", rps=1)), (Rnd("a", rps=1), None), (Rnd("a", rps=1, status="failed"),
                         Rnd("b", rps=1)), (Rnd("a", rps=1), Rnd("b", rps=1, status="skipped")),
                         (Rnd("a", rps=1), Rnd("b", rps=0))):
        assert common.speedup(mine, theirs) is None


def test_ratio_needs_an_ok_median_on_both_sides() -> None:
    best = common.medians([Rnd("mine", rps=250), Rnd("theirs", rps=100), Rnd("down", status="failed"),
                           Rnd("zero", rps=0)])
    r = common.ratio(best, "text", "mine", "theirs", 2.0)
    assert (r.value, r.met) == (2.5, True)
    assert common.ratio(best, "text", "theirs", "mine", 0.5).met is False
    for theirs in ("down", "zero", "absent"):
        missing = common.ratio(best, "text", "mine", theirs, 2.0)
        assert missing.value is None and missing.met is None


def test_ratio_table_rows_and_verdicts() -> None:
    assert common.ratio_table([], "| h |") == []
    lines = common.ratio_table([common.Ratio("text", "a", "b", 2.5, 2.0), common.Ratio("echo", "a", "b", 0.8, 0.9),
                                common.Ratio("big", "a", "b", None, 2.0)], "| s | r | m | t |")
    assert lines == ["| s | r | m | t |", "|---|---|---:|---:|", "| text | a / b | 2.50x (met) | 2x |",
                     "| echo | a / b | 0.80x (**not met**) | 0.9x |", "| big | a / b | - | 2x |", ""]


def test_rounds_table_frames_the_rows() -> None:
    rounds = [Rnd("a", rps=1000, others_cpu_pct=3), Rnd("a", rps=3000, others_cpu_pct=12, round=2),
              Rnd("a", rps=2000, status="failed", round=3), Rnd("b", rps=50, errors=2),
              Rnd("c", status="failed", note="did not | start"), Rnd("a", "other", rps=9)]
    lines = common.rounds_table("GET /, 8 connections", "server", ["MB/s"], ["p50", "p99"], 3, ["a", "b", "c", "d"],
                                "text", rounds, lambda b: ([f"{b.rps / 1000:g}"], ["x", "y"]))
    assert lines == [
        "GET /, 8 connections:", "",
        "| server | median req/s | MB/s | round 1 | round 2 | round 3 | errors | p50 | p99 | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| a | 3,000 | 3 | 1,000 | 3,000 | failed | 0 | x | y | 12% |",  # two ok rounds: the faster is the median
        "| b | 50 | 0.05 | 50 | | | 2 | x | y | 0% |",  # rounds it missed are empty cells
        "| c | failed: did not / start | | | | | | | | |",  # as many cells as the header
        "",
    ]


def test_parse_builds_and_pick_scenarios() -> None:
    ap = argparse.ArgumentParser()
    assert common.parse_builds(ap, ["cg=/cg/python", "x=/x/py=thon"]) == {"cg": "/cg/python", "x": "/x/py=thon"}
    assert common.pick_scenarios(ap, "b,a", {"a": 1, "b": 2}) == [2, 1]
    for bad in ("cg", "=/py", "a@b=/py", "a,b=/py", "cg="):
        with pytest.raises(SystemExit):
            common.parse_builds(ap, [bad])
    with pytest.raises(SystemExit):
        common.pick_scenarios(ap, "a,zz", {"a": 1})


def test_meta_head_and_write_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import datetime
    monkeypatch.setattr(machine, "machine_info", lambda: {"cpu": "test"})
    when = datetime.datetime(2026, 12, 7, 1, 2, tzinfo=datetime.UTC)
    meta = common.meta_head(when, "benchmarks/x.py", ["--rounds", "2", "a b"], {"bascule": "1.0"})
    assert meta == {"date": "2026-12-07 01:02 UTC", "command": "python benchmarks/x.py --rounds 2 'a b'",
                    "machine": {"cpu": "test"}, "versions": {"bascule": "1.0"}}
    rounds = [Rnd("a", rps=1), Rnd("a", rps=3), Rnd("a", rps=2)]
    out = tmp_path / "sub" / "r.json"
    common.write_json(out, {**meta, "rounds": 3}, rounds, common.medians(rounds),
                      [common.Ratio("text", "a", "b", None, 2.0)])
    data = json.loads(out.read_text())
    assert list(data) == ["meta", "rounds", "medians", "ratios"]
    assert list(data["meta"]) == ["date", "command", "machine", "versions", "rounds"]
    assert [r["rps"] for r in data["rounds"]] == [1, 3, 2] and [r["rps"] for r in data["medians"]] == [2]
    assert data["ratios"] == [{"scenario": "text", "mine": "a", "theirs": "b", "value": None, "target": 2.0,
                               "met": None}]
    assert capsys.readouterr().out == f"wrote {out}\n"


@pytest.fixture
def server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[::-1])

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_request_answers_status_and_body_or_why_not(server: int) -> None:
    assert run.request(server, "POST", "/", b"abc", {"Content-Type": "text/plain"}) == (201, b"cba")
    port = procs.free_port()  # nobody listens there
    failure = run.request(port, "GET", "/")
    assert isinstance(failure, str) and "ConnectionRefusedError" in failure
