"""Static files: wrk -> {nginx, granian, whitenoise on gunicorn, bascule --static} -> a 4 KiB or a 1 MiB file.

Issue 15's performance acceptance, measured side by side in one run. Every server serves the same two files
from the same directory under ``/s/``, one process each, keep-alive, 64 connections:

- ``nginx``: Debian's nginx with its own configuration in a temporary directory: one process, no access log,
  ``sendfile on``, ``tcp_nopush on``, ``location /s/ { alias DIR/; }`` (the classic stack's third job).
- ``granian``: ``--static-path-route /s --static-path-mount DIR`` beside a trivial ASGI app
  (benchmarks/apps.py's ``asgi_app``), one worker.
- ``whitenoise``: WhiteNoise(``wsgi_app``, root=DIR, prefix="s") on gunicorn ``gthread`` (one worker,
  8 threads, as in benchmarks/run.py), Django's usual answer.
- ``bascule``: ``--static /s=DIR`` beside ``asgi_app``, one worker; ``bascule@LABEL`` for each
  ``--bascule-build LABEL=PYTHON``.

What the issue asks: on the 4 KiB file bascule at least 2x granian's req/s; on the 1 MiB file at least 0.9x
nginx's (loopback bound). Both ratios are printed (and written with ``--out``) for each bascule variant, from
each variant's median round.

Method, as in benchmarks/run.py and benchmarks/nginx_chain.py: the server is pinned to CPU 0, wrk and this
runner to CPU 1. For each scenario and round every variant takes its turn (rounds interleave): it is started
fresh, one GET of the file must answer 200 with the file's exact bytes, wrk warms it up, then loads it for
``--seconds``. wrk's non-2xx answers and socket errors count as errors; MB/s is wrk's Transfer/sec.

  python benchmarks/static.py --rounds 3 --out /tmp/static.json
  python benchmarks/static.py --bascule-build cg=/venv/bin/python --variants nginx,granian,bascule@cg

bascule runs with ``--bascule-python`` (default: this interpreter): measure a compiled (mypyc) build,
``pip install .`` in a venv. granian, gunicorn and whitenoise come from ``--peers-bin`` (default
/tmp/bascule-peers/bin, the venv benchmarks/run.py sets up; ``pip install whitenoise`` there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common  # benchmarks/common.py: the rounds, medians, ratios and tables
import loadtools  # benchmarks/loadtools.py: running wrk, its parser
import machine  # benchmarks/machine.py: the versions of what ran
import nginx_chain  # benchmarks/nginx_chain.py: the nginx binary
import procs  # benchmarks/procs.py: starting, pinning, measuring and stopping the servers
import quiet  # benchmarks/quiet.py: other work on the machine, and measuring around it
import report  # benchmarks/report.py: the figures' formats
import run  # benchmarks/run.py: the check request

HERE = procs.HERE
LOG_DIR = Path(tempfile.gettempdir()) / "bascule-static-bench"
PEERS_BIN = Path("/tmp/bascule-peers/bin")
PREFIX = "/s"
TARGETS = {"4k": ("granian", 2.0), "1m": ("nginx", 0.9)}  # scenario -> (peer, bascule / peer at least)

#: WhiteNoise around the benchmark WSGI app; written to the scratch directory and imported by gunicorn.
WHITENOISE_APP = '''import os, sys
sys.path.insert(0, os.environ["BENCH_APPS_DIR"])
from whitenoise import WhiteNoise
import apps
application = WhiteNoise(apps.wsgi_app, root=os.environ["BENCH_STATIC_DIR"], prefix="s")
'''


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str
    size: int

    @property
    def path(self) -> str:
        return f"{PREFIX}/{self.file}"


SCENARIOS = {s.name: s for s in (Scenario("4k", "4k.bin", 4096), Scenario("1m", "1m.bin", 1 << 20))}


@dataclass(frozen=True)
class Variant:
    name: str
    server: str  # "nginx", "granian", "whitenoise", "bascule"
    python: str = ""  # a --bascule-build's interpreter ('' for --bascule-python's)


BASE_VARIANTS = ("nginx", "granian", "whitenoise", "bascule")


def variants_for(builds: dict[str, str]) -> dict[str, Variant]:
    """Every variant, plus ``bascule@LABEL`` for each --bascule-build LABEL=PYTHON."""
    out = {name: Variant(name, name) for name in BASE_VARIANTS}
    for label, python in builds.items():
        out[f"bascule@{label}"] = Variant(f"bascule@{label}", "bascule", python)
    return out


def file_bytes(sc: Scenario) -> bytes:
    """The file's content: not all one byte, so a server that sends the wrong range or file is caught."""
    pattern = bytes(range(256))
    return (pattern * (sc.size // 256 + 1))[:sc.size]


# ------------------------------------------------------------------------------------------- servers


def nginx_conf(root: Path, port: int, static_dir: Path) -> str:
    """nginx serving ``static_dir`` at /s/: one process, no access log, sendfile, keep-alive for the run."""
    return f"""daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location {PREFIX}/ {{
            alias {static_dir}/;
        }}
    }}
}}
"""


def server_argv(variant: Variant, port: int, static_dir: Path, scratch: Path, bascule_python: str,
                peers_bin: Path, bascule_args: Sequence[str] = ()) -> list[str]:
    """The command line that serves ``static_dir`` at /s/ on 127.0.0.1:``port``."""
    if variant.server == "nginx":
        root = scratch / f"nginx-{port}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "nginx.conf").write_text(nginx_conf(root, port, static_dir))
        return [nginx_chain.NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")]
    if variant.server == "granian":
        return [str(peers_bin / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--no-access-log", "--static-path-route", PREFIX,
                "--static-path-mount", str(static_dir), "--working-dir", str(HERE), "apps:asgi_app"]
    if variant.server == "whitenoise":
        (scratch / "wn_app.py").write_text(WHITENOISE_APP)
        return [str(peers_bin / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread",
                "--threads", "8", "--chdir", str(scratch), "wn_app:application"]
    return [variant.python or bascule_python, "-m", "bascule", "apps:asgi_app", "--app-dir", str(HERE),
            "--interface", "asgi3", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--no-access-log", "--static", f"{PREFIX}={static_dir}", *bascule_args]


# ------------------------------------------------------------------------------------------ measuring


_UNITS = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024 ** 2 / 1e6, "GB": 1024 ** 3 / 1e6}


def parse_transfer(out: str) -> float | None:
    """wrk's ``Transfer/sec: 9.87MB`` as decimal MB/s (wrk's units are binary: 1 MB there is 2**20 bytes)."""
    m = re.search(r"Transfer/sec:\s+([\d.]+)\s*([KMG]?B)\b", out)
    return round(float(m.group(1)) * _UNITS[m.group(2)], 1) if m else None


@dataclass
class Round:
    variant: str
    scenario: str
    round: int
    status: str = "ok"  # "ok", "failed"
    note: str = ""
    rps: float = 0.0
    mbps: float | None = None  # decimal MB/s of responses, headers included (wrk's Transfer/sec)
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    server_us: float | None = None  # the server's CPU per request (its process tree), microseconds
    others_cpu_pct: float | None = None


def check(port: int, sc: Scenario, want: bytes) -> str:
    """One GET of the file: 200 and exactly its bytes. '' means fine."""
    answer = run.request(port, "GET", sc.path)
    if isinstance(answer, str):
        return f"GET {sc.path}: {answer}"
    status, got = answer
    if status != 200:
        return f"GET {sc.path} answered {status}: {got[:120]!r}"
    if got != want:
        return f"GET {sc.path} got {len(got)} body bytes, expected {len(want)}" + (
            " (same length, other bytes)" if len(got) == len(want) else "")
    return ""


@dataclass
class Plan(common.RoundsPlan[Variant, Scenario]):
    peers_bin: Path
    scratch: Path
    static_dir: Path
    contents: dict[str, bytes] = field(default_factory=dict)


def wrk_argv(plan: Plan, sc: Scenario, port: int, seconds: float) -> list[str]:
    return [*procs.pin(plan.client_cpu), "wrk", "-t1", f"-c{plan.connections}",
            f"-d{max(1, round(seconds))}s", "--timeout", "5s", "--latency", f"http://127.0.0.1:{port}{sc.path}"]


def wrk(argv: list[str], seconds: float) -> tuple[loadtools.Load, float | None]:
    done = loadtools.run_tool(argv, "wrk", seconds)
    if isinstance(done, loadtools.Load):
        return done, None
    return loadtools.parse_wrk(done.stdout + done.stderr), parse_transfer(done.stdout)


def measure(plan: Plan, variant: Variant, sc: Scenario, round_no: int) -> Round:
    """Start ``variant``, check the file, warm it up, load it once, stop it."""
    result = Round(variant.name, sc.name, round_no + 1)
    port = procs.free_port()
    log_path = plan.log_dir / f"{variant.name}-{sc.name}-{round_no + 1}.log"
    argv = [*procs.pin(plan.server_cpu), *server_argv(
        variant, port, plan.static_dir, plan.scratch, plan.bascule_python, plan.peers_bin, plan.bascule_args)]
    env = dict(os.environ, WEB_CONCURRENCY="1", BENCH_APPS_DIR=str(HERE), BENCH_STATIC_DIR=str(plan.static_dir))
    proc = procs.spawn(argv, log_path, env)
    try:
        if why := procs.not_started(port, proc, plan.start_timeout):
            result.status, result.note = "failed", f"did not start ({why}): {procs.log_tail(log_path)}"
            return result
        if problem := check(port, sc, plan.contents[sc.name]):
            result.status, result.note = "failed", f"check: {problem}; log {log_path}"
            return result
        if plan.warmup > 0:
            wrk(wrk_argv(plan, sc, port, plan.warmup), plan.warmup)
        audit = quiet.CpuAudit(proc.pid)
        before = procs.cpu_seconds([proc.pid])
        load, mbps = wrk(wrk_argv(plan, sc, port, plan.seconds), plan.seconds)
        used = procs.cpu_seconds([proc.pid]) - before
        result.others_cpu_pct = audit.others_pct()
        if load.failure:
            result.status, result.note = "failed", f"{load.failure}; log {log_path}"
            return result
        loadtools.take_load(result, load)
        result.mbps = mbps
        if load.requests:
            result.server_us = round(1e6 * used / load.requests, 1)
        if proc.poll() is not None:
            result.status, result.note = "failed", f"the server exited with {proc.returncode} under load"
    finally:
        procs.stop(proc)
    return result


# ------------------------------------------------------------------------------------------- results


def acceptance(best: dict[tuple[str, str], Round], variants: Sequence[Variant],
               scenarios: Sequence[Scenario]) -> list[common.Ratio]:
    """Each bascule variant over granian on 4 KiB (>= 2) and over nginx on 1 MiB (>= 0.9)."""
    names = {v.name for v in variants}
    out: list[common.Ratio] = []
    for sc in scenarios:
        if sc.name not in TARGETS:
            continue
        theirs, target = TARGETS[sc.name]
        if theirs not in names:
            continue
        for v in variants:
            if v.server != "bascule":
                continue
            out.append(common.ratio(best, sc.name, v.name, theirs, target))
    return out


def markdown(variants: Sequence[Variant], scenarios: Sequence[Scenario], rounds: Sequence[Round],
             n_rounds: int, connections: int, ratios: Sequence[common.Ratio]) -> str:
    """The tables for docs/benchmarks.md: req/s per round and the median's MB/s, then the issue's ratios."""
    lines: list[str] = []
    for sc in scenarios:
        size = f"{sc.size // 1024} KiB" if sc.size < 1 << 20 else f"{sc.size >> 20} MiB"
        lines += common.rounds_table(
            f"GET {sc.path} ({size}), {connections} keep-alive connections", "server", ["MB/s"],
            ["server CPU µs/req"], n_rounds, [v.name for v in variants], sc.name, rounds,
            lambda b: (["-" if b.mbps is None else f"{b.mbps:,.0f}"], [common.fmt_us(b.server_us)]))
    lines += common.ratio_table(ratios, "| file | ratio (req/s) | measured | target |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python benchmarks/static.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", help=f"comma-separated (default {','.join(BASE_VARIANTS)} and bascule@LABEL "
                                       "for each --bascule-build)")
    ap.add_argument("--scenarios", default="4k,1m", help=f"comma-separated from {','.join(SCENARIOS)}")
    ap.add_argument("--rounds", type=int, default=3, help="every variant this many times, taking turns")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each timed run")
    ap.add_argument("--connections", type=int, default=64, help="wrk's keep-alive connections")
    ap.add_argument("--bascule-python", default=sys.executable, help="interpreter that runs `-m bascule`")
    ap.add_argument("--bascule-build", action="append", default=[], metavar="LABEL=PYTHON",
                    help="repeatable: another bascule install, as variant bascule@LABEL")
    ap.add_argument("--bascule-args", default="", help="extra flags for every bascule variant")
    ap.add_argument("--peers-bin", type=Path, default=PEERS_BIN,
                    help=f"bin dir with granian and gunicorn, whitenoise importable (default {PEERS_BIN})")
    ap.add_argument("--nginx", default=nginx_chain.NGINX, help=f"nginx binary (default {nginx_chain.NGINX})")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before each run, wait up to this many seconds for other work on the machine to stop")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server and wrk to CPUs")
    ap.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"server logs (default {LOG_DIR})")
    ap.add_argument("--out", type=Path, help="JSON result (every round, the medians, the ratios)")
    args = ap.parse_args(argv)
    known = variants_for(common.parse_builds(ap, args.bascule_build))
    names = args.variants.split(",") if args.variants else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    args.variant_list = [known[n] for n in names]
    args.scenario_list = common.pick_scenarios(ap, args.scenarios, SCENARIOS)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1:
        ap.error("--rounds, --seconds and --connections must be >= 1")
    if args.warmup < 0 or args.quiet_wait < 0:
        ap.error("--warmup and --quiet-wait must be >= 0")
    return args


def progress(r: Round) -> str:
    if r.status != "ok":
        return f"{r.scenario:>3} round {r.round}  {r.variant:<16} {r.status.upper()}: {r.note}"
    errors = f"{r.errors} ({r.error_detail})" if r.errors else "0"
    mbps = "-" if r.mbps is None else f"{r.mbps:,.0f}"
    return (f"{r.scenario:>3} round {r.round}  {r.variant:<16} {r.rps:>9,.0f} req/s  {mbps:>6} MB/s  "
            f"p50 {report.fmt_ms(r.p50_ms):>9}  p99 {report.fmt_ms(r.p99_ms):>9}  errors {errors}  "
            f"server {common.fmt_us(r.server_us)} µs/req  others {report.fmt_pct(r.others_cpu_pct)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nginx_chain.NGINX = args.nginx
    for tool in ("wrk", args.nginx):
        if shutil.which(tool) is None:
            print(f"missing {tool} (apt-get install wrk nginx)", file=sys.stderr)
            return 2
    pinned = procs.can_pin(args.no_pin)
    procs.raise_nofile()
    if pinned:
        procs.keep_off_server_cpu()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    with tempfile.TemporaryDirectory(prefix="bascule-static-bench-") as scratch:
        static_dir = Path(scratch) / "files"
        static_dir.mkdir()
        plan = Plan(variants=args.variant_list, scenarios=args.scenario_list, rounds=args.rounds,
                    seconds=args.seconds, warmup=args.warmup, connections=args.connections,
                    bascule_python=args.bascule_python, bascule_args=tuple(shlex.split(args.bascule_args)),
                    peers_bin=args.peers_bin, server_cpu=procs.SERVER_CPU if pinned else None,
                    client_cpu=procs.CLIENT_CPU if pinned else None, log_dir=args.log_dir, scratch=Path(scratch),
                    static_dir=static_dir, quiet_wait=args.quiet_wait)
        for sc in plan.scenarios:
            plan.contents[sc.name] = file_bytes(sc)
            (static_dir / sc.file).write_bytes(plan.contents[sc.name])
        print(f"{len(plan.variants)} variants x {len(plan.scenarios)} files x {plan.rounds} rounds, "
              f"{plan.seconds:g} s each (+{plan.warmup:g} s warm-up); logs in {args.log_dir}", flush=True)
        with procs.terminate_on_signals():
            every = common.run_rounds(
                plan.scenarios, plan.rounds, plan.variants,
                lambda v, sc, round_no: quiet.calmly(lambda: measure(plan, v, sc, round_no), plan.quiet_wait, 0)[0],
                progress)
    best = common.medians(every)
    ratios = acceptance(best, plan.variants, plan.scenarios)
    print("\n" + markdown(plan.variants, plan.scenarios, every, plan.rounds, plan.connections, ratios))
    found = common.bascule_versions(common.bascule_pythons(plan.variants, plan.bascule_python),
                                    ["bascule", "uvloop", "httptools"])
    found.update(machine.dist_versions(str(plan.peers_bin / "python"), ["granian", "gunicorn", "whitenoise"]))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["nginx"] = subprocess.run([args.nginx, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
    if args.out is not None:
        meta = {**common.meta_head(started, "benchmarks/static.py", argv, found),
                "pinning": {"server_cpu": plan.server_cpu, "wrk_cpu": plan.client_cpu},
                "seconds": plan.seconds, "warmup": plan.warmup, "rounds": plan.rounds,
                "connections": plan.connections}
        common.write_json(args.out, meta, every, best, ratios)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    return 1 if any(r.status == "failed" for r in best.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
