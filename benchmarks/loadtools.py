"""The load generators, wrk and h2load: their command lines for a load shape, and their output read into figures.

wrk loads HTTP/1.1 (keep-alive, or a new connection per request with ``Connection: close``; a POST body from
a Lua script) and reports latency percentiles with ``--latency``; h2load loads HTTP/2 with prior knowledge,
and its percentiles come from its per-request log. Either way one run becomes a :class:`Load`: req/s,
requests, p50/p99, errors (wrk's socket errors plus non-2xx answers; h2load's failed and timed-out
requests), or why the tool itself failed. run.py measures with :class:`Tools`; the round-based scripts build
their own wrk command lines and run them with :func:`run_tool` and :func:`parse_wrk`.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import procs

H2_STREAMS = 32  # concurrent streams per h2load connection


@dataclass(frozen=True)
class Scenario:
    """One load shape: what is asked, over how many connections, with which tool."""

    name: str
    title: str
    path: str
    connections: int
    method: str = "GET"
    body_size: int = 0
    headers: tuple[str, ...] = ()
    tool: str = "wrk"  # or "h2load"


@dataclass
class Load:
    """What one load-generator run reported."""

    rps: float = 0.0
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    failure: str = ""  # the tool itself failed; the other fields mean nothing then


class Loaded(Protocol):
    """Where :func:`take_load` writes (run.py's Result, the other scripts' Round)."""

    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    error_detail: str


def take_load(into: Loaded, load: Load) -> None:
    """Copy a load-generator run's figures onto a result."""
    into.rps, into.requests = load.rps, load.requests
    into.p50_ms, into.p99_ms = load.p50_ms, load.p99_ms
    into.errors, into.error_detail = load.errors, load.error_detail


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(out: str) -> Load:
    load = Load()
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        load.rps = float(m.group(1))
    else:
        return Load(failure="wrk printed no Requests/sec: " + " / ".join(out.strip().splitlines()[-2:]))
    if m := re.search(r"(\d+) requests in", out):
        load.requests = int(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M):
            setattr(load, attr, _ms(m.group(1), m.group(2)))
    details = []
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        counts = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
        load.errors += sum(counts.values())
        details += [f"{k} {v}" for k, v in counts.items() if v]
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        load.errors += int(m.group(1))
        details.append(f"non-2xx {m.group(1)}")
    load.error_detail = ", ".join(details)
    return load


def parse_h2load(out: str, log_file: Path | None) -> Load:
    load = Load()
    if m := re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out):
        load.rps = float(m.group(1))
    else:
        return Load(failure="h2load printed no req/s: " + " / ".join(out.strip().splitlines()[-2:]))
    details = []
    if m := re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", out):
        _total, _done, ok, failed, errored, timeout = map(int, m.groups())
        load.requests = ok
        load.errors = failed + timeout  # "failed" counts 4xx/5xx answers and the errored ones
        details += [f"{k} {v}" for k, v in (("failed", failed), ("errored", errored), ("timeout", timeout))
                    if v]
    if m := re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out):
        non2xx = sum(map(int, m.groups()))
        if non2xx:
            details.append(f"non-2xx {non2xx}")
    if load.rps == 0 and not details:
        details.append("no request completed")
        load.errors = max(load.errors, 1)
    load.error_detail = ", ".join(details)
    if log_file is not None:
        durations: list[int] = []
        with contextlib.suppress(OSError), open(log_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1].startswith("2"):
                    durations.append(int(parts[2]))
        if len(durations) >= 2:
            durations.sort()
            load.p50_ms = durations[len(durations) // 2] / 1000
            load.p99_ms = durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1000
    return load


def post_script(scratch: Path, size: int) -> Path:
    """wrk's Lua script that POSTs ``size`` bytes of "a" (application/octet-stream), written once in ``scratch``."""
    path = scratch / f"post-{size}.lua"
    if not path.exists():
        path.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("a", {size})\n'
                        'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    return path


def run_tool(cmd: Sequence[str], tool: str, seconds: float) -> subprocess.CompletedProcess[str] | Load:
    """Run a load generator meant to take ``seconds``: its finished process (output captured), or a failed
    Load if it is still running 30 s after that."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        return Load(failure=f"{tool} did not finish within {seconds + 30:.0f} s")


@dataclass(frozen=True)
class Tools:
    """The load generators' command lines, with a scratch dir for wrk scripts and h2load logs."""

    scratch: Path
    client_cpu: str | None

    def command(self, sc: Scenario, port: int | str, seconds: float, log_file: Path | None = None) -> list[str]:
        url = f"http://127.0.0.1:{port}{sc.path}"
        if sc.tool == "h2load":
            logs = ["--log-file", str(log_file)] if log_file else []
            return [*procs.pin(self.client_cpu), "h2load", "-t1", f"-c{sc.connections}", f"-m{H2_STREAMS}",
                    f"-D{max(1, round(seconds))}", *logs, url]
        extra: list[str] = []
        if sc.method == "POST":
            extra += ["-s", str(post_script(self.scratch, sc.body_size))]
        for header in sc.headers:
            extra += ["-H", header]
        return [*procs.pin(self.client_cpu), "wrk", "-t1", f"-c{sc.connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "5s", "--latency", *extra, url]

    def run(self, sc: Scenario, port: int, seconds: float) -> Load:
        log_file = self.scratch / f"h2load-{port}.log" if sc.tool == "h2load" else None
        done = run_tool(self.command(sc, port, seconds, log_file), sc.tool, seconds)
        if isinstance(done, Load):
            return done
        out = done.stdout + done.stderr
        load = parse_h2load(out, log_file) if sc.tool == "h2load" else parse_wrk(out)
        if log_file is not None:
            log_file.unlink(missing_ok=True)
        return load
