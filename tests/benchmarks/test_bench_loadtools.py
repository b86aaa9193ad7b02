"""The load generators' side of the benchmarks: wrk's and h2load's output read into a Load, and their command
lines (pinned or not, a POST body from a Lua script, extra headers, h2load's streams)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import loadtools
import suite

WRK = """\
Running 5s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   9.00ms   90.00%
    Req/Sec    50.12k     2.00k   55.00k    80.00%
  Latency Distribution
     50%  612.00us
     75%    1.10ms
     90%    1.50ms
     99%    1.25s
  249000 requests in 5.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 4
Requests/sec:  49800.12
Transfer/sec:      6.00MB
"""

H2LOAD = """\
starting benchmark...
finished in 5.00s, 81234.50 req/s, 2.00MB/s
requests: 406172 total, 406200 started, 406172 done, 406000 succeeded, 172 failed, 2 errored, 3 timeout
status codes: 406000 2xx, 0 3xx, 100 4xx, 70 5xx
"""


def test_parse_wrk_reads_rate_latency_and_errors() -> None:
    load = loadtools.parse_wrk(WRK)
    assert (load.rps, load.requests, load.p50_ms, load.p99_ms) == (49800.12, 249000, 0.612, 1250.0)
    assert (load.errors, load.error_detail, load.failure) == (11, "read 2, timeout 5, non-2xx 4", "")
    clean = loadtools.parse_wrk(WRK.replace("  Socket errors: connect 0, read 2, write 0, timeout 5\n", "")
                                .replace("  Non-2xx or 3xx responses: 4\n", "").replace("1.25s", "2.5m"))
    assert (clean.errors, clean.error_detail, clean.p99_ms) == (0, "", 150000.0)


def test_parse_wrk_without_a_rate_is_a_failure() -> None:
    load = loadtools.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\nbye\n")
    assert load.failure == "wrk printed no Requests/sec: unable to connect to 127.0.0.1:1 Connection refused / bye"
    assert load.rps == 0 and load.requests == 0


def test_parse_h2load_reads_rate_errors_and_the_log_percentiles(tmp_path: Path) -> None:
    log = tmp_path / "h2load.log"  # h2load's --log-file: start time, status, duration in microseconds
    log.write_text("".join(f"1 200 {us}\n" for us in (400, 100, 300, 200)) + "1 500 99999\nshort\n")
    load = loadtools.parse_h2load(H2LOAD, log)
    assert (load.rps, load.requests, load.errors) == (81234.5, 406000, 175)
    assert load.error_detail == "failed 172, errored 2, timeout 3, non-2xx 170"
    assert (load.p50_ms, load.p99_ms) == (0.3, 0.4)
    no_log = loadtools.parse_h2load(H2LOAD, tmp_path / "missing.log")
    assert (no_log.p50_ms, no_log.p99_ms) == (None, None)


def test_parse_h2load_nothing_done_and_no_rate() -> None:
    idle = loadtools.parse_h2load("finished in 5.00s, 0.00 req/s, 0B/s\n", None)
    assert (idle.errors, idle.error_detail) == (1, "no request completed")
    assert loadtools.parse_h2load("oops\n", None).failure == "h2load printed no req/s: oops"


def test_tools_command_lines(tmp_path: Path) -> None:
    sc = suite.SCENARIOS
    pinned, free = loadtools.Tools(tmp_path, "1"), loadtools.Tools(tmp_path, None)
    assert pinned.command(sc["text"], 8000, 4.6) == [
        "taskset", "-c", "1", "wrk", "-t1", "-c64", "-d5s", "--timeout", "5s", "--latency", "http://127.0.0.1:8000/"]
    script = tmp_path / "post-16384.lua"
    assert free.command(sc["echo"], "PORT", 0.2) == [
        "wrk", "-t1", "-c64", "-d1s", "--timeout", "5s", "--latency", "-s", str(script), "http://127.0.0.1:PORT/echo"]
    assert 'string.rep("a", 16384)' in script.read_text()
    assert free.command(sc["newconn"], 1, 2)[-3:] == ["-H", "Connection: close", "http://127.0.0.1:1/"]
    assert pinned.command(sc["h2c"], 9, 3, tmp_path / "h.log") == [
        "taskset", "-c", "1", "h2load", "-t1", "-c16", "-m32", "-D3", "--log-file", str(tmp_path / "h.log"),
        "http://127.0.0.1:9/"]


def test_take_load_copies_the_figures() -> None:
    into = suite.Result("s", "text")
    loadtools.take_load(into, loadtools.Load(rps=9.5, requests=76, p50_ms=1.0, p99_ms=4.0, errors=2,
                                             error_detail="timeout 2"))
    assert (into.rps, into.requests, into.p50_ms, into.p99_ms, into.errors, into.error_detail) == (
        9.5, 76, 1.0, 4.0, 2, "timeout 2")


def test_run_tool_gives_the_finished_process_or_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    done = loadtools.run_tool([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
                              "wrk", 1)
    assert isinstance(done, subprocess.CompletedProcess) and (done.stdout, done.stderr) == ("out\n", "err\n")
    timeouts: list[float] = []

    def hangs(cmd: Sequence[str], **kwargs: float) -> None:
        timeouts.append(kwargs["timeout"])
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hangs)
    assert loadtools.run_tool(["h2load"], "h2load", 5) == loadtools.Load(failure="h2load did not finish within 35 s")
    assert timeouts == [35]


def test_tools_run_reads_the_tool_s_output_and_drops_h2load_s_log(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake(cmd: Sequence[str], tool: str, seconds: float) -> subprocess.CompletedProcess[str]:
        ran.append(list(cmd))
        if tool == "h2load":
            Path(cmd[cmd.index("--log-file") + 1]).write_text("1 200 1000\n1 200 3000\n")
            return subprocess.CompletedProcess(cmd, 0, H2LOAD, "")
        return subprocess.CompletedProcess(cmd, 0, WRK[:200], WRK[200:])  # both streams are read

    monkeypatch.setattr(loadtools, "run_tool", fake)
    tools = loadtools.Tools(tmp_path, None)
    assert tools.run(suite.SCENARIOS["text"], 80, 2) == loadtools.parse_wrk(WRK)
    h2 = tools.run(suite.SCENARIOS["h2c"], 81, 2)
    assert (h2.rps, h2.p50_ms, h2.p99_ms) == (81234.5, 3.0, 3.0)
    assert not (tmp_path / "h2load-81.log").exists()
    assert ran[1][ran[1].index("--log-file") + 1] == str(tmp_path / "h2load-81.log")
    monkeypatch.setattr(loadtools, "run_tool", lambda cmd, tool, seconds: loadtools.Load(failure="hung"))
    assert tools.run(suite.SCENARIOS["text"], 80, 2).failure == "hung"
