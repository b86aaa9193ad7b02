"""bascule's benchmark suite: bascule and its peers on identical apps, side by side, in one run.

Method
------
Every server serves the same app (benchmarks/apps.py: one ASGI and one WSGI callable answering the same
routes with the same bytes), one worker process each, at its defaults apart from the flags listed in
suite.py's SERVERS. For each scenario, each server is started fresh, checked with one real request, warmed up,
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
import datetime
import http.client
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import common  # benchmarks/common.py: what the round-based scripts share (the runs' order, the median, --bascule-build)
import loadtools  # benchmarks/loadtools.py: wrk and h2load, their command lines and their output
import machine  # benchmarks/machine.py: the machine's facts
import procs  # benchmarks/procs.py: starting, pinning, measuring and stopping the servers
import quiet  # benchmarks/quiet.py: other work on the machine, and measuring around it
import report  # benchmarks/report.py: docs/benchmarks.md, the chart, the progress lines, the versions
import suite  # benchmarks/suite.py: the servers, the scenarios, a result, the plan
from loadtools import Scenario
from suite import Plan, Result, Server

REPO = procs.HERE.parent
DEFAULT_PEERS_VENV = Path(tempfile.gettempdir()) / "bascule-peers"
LOG_DIR = Path(tempfile.gettempdir()) / "bascule-bench"

#: What --setup installs into the peers venv (one source of truth for the peers' versions we report).
PEER_PACKAGES = ("uvicorn[standard]", "uvloop", "httptools", "granian", "hypercorn", "gunicorn", "waitress")
#: Load tools and the Debian packages that ship them.
APT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client", "taskset": "util-linux"}


# ------------------------------------------------------------------------------------------- the check


def load_apps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bascule_bench_apps", procs.HERE / "apps.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {procs.HERE / 'apps.py'}")
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
            loadtools.take_load(result, load)
            result.runs_rps = [load.rps]
        if proc.poll() is not None:
            result.note = (result.note + "; " if result.note else "") + f"server exited with {proc.returncode}"
    finally:
        procs.stop(proc)
    return result


def measure_calmly(plan: Plan, server: Server, sc: Scenario, apps: ModuleType, round_no: int) -> Result:
    """measure(), on a quiet machine if one comes within --quiet-wait, again if other work disturbed it."""
    def disturbed(result: Result) -> None:
        print(f"  disturbed ({report.fmt_pct(result.others_cpu_pct)} of a CPU went to other work): measuring "
              f"{server.name} {sc.name} again", flush=True)
    return quiet.calmly(lambda: measure(plan, server, sc, apps, round_no), plan.quiet_wait, plan.busy_retries,
                        disturbed)[0]


def merge(rounds: list[Result]) -> Result:
    """Several rounds of one cell → the round with the median req/s (common.median_round: its own figures),
    every ok round's req/s kept, and the peak RSS of all ok rounds."""
    best = common.median_round(rounds)
    if best is None:
        return rounds[0]
    ok = sorted((r for r in rounds if r.status == "ok"), key=lambda r: r.rps)
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
    for sc in plan.scenarios:  # a scenario's rounds in common.interleaved's order, then its results
        rounds: dict[str, list[Result]] = {s.name: [] for s in plan.servers}
        for _, round_no, server in common.interleaved([sc], plan.repeat, plan.servers):
            if server.name in missing:
                one = Result(server.name, sc.name, status="failed", note=missing[server.name])
            else:
                one = measure_calmly(plan, server, sc, apps, round_no)
            rounds[server.name].append(one)
            if plan.repeat > 1:
                print(f"  round {round_no + 1}/{plan.repeat}: {report.progress_line(one)}", flush=True)
        for server in plan.servers:
            result = merge(rounds[server.name])
            results.append(result)
            every_round.extend(rounds[server.name])
            on_result(result)
    return results, every_round


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
    epilog = ("servers: " + ", ".join(suite.SERVERS) + "\nscenarios: "
              + "; ".join(f"{s.name} ({s.title})" for s in suite.SCENARIOS.values())
              + f"\ndefault scenarios: {','.join(suite.DEFAULT_SCENARIOS)}; --quick: {','.join(suite.QUICK_SCENARIOS)}")
    ap = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=",".join(n for n in suite.SERVERS if n not in suite.OPT_IN),
                    help=f"comma-separated server names (default: all but {', '.join(suite.OPT_IN)})")
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
    for label, python in common.parse_builds(ap, args.bascule_build).items():
        suite.add_build(label, python)
    unknown = [s for s in args.servers.split(",") if s not in suite.SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(suite.SERVERS)}")
    default_scenarios = suite.QUICK_SCENARIOS if args.quick else suite.DEFAULT_SCENARIOS
    args.scenario_names = args.scenarios.split(",") if args.scenarios else list(default_scenarios)
    unknown = [s for s in args.scenario_names if s not in suite.SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(suite.SCENARIOS)}")
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
    servers = [suite.SERVERS[name] for name in args.servers.split(",")]
    scenarios = [suite.SCENARIOS[name] for name in args.scenario_names]
    with tempfile.TemporaryDirectory(prefix="bascule-bench-") as scratch:
        plan = Plan(servers=servers, scenarios=scenarios, seconds=args.seconds, warmup=args.warmup,
                    repeat=args.repeat,
                    env=suite.Env(args.peers_venv / "bin", args.bascule_python, tuple(shlex.split(args.bascule_args))),
                    tools=loadtools.Tools(Path(scratch), procs.CLIENT_CPU if pin else None),
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
                        print(f"    server (cwd {procs.HERE}): {shlex.join(server_command(plan, server, 'PORT'))}")
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
            results, every_round = run_all(plan, lambda r: print(report.progress_line(r), flush=True))
        ours = [s.name for s in servers if s.is_ours()]
        bases = args.baseline.split(",") if args.baseline else (ours or [servers[0].name])
        bases = [b for b in bases if b in {s.name for s in servers}]
        meta: dict[str, Any] = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", *argv]),
            "machine": machine.machine_info(),
            "versions": report.versions(plan),
            "pinning": {"server_cpu": plan.server_cpu, "client_cpu": plan.tools.client_cpu},
            "seconds": plan.seconds, "warmup": plan.warmup, "repeat": plan.repeat,
            "scenarios": {sc.name: asdict(sc) for sc in scenarios},
        }
    m = meta["machine"]
    chart_note = report.draw_chart(plan, results, args.chart, f"{meta['date']}, {m['cpu']}, {m['nproc']} CPUs")
    if chart_note:
        print(chart_note, file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.document(plan, results, meta, None if chart_note else args.chart, args.out, bases))
    args.json.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results],
                                      "rounds": [asdict(r) for r in every_round]}, indent=1) + "\n")
    print(f"\nwrote {args.out}, {args.json}" + ("" if chart_note else f", {args.chart}"))
    for base in bases:
        print("\n" + "\n".join(report.ratio_table(results, base, scenarios, servers)))
    if warning := report.busy_warning(results):
        print(f"\nwarning: {warning}", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in results if suite.SERVERS[r.server].is_ours()) else 0


if __name__ == "__main__":
    sys.exit(main())
