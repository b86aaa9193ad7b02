"""bascule's benchmark suite: bascule and its peers on identical apps, side by side, in one run.

Method
------
Every server serves the same app (benchmarks/apps.py: one ASGI and one WSGI callable answering the same
routes with the same bytes), one worker process each, at its defaults apart from the flags listed in
SERVERS below. For each scenario, each server is started fresh, checked with one real request, warmed up,
then loaded for a fixed time; its process tree's RSS is sampled throughout.

- Pinning. The server runs on CPU 0 (``taskset -c 0``) and the load generator (wrk, or h2load for h2c)
  on CPU 1, and this runner pins itself to CPU 1 as well. On a two-core machine that is the only way the
  client does not steal cycles from the server it measures, and it makes "one worker on one core" the
  unit being compared, which is what a server's per-core efficiency is.
- Ratios. Absolute req/s on a shared or virtual machine drift by 10-20% from one minute to the next, so
  a figure from last week's run says little next to one from today's. Every server here is measured in
  the same run, scenario by scenario, so the drift hits all of them alike; the ratios between them
  (``bascule-asgi / peer``) are the numbers to read and to compare across machines.
- Rounds. ``--repeat N`` measures every server N times, taking turns, and keeps each one's median
  round, so a burst of other work lands on one round of one server, not on all of a server's runs.
- Disturbance. For every run the runner also measures how much CPU other work on the machine used
  (machine busy time from /proc/stat minus the server's, wrk's and its own). It waits for the machine to
  be quiet before each run (``--quiet-wait``), measures a disturbed run again (``--busy-retries``) and
  keeps the least disturbed attempt; the report shows the figure per run and warns when it was more than
  a trace, since then even the ratios are off.
- Latency percentiles come from wrk's ``--latency`` (p50, p99); errors are wrk's socket errors plus
  non-2xx answers; RSS is VmRSS summed over the server's process tree (master and workers), sampled
  every 100 ms: "idle" right after the first answer, "peak" the largest sample during warm-up and run.

Usage
-----
  python benchmarks/run.py --setup          # once per machine: wrk + h2load (apt), peers venv (pip)
  python benchmarks/run.py                  # full run: docs/benchmarks.md + .png, JSON in the log dir
  python benchmarks/run.py --quick --servers bascule-asgi,uvicorn-asgi   # smoke check, output in /tmp
  python benchmarks/run.py --dry-run        # print every command it would run

bascule itself is started with this runner's own interpreter (``sys.executable -m bascule``), so run it
with the Python that has bascule installed; the peers run from their own venv (``--peers-venv``). To
compare bascule builds in one run (say before and after a change), give each its own venv:
``--bascule-build before=/v/before/bin/python --bascule-build after=/v/after/bin/python`` adds the servers
``bascule-asgi@before`` and ``bascule-asgi@after`` (and ``-wsgi``) to choose in ``--servers``.
Only the standard library is needed; matplotlib (the ``bench`` extra) draws the chart when installed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import procs  # benchmarks/procs.py: starting, measuring and stopping the servers
import quiet  # benchmarks/quiet.py: other work on the machine, and measuring around it

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PEERS_VENV = Path(tempfile.gettempdir()) / "bascule-peers"
LOG_DIR = Path(tempfile.gettempdir()) / "bascule-bench"

#: What --setup installs into the peers venv (one source of truth for the peers' versions we report).
PEER_PACKAGES = ("uvicorn[standard]", "uvloop", "httptools", "granian", "hypercorn", "gunicorn", "waitress")
#: Load tools and the Debian packages that ship them.
APT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client", "taskset": "util-linux"}

ECHO_SIZE = 16 * 1024
H2_STREAMS = 32
#: Chart colours: bascule in red/orange, the peers in cool colours and greys that never look like it.
PEER_COLORS = ("#1f4e79", "#5b9bd5", "#2e7d32", "#81c784", "#6a51a3", "#9e9ac8", "#7f7f7f", "#bdbdbd",
               "#00838f")
#: Sections at the end of docs/benchmarks.md that other scripts measure (benchmarks/nginx_chain.py,
#: benchmarks/static.py): kept as they are when this runner rewrites the file.
KEPT_SECTIONS = ("## Behind nginx", "## Static files")


# --------------------------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Env:
    """Where things are: the peers' bin dir, bascule's interpreter and extra flags."""

    peers_bin: Path
    bascule_python: str
    bascule_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    """One contender: how to start it on a port, and what it is."""

    name: str
    interface: str  # "asgi" or "wsgi"
    distribution: str  # whose version the report names
    argv: Callable[[Env, int | str], list[str]]
    h2c: bool = False  # serves HTTP/2 with prior knowledge on a cleartext port
    python: str = ""  # bascule of a --bascule-build: its interpreter ('' for --bascule-python's)

    def is_ours(self) -> bool:
        return self.distribution == "bascule"


def _bascule(interface: str, python: str = "", *extra: str) -> Callable[[Env, int | str], list[str]]:
    def argv(env: Env, port: int | str) -> list[str]:
        return [python or env.bascule_python, "-m", "bascule", f"apps:{interface}_app", "--app-dir", str(HERE),
                "--interface", "asgi3" if interface == "asgi" else interface,
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *extra, *env.bascule_args]
    return argv


def _peer(tool: str, *args: str) -> Callable[[Env, int | str], list[str]]:
    def argv(env: Env, port: int | str) -> list[str]:
        return [str(env.peers_bin / tool), *(a.replace("{port}", str(port)) for a in args)]
    return argv


#: Servers measured only when --servers names them.
OPT_IN = ("bascule-wsgi-loop",)
SERVERS: dict[str, Server] = {s.name: s for s in (
    Server("bascule-asgi", "asgi", "bascule", _bascule("asgi"), h2c=True),
    Server("bascule-wsgi", "wsgi", "bascule", _bascule("wsgi"), h2c=True),
    # --wsgi-mode loop beside the default threads mode (issue 18); only when --servers names it
    Server("bascule-wsgi-loop", "wsgi", "bascule", _bascule("wsgi", "", "--wsgi-mode", "loop"), h2c=True),
    Server("uvicorn-asgi", "asgi", "uvicorn", _peer(
        "uvicorn", "apps:asgi_app", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning")),
    Server("uvicorn-wsgi", "wsgi", "uvicorn", _peer(
        "uvicorn", "apps:wsgi_app", "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning")),
    Server("granian-asgi", "asgi", "granian", _peer(
        "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
        "apps:asgi_app"), h2c=True),
    Server("granian-wsgi", "wsgi", "granian", _peer(
        "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
        "apps:wsgi_app"), h2c=True),
    Server("hypercorn-asgi", "asgi", "hypercorn", _peer(
        "hypercorn", "-b", "127.0.0.1:{port}", "-k", "uvloop", "-w", "1", "apps:asgi_app"), h2c=True),
    Server("gunicorn-gthread", "wsgi", "gunicorn", _peer(
        "gunicorn", "-b", "127.0.0.1:{port}", "-w", "1", "-k", "gthread", "--threads", "8",
        "apps:wsgi_app")),
    Server("waitress-wsgi", "wsgi", "waitress", _peer(
        "waitress-serve", "--listen=127.0.0.1:{port}", "apps:wsgi_app")),
)}


# ------------------------------------------------------------------------------------------- scenarios


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


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("text", "GET / (13 B text), 64 keep-alive connections", "/", 64),
    Scenario("json", "GET /json (~1 KiB JSON), 64 connections", "/json", 64),
    Scenario("big", "GET /big (64 KiB body), 64 connections", "/big", 64),
    Scenario("echo", "POST /echo (16 KiB body echoed), 64 connections", "/echo", 64, "POST", ECHO_SIZE),
    Scenario("stream", "GET /stream (16 x 1 KiB chunks, chunked), 64 connections", "/stream", 64),
    Scenario("text-1000", "GET / (13 B text), 1000 keep-alive connections", "/", 1000),
    Scenario("newconn", "GET / with `Connection: close`: a new connection per request, 32 clients",
             "/", 32, headers=("Connection: close",)),
    Scenario("h2c", f"GET / over HTTP/2 cleartext (h2load, 16 connections x {H2_STREAMS} streams)",
             "/", 16, tool="h2load"),
)}
DEFAULT_SCENARIOS = ("text", "json", "big", "echo", "stream", "text-1000", "newconn")
QUICK_SCENARIOS = ("text", "echo", "stream", "newconn")


# --------------------------------------------------------------------------------------------- results


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


@dataclass
class Result:
    """One server in one scenario."""

    server: str
    scenario: str
    status: str = "ok"  # "ok", "failed", "skipped"
    note: str = ""
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    requests: int = 0
    runs_rps: list[float] = field(default_factory=list)
    idle_rss_kib: int | None = None
    peak_rss_kib: int | None = None
    others_cpu_pct: float | None = None  # CPU used by other work on the machine during the measured run
    log: str = ""


# ------------------------------------------------------------------------------------------ load tools


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


@dataclass(frozen=True)
class Tools:
    """The load generators' command lines, with a scratch dir for wrk scripts and h2load logs."""

    scratch: Path
    client_cpu: str | None

    def echo_script(self, size: int) -> Path:
        path = self.scratch / f"post-{size}.lua"
        if not path.exists():
            path.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("a", {size})\n'
                            'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        return path

    def command(self, sc: Scenario, port: int | str, seconds: float, log_file: Path | None = None) -> list[str]:
        url = f"http://127.0.0.1:{port}{sc.path}"
        if sc.tool == "h2load":
            logs = ["--log-file", str(log_file)] if log_file else []
            return [*procs.pin(self.client_cpu), "h2load", "-t1", f"-c{sc.connections}", f"-m{H2_STREAMS}",
                    f"-D{max(1, round(seconds))}", *logs, url]
        extra: list[str] = []
        if sc.method == "POST":
            extra += ["-s", str(self.echo_script(sc.body_size))]
        for header in sc.headers:
            extra += ["-H", header]
        return [*procs.pin(self.client_cpu), "wrk", "-t1", f"-c{sc.connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "5s", "--latency", *extra, url]

    def run(self, sc: Scenario, port: int, seconds: float) -> Load:
        log_file = self.scratch / f"h2load-{port}.log" if sc.tool == "h2load" else None
        cmd = self.command(sc, port, seconds, log_file)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            return Load(failure=f"{sc.tool} did not finish within {seconds + 30:.0f} s")
        out = done.stdout + done.stderr
        load = parse_h2load(out, log_file) if sc.tool == "h2load" else parse_wrk(out)
        if log_file is not None:
            log_file.unlink(missing_ok=True)
        return load


# ------------------------------------------------------------------------------------------- the check


def load_apps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bascule_bench_apps", HERE / "apps.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {HERE / 'apps.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_body(sc: Scenario, apps: ModuleType) -> bytes:
    if sc.path == "/echo":
        return b"a" * sc.body_size
    if sc.path == "/stream":
        return bytes(apps.CHUNK) * int(apps.CHUNKS)
    return {"/": apps.TEXT, "/json": apps.JSON, "/big": apps.BIG}[sc.path]  # type: ignore[no-any-return]


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes] | str:
    """One request to 127.0.0.1:``port`` on a fresh connection: (status, body), or the failure's repr."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return repr(exc)
    finally:
        conn.close()


def check(sc: Scenario, port: int, apps: ModuleType) -> str:
    """One real request before the load: a server that answers wrongly must not score. '' means fine."""
    if sc.tool != "wrk":
        return ""
    body = b"a" * sc.body_size if sc.method == "POST" else None
    headers = dict(h.split(": ", 1) for h in sc.headers)
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    answer = request(port, sc.method, sc.path, body, headers)
    if isinstance(answer, str):
        return f"check request failed: {answer}"
    status, got = answer
    if status != 200:
        return f"check request answered {status}"
    want = expected_body(sc, apps)
    if got != want:
        return f"check request got {len(got)} body bytes, expected {len(want)}"
    return ""


# ------------------------------------------------------------------------------------------ the runner


@dataclass
class Plan:
    servers: list[Server]
    scenarios: list[Scenario]
    seconds: float
    warmup: float
    repeat: int
    env: Env
    tools: Tools
    server_cpu: str | None
    start_timeout: float
    log_dir: Path
    quiet_wait: float = 0.0  # seconds to wait, at most, for other work to stop before each run
    busy_retries: int = 0  # how many times a disturbed run is measured again


def server_command(plan: Plan, server: Server, port: int | str) -> list[str]:
    return [*procs.pin(plan.server_cpu), *server.argv(plan.env, port)]


def missing_executable(plan: Plan, server: Server) -> str:
    exe = server.argv(plan.env, 0)[0]
    if server.is_ours():
        try:
            done = subprocess.run([exe, "-c", "import bascule"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run {exe}: {exc}"
        if done.returncode != 0:
            return f"{exe} cannot import bascule (pip install . in that interpreter's venv)"
        return ""
    if not os.access(exe, os.X_OK):
        return f"{exe} not found: run `python benchmarks/run.py --setup`"
    return ""


def measure(plan: Plan, server: Server, sc: Scenario, apps: ModuleType, round_no: int = 0) -> Result:
    """Start ``server``, check it, warm it up, load it once, stop it: one cell of one round."""
    result = Result(server.name, sc.name)
    if sc.tool == "h2load" and not server.h2c:
        result.status, result.note = "skipped", "no h2c support"
        return result
    port = procs.free_port()
    log_path = plan.log_dir / f"{server.name}-{sc.name}{f'-{round_no + 1}' if plan.repeat > 1 else ''}.log"
    result.log = str(log_path)
    proc = procs.spawn(server_command(plan, server, port), log_path)
    try:
        if why := procs.not_started(port, proc, plan.start_timeout):
            result.status = "failed"
            result.note = f"did not start ({why}); log {log_path}: {procs.log_tail(log_path)}"
            return result
        with procs.RssSampler(proc.pid) as sampler:
            if problem := check(sc, port, apps):
                result.status, result.note = "failed", f"{problem}; log {log_path}"
                return result
            time.sleep(0.3)
            result.idle_rss_kib = procs.tree_rss_kib(proc.pid)
            if plan.warmup > 0:
                plan.tools.run(sc, port, plan.warmup)
            audit = quiet.CpuAudit(proc.pid)
            load = plan.tools.run(sc, port, plan.seconds)
            result.others_cpu_pct = audit.others_pct()
        result.peak_rss_kib = max(sampler.peak, result.idle_rss_kib)
        if load.failure:
            result.status, result.note = "failed", f"{load.failure}; log {log_path}"
        else:
            take_load(result, load)
            result.runs_rps = [load.rps]
        if proc.poll() is not None:
            result.note = (result.note + "; " if result.note else "") + f"server exited with {proc.returncode}"
    finally:
        procs.stop(proc)
    return result


def measure_calmly(plan: Plan, server: Server, sc: Scenario, apps: ModuleType, round_no: int) -> Result:
    """measure(), on a quiet machine if one comes within --quiet-wait, again if other work disturbed it."""
    def disturbed(result: Result) -> None:
        print(f"  disturbed ({fmt_pct(result.others_cpu_pct)} of a CPU went to other work): measuring "
              f"{server.name} {sc.name} again", flush=True)
    return quiet.calmly(lambda: measure(plan, server, sc, apps, round_no), plan.quiet_wait, plan.busy_retries,
                  disturbed)[0]


def merge(rounds: list[Result]) -> Result:
    """Several rounds of one cell → the round with the median req/s (its own figures), every round's req/s
    kept, and the peak RSS of all rounds."""
    ok = sorted((r for r in rounds if r.status == "ok"), key=lambda r: r.rps)
    if not ok:
        return rounds[0]
    best = ok[len(ok) // 2]
    merged = Result(**{**asdict(best), "runs_rps": [r.rps for r in ok]})
    merged.peak_rss_kib = max(r.peak_rss_kib or 0 for r in ok)
    if len(ok) < len(rounds):
        bad = next(r for r in rounds if r.status != "ok")
        merged.note = f"{len(rounds) - len(ok)} of {len(rounds)} rounds {bad.status}: {bad.note}"
    return merged


def run_all(plan: Plan, on_result: Callable[[Result], None]) -> tuple[list[Result], list[Result]]:
    """Scenario by scenario, round by round, every server in turn: drift spreads over all of them.

    Returns the merged result of each cell and every single round's result.
    """
    apps = load_apps()
    results: list[Result] = []
    every_round: list[Result] = []
    missing = {s.name: why for s in plan.servers if (why := missing_executable(plan, s))}
    for sc in plan.scenarios:
        rounds: dict[str, list[Result]] = {s.name: [] for s in plan.servers}
        for round_no in range(plan.repeat):
            for server in plan.servers:
                if server.name in missing:
                    one = Result(server.name, sc.name, status="failed", note=missing[server.name])
                else:
                    one = measure_calmly(plan, server, sc, apps, round_no)
                rounds[server.name].append(one)
                if plan.repeat > 1:
                    print(f"  round {round_no + 1}/{plan.repeat}: {progress_line(one)}", flush=True)
        for server in plan.servers:
            result = merge(rounds[server.name])
            results.append(result)
            every_round.extend(rounds[server.name])
            on_result(result)
    return results, every_round


# ------------------------------------------------------------------------------------------- reporting


def fmt_rps(r: Result) -> str:
    return f"{r.rps:,.0f}" if r.status == "ok" else r.status


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def fmt_errors(r: Result) -> str:
    if r.status != "ok":
        return "-"
    return "0" if not r.errors else f"{r.errors:,} ({r.error_detail})"


def progress_line(r: Result) -> str:
    if r.status != "ok":
        return f"{r.scenario:>10}  {r.server:<17} {r.status.upper()}: {r.note}"
    return (f"{r.scenario:>10}  {r.server:<17} {r.rps:>10,.0f} req/s  p50 {fmt_ms(r.p50_ms):>9}  "
            f"p99 {fmt_ms(r.p99_ms):>9}  errors {fmt_errors(r)}  rss {fmt_mib(r.idle_rss_kib)} -> "
            f"{fmt_mib(r.peak_rss_kib)}  others {fmt_pct(r.others_cpu_pct)}" + (f"  ({r.note})" if r.note else ""))


def machine_info() -> dict[str, str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return {"cpu": cpu, "nproc": str(os.cpu_count() or 0), "memory": mem,
            "kernel": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


_VERSION_PROBE = """\
import importlib.metadata as m, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


def _dist_versions(python: str, names: Sequence[str]) -> dict[str, str]:
    try:
        done = subprocess.run([python, "-c", _VERSION_PROBE, *names], capture_output=True, text=True, timeout=30)
        found: dict[str, str] = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return found


def bascule_build(python: str) -> str:
    """'compiled (mypyc)' or 'pure Python': an editable install runs the slower pure-Python modules."""
    # protocols/http1.py was the HTTP/1.1 module until issue 13, and a --bascule-build may be that old
    probe = ("try:\n import bascule.protocols.h1.connection as m\n"
             "except ImportError:\n import bascule.protocols.http1 as m\nprint(m.__file__)")
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    path = done.stdout.strip()
    if not path:
        return "unknown"
    return "pure Python (editable install? see README)" if path.endswith(".py") else "compiled (mypyc)"


def versions(plan: Plan) -> dict[str, str]:
    """Versions of what was measured: bascule, each peer, uvloop/httptools on both sides, the load tools."""
    found: dict[str, str] = {}
    builds = {s.python or plan.env.bascule_python: s.name.partition("@")[2] for s in plan.servers if s.is_ours()}
    for python, label in builds.items():
        at = f" @{label}" if label else ""
        for name, version in _dist_versions(python, ["bascule", "uvloop", "httptools"]).items():
            found[f"{name}{at}" if name == "bascule" else f"{name} (bascule{at}'s)"] = version
        found[f"bascule build{at}"] = bascule_build(python)
    peers = sorted({s.distribution for s in plan.servers if not s.is_ours()})
    if peers:
        for name, version in _dist_versions(str(plan.env.peers_bin / "python"),
                                            [*peers, "uvloop", "httptools"]).items():
            found[name if name in peers else f"{name} (peers')"] = version
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        if shutil.which(tool) is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
            head = (done.stdout + done.stderr).strip().splitlines()
            if head and (m := re.search(r"(\d+\.\d+[\w.+-]*)", head[0])):
                found[tool] = m.group(1)
    return found


def ratio_table(results: list[Result], base: str, scenarios: list[Scenario], servers: list[Server]) -> list[str]:
    by = {(r.server, r.scenario): r for r in results}
    lines = [f"| {base} / peer | " + " | ".join(sc.name for sc in scenarios) + " |",
             "|---|" + "---:|" * len(scenarios)]
    for server in servers:
        if server.name == base:
            continue
        cells = []
        for sc in scenarios:
            mine, theirs = by.get((base, sc.name)), by.get((server.name, sc.name))
            if mine and theirs and mine.status == theirs.status == "ok" and theirs.rps > 0:
                cells.append(f"{mine.rps / theirs.rps:.2f}x")
            else:
                cells.append("-")
        lines.append(f"| {server.name} | " + " | ".join(cells) + " |")
    return lines


def busy_warning(results: list[Result]) -> str:
    """'' on a quiet machine, else a sentence on how much other work shared the CPUs during the runs."""
    busy = [r for r in results if (r.others_cpu_pct or 0.0) > quiet.BUSY_PCT]
    if not busy:
        return ""
    worst = max(r.others_cpu_pct or 0.0 for r in busy)
    return (f"other work on the machine used more than {quiet.BUSY_PCT:g}% of a CPU during {len(busy)} of "
            f"{len(results)} runs (up to {worst:.0f}%; column \"others' CPU\"), so those numbers, and even "
            "their ratios, are noisier than usual. Rerun on an idle machine, or with `--repeat 3`.")


def markdown(plan: Plan, results: list[Result], meta: dict[str, Any], chart: Path | None,
             out: Path, bases: list[str]) -> str:
    m = meta["machine"]
    pinning = (f"server pinned to CPU {plan.server_cpu}, load generator to CPU {plan.tools.client_cpu}"
               if plan.server_cpu is not None else "no CPU pinning (fewer than 2 CPUs or taskset missing)")
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [
        "# Benchmarks",
        "",
        f"Measured {meta['date']} on {m['cpu']} ({m['nproc']} CPUs, {m['memory']}), {m['kernel']}, "
        f"Python {m['python']}; {pinning}. Each server is one worker at its defaults (flags in "
        "`benchmarks/run.py`), restarted for every scenario, checked with one request, warmed up "
        f"{plan.warmup:g} s, then loaded for {plan.seconds:g} s"
        + (f", in {plan.repeat} rounds (the median round is shown)" if plan.repeat > 1 else "") + "."
        + (f" Before each run it waited up to {plan.quiet_wait:g} s for other work on the machine to stop"
           if plan.quiet_wait > 0 else "")
        + (f"{'; a' if plan.quiet_wait > 0 else ' A'} run that other work disturbed anyway was measured "
           f"again, up to {plan.busy_retries} times, keeping the least disturbed attempt"
           if plan.busy_retries > 0 else "")
        + ("." if plan.quiet_wait > 0 or plan.busy_retries > 0 else ""),
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Versions: {vers}.",
        "",
        "Absolute numbers drift between machines and runs; the ratios, all taken in this one run, are what "
        "to compare. Errors are wrk's socket errors plus non-2xx answers; RSS is summed over the server's "
        "process tree, idle after the first answer and peak during the load. \"Others' CPU\" is the CPU that "
        "other work on the machine used during a run (% of one CPU): above a few % that run was disturbed.",
        "",
    ]
    if warning := busy_warning(results):
        lines += [f"**Note:** {warning}", ""]
    if chart is not None:
        lines += [f"![requests per second by scenario]({os.path.relpath(chart, out.parent)})", ""]
    names = [s.name for s in plan.servers]
    by = {(r.server, r.scenario): r for r in results}
    lines += ["## Requests per second", "",
              "| server | " + " | ".join(sc.name for sc in plan.scenarios) + " |",
              "|---|" + "---:|" * len(plan.scenarios)]
    for name in names:
        cells = [fmt_rps(by[(name, sc.name)]) if (name, sc.name) in by else "-" for sc in plan.scenarios]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for base in bases:
        lines += [f"## Ratios: {base} / peer (req/s; above 1 means {base} is faster)", "",
                  *ratio_table(results, base, plan.scenarios, plan.servers), ""]
    lines += ["## Scenarios", ""]
    for sc in plan.scenarios:
        lines += [f"### {sc.name}: {sc.title}", "",
                  "| server | req/s | p50 | p99 | errors | idle RSS | peak RSS | others' CPU |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for name in names:
            r = by.get((name, sc.name))
            if r is None:
                continue
            if r.status != "ok":
                lines.append(f"| {name} | {r.status}: {r.note.replace('|', '/')} | | | | | | |")
                continue
            lines.append(f"| {name} | {r.rps:,.0f} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} | "
                         f"{fmt_errors(r)} | {fmt_mib(r.idle_rss_kib)} | {fmt_mib(r.peak_rss_kib)} | "
                         f"{fmt_pct(r.others_cpu_pct)} |")
        notes = [f"- {name}: {by[(name, sc.name)].note}" for name in names
                 if (name, sc.name) in by and by[(name, sc.name)].status == "ok" and by[(name, sc.name)].note]
        if notes:
            lines += ["", *notes]
        lines.append("")
    return "\n".join(lines)


def kept_sections(path: Path) -> str:
    """The tail of ``path`` from its first KEPT_SECTIONS heading on ('' if none): what a rewrite carries over."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    starts = [i + 1 for title in KEPT_SECTIONS if (i := text.find("\n" + title + "\n")) >= 0]
    return text[min(starts):] if starts else ""


def draw_chart(plan: Plan, results: list[Result], path: Path, subtitle: str) -> str:
    """Grouped bars: req/s per scenario, one bar per server. Returns '' or why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'): no chart drawn"
    by = {(r.server, r.scenario): r for r in results}
    servers = [s.name for s in plan.servers]
    scenarios = [sc.name for sc in plan.scenarios]
    n = len(servers)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(min(16.0, max(8.0, 1.5 + len(scenarios) * (0.16 * n + 0.4))), 6.0))
    peers_seen = 0
    for i, name in enumerate(servers):
        values = [by[(name, sc)].rps if (name, sc) in by and by[(name, sc)].status == "ok" else 0.0
                  for sc in scenarios]
        if SERVERS[name].is_ours():
            color = ("#c0392b" if SERVERS[name].interface == "asgi"  # ASGI red, WSGI orange, loop mode lighter
                     else "#f5b041" if name.endswith("-loop") else "#e67e22")
            edge = "black"
        else:
            color, edge = PEER_COLORS[peers_seen % len(PEER_COLORS)], "none"
            peers_seen += 1
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(scenarios))]
        ax.bar(xs, values, width, label=name, color=color, edgecolor=edge, linewidth=0.6)
    ax.set_xticks(range(len(scenarios)), scenarios)
    top = max((r.rps for r in results if r.status == "ok"), default=0.0)
    if top > 0:
        ax.set_ylim(0, top * 1.2)  # room for the legend above the tallest bar
    ax.set_ylabel("requests per second (one worker, one core)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    ax.set_title(f"bascule and peers, HTTP/1.1 req/s by scenario\n{subtitle}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(ncol=min(n, 5), fontsize=8, loc="upper right", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""


# ----------------------------------------------------------------------------------------------- setup


def setup(peers_venv: Path) -> int:
    """Install the load tools (apt) and the peers (a venv, pip) that a fresh machine lacks."""
    missing = sorted({pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        if sudo and shutil.which("sudo") is None:
            print(f"need root to install {' '.join(missing)}: apt-get install {' '.join(missing)}")
            return 1
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in ([*sudo, "apt-get", "update", "-qq"], [*sudo, "apt-get", "install", "-y", "-qq", *missing]):
            if subprocess.run(cmd, env=env).returncode != 0:
                print(f"failed: {shlex.join(cmd)}")
                return 1
    python = peers_venv / "bin" / "python"
    if not python.exists():
        print(f"creating the peers venv {peers_venv}", flush=True)
        if subprocess.run([sys.executable, "-m", "venv", str(peers_venv)]).returncode != 0:
            print("failed to create the venv (on Debian/Ubuntu: apt-get install python3-venv)")
            return 1
    print(f"installing {' '.join(PEER_PACKAGES)} into {peers_venv}", flush=True)
    cmd = [str(python), "-m", "pip", "install", "-q", "--upgrade", *PEER_PACKAGES]
    if subprocess.run(cmd).returncode != 0:
        print(f"failed: {shlex.join(cmd)}")
        return 1
    flag = "" if peers_venv == DEFAULT_PEERS_VENV else f" --peers-venv {shlex.quote(str(peers_venv))}"
    print(f"ready: python benchmarks/run.py{flag}")
    return 0


# ------------------------------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    epilog = ("servers: " + ", ".join(SERVERS) + "\nscenarios: "
              + "; ".join(f"{s.name} ({s.title})" for s in SCENARIOS.values())
              + f"\ndefault scenarios: {','.join(DEFAULT_SCENARIOS)}; --quick: {','.join(QUICK_SCENARIOS)}")
    ap = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=",".join(n for n in SERVERS if n not in OPT_IN),
                    help=f"comma-separated server names (default: all but {', '.join(OPT_IN)})")
    ap.add_argument("--scenarios", help="comma-separated scenario names (default: all but h2c)")
    ap.add_argument("--seconds", type=float, help="measured seconds per run (default 5; --quick 2)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds before each run (default 2; --quick 1)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds: every server is measured this many times, in turn, "
                                                            "and its median round is kept")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 2 s runs, fewer scenarios, output under the log dir unless --out")
    ap.add_argument("--out", type=Path, help="markdown table (default docs/benchmarks.md)")
    ap.add_argument("--chart", type=Path, help="PNG chart (default beside --out, benchmarks.png)")
    ap.add_argument("--json", type=Path, help="JSON dump of every result (default: in the log dir)")
    ap.add_argument("--baseline", help="comma-separated servers to take ratios from "
                                       "(default: the bascule servers run, else the first server)")
    ap.add_argument("--peers-venv", type=Path, default=Path(os.environ.get("PEERS_VENV", DEFAULT_PEERS_VENV)),
                    help=f"venv holding the peer servers (default {DEFAULT_PEERS_VENV}, env PEERS_VENV)")
    ap.add_argument("--bascule-python", default=sys.executable,
                    help="interpreter that runs `-m bascule` (default: this one)")
    ap.add_argument("--bascule-build", action="append", default=[], metavar="LABEL=PYTHON",
                    help="repeatable: another bascule install to measure in the same run, as servers "
                         "bascule-asgi@LABEL and bascule-wsgi@LABEL (e.g. before=/venvs/before/bin/python)")
    ap.add_argument("--bascule-args", default="", help="extra flags for bascule, e.g. '--wsgi-threads 8'")
    ap.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"server logs (default {LOG_DIR})")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="seconds to wait for a server's port")
    ap.add_argument("--quiet-wait", type=float,
                    help="before each run, wait up to this many seconds for other work on the machine to stop "
                         "(default 10; --quick 0)")
    ap.add_argument("--busy-retries", type=int,
                    help="measure a run again, up to this many times, when other work used more than "
                         f"{quiet.BUSY_PCT:g}%% of a CPU during it; the least disturbed attempt is kept "
                         "(default 1; --quick 0)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    ap.add_argument("--setup", action="store_true",
                    help="install wrk + h2load (apt-get) and the peers venv (pip), then exit")
    ap.add_argument("--dry-run", action="store_true", help="print the commands it would run, run nothing")
    args = ap.parse_args(argv)
    for spec in args.bascule_build:
        label, sep, python = spec.partition("=")
        if not (sep and label and python) or "@" in label or "," in label:
            ap.error(f"--bascule-build: expected LABEL=PYTHON, got {spec!r}")
        for base in [s for s in SERVERS.values() if s.is_ours() and not s.python]:
            name = f"{base.name}@{label}"  # registered like the built-in servers, so every lookup finds it
            SERVERS[name] = replace(base, name=name, argv=_bascule(base.interface, python), python=python)
    unknown = [s for s in args.servers.split(",") if s not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    default_scenarios = QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS
    args.scenario_names = args.scenarios.split(",") if args.scenarios else list(default_scenarios)
    unknown = [s for s in args.scenario_names if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 10.0
    if args.busy_retries is None:
        args.busy_retries = 0 if args.quick else 1
    if args.seconds < 1 or args.repeat < 1 or args.warmup < 0 or args.quiet_wait < 0 or args.busy_retries < 0:
        ap.error("--seconds must be >= 1, --repeat >= 1, --warmup, --quiet-wait and --busy-retries >= 0")
    if args.out is None:
        args.out = args.log_dir / "benchmarks-quick.md" if args.quick else REPO / "docs" / "benchmarks.md"
    if args.chart is None:
        args.chart = args.out.with_suffix(".png")
    if args.json is None:
        args.json = args.log_dir / f"{args.out.stem}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup:
        return setup(args.peers_venv)
    pin = procs.can_pin(args.no_pin)
    servers = [SERVERS[name] for name in args.servers.split(",")]
    scenarios = [SCENARIOS[name] for name in args.scenario_names]
    with tempfile.TemporaryDirectory(prefix="bascule-bench-") as scratch:
        plan = Plan(servers=servers, scenarios=scenarios, seconds=args.seconds, warmup=args.warmup,
                    repeat=args.repeat,
                    env=Env(args.peers_venv / "bin", args.bascule_python, tuple(shlex.split(args.bascule_args))),
                    tools=Tools(Path(scratch), procs.CLIENT_CPU if pin else None),
                    server_cpu=procs.SERVER_CPU if pin else None,
                    start_timeout=args.start_timeout, log_dir=args.log_dir,
                    quiet_wait=args.quiet_wait, busy_retries=args.busy_retries)
        if args.dry_run:
            for sc in scenarios:
                print(f"# scenario {sc.name}: {sc.title}")
                for server in servers:
                    skip = sc.tool == "h2load" and not server.h2c
                    print(f"  {server.name}:" + ("  skipped (no h2c)" if skip else ""))
                    if not skip:
                        print(f"    server (cwd {HERE}): {shlex.join(server_command(plan, server, 'PORT'))}")
                        print(f"    load: {shlex.join(plan.tools.command(sc, 'PORT', plan.seconds))}")
            print(f"# outputs: {args.out}, {args.json}, {args.chart}")
            return 0
        tools_missing = sorted({sc.tool for sc in scenarios if shutil.which(sc.tool) is None})
        if tools_missing:
            print(f"missing {', '.join(tools_missing)}: run `python benchmarks/run.py --setup`", file=sys.stderr)
            return 2
        procs.raise_nofile()
        if pin:
            procs.keep_off_server_cpu()
        args.log_dir.mkdir(parents=True, exist_ok=True)
        started = datetime.datetime.now(datetime.UTC)
        print(f"{len(servers)} servers x {len(scenarios)} scenarios, {args.seconds:g} s each "
              f"(+{args.warmup:g} s warm-up); logs in {args.log_dir}", flush=True)
        with procs.terminate_on_signals():
            results, every_round = run_all(plan, lambda r: print(progress_line(r), flush=True))
        ours = [s.name for s in servers if s.is_ours()]
        bases = args.baseline.split(",") if args.baseline else (ours or [servers[0].name])
        bases = [b for b in bases if b in {s.name for s in servers}]
        meta: dict[str, Any] = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", *argv]),
            "machine": machine_info(),
            "versions": versions(plan),
            "pinning": {"server_cpu": plan.server_cpu, "client_cpu": plan.tools.client_cpu},
            "seconds": plan.seconds, "warmup": plan.warmup, "repeat": plan.repeat,
            "scenarios": {sc.name: asdict(sc) for sc in scenarios},
        }
    m = meta["machine"]
    chart_note = draw_chart(plan, results, args.chart, f"{meta['date']}, {m['cpu']}, {m['nproc']} CPUs")
    if chart_note:
        print(chart_note, file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = kept_sections(args.out)
    args.out.write_text(markdown(plan, results, meta, None if chart_note else args.chart, args.out, bases) + "\n"
                        + (f"\n{kept}" if kept else ""))
    args.json.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results],
                                      "rounds": [asdict(r) for r in every_round]}, indent=1) + "\n")
    print(f"\nwrote {args.out}, {args.json}" + ("" if chart_note else f", {args.chart}"))
    for base in bases:
        print("\n" + "\n".join(ratio_table(results, base, scenarios, servers)))
    if warning := busy_warning(results):
        print(f"\nwarning: {warning}", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in results if SERVERS[r.server].is_ours()) else 0


if __name__ == "__main__":
    sys.exit(main())
