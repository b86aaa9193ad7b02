"""Behind nginx: wrk -> nginx -> {uwsgi_pass, proxy_pass, fastcgi_pass, scgi_pass} -> server -> WSGI app.

Issue 14's performance acceptance, measured side by side in one run. The classic Python deployment puts
nginx in front of the gateway server; what a user feels is the whole chain, so that is what is timed:
wrk on one core, and nginx plus the gateway on the other (they share it, as they share a small VM), the
same nginx process and settings for every variant, the same app (benchmarks/apps.py's ``wsgi_app``), one
gateway process. The variants:

- ``uwsgi``: uWSGI itself (PyPI ``pyuwsgi``), ``--socket``, behind ``uwsgi_pass``. One process, no threads,
  no master (see UWSGI_ARGS for why).
- ``bascule-uwsgi``, ``bascule-uwsgi-loop``: bascule ``--bind uwsgi://`` behind ``uwsgi_pass``, with
  ``--wsgi-mode threads`` (the default) and ``loop``.
- ``bascule-http``, ``bascule-http-loop``: bascule's HTTP listener behind ``proxy_pass`` to an upstream
  with ``keepalive 32``, ``proxy_http_version 1.1`` and an empty ``Connection`` header (nginx then reuses
  its upstream connections), plus the X-Forwarded-* headers of docs/deployment.md.
- ``bascule-http-unix``, ``bascule-http-unix-loop``: bascule's HTTP listener on ``--bind unix:PATH`` (one
  socket per variant in the run's temporary directory; a stale file is removed before each start), behind
  ``proxy_pass`` to ``upstream { server unix:PATH; }`` with ``bascule-http``'s proxy settings and headers but
  no ``keepalive`` in the upstream: nginx closes each upstream connection after its response, so every
  request opens a new one. That is the case these variants exist to measure (a Unix-socket deployment
  without upstream keep-alive, as many are configured); against ``bascule-http`` they differ in both the
  socket type and the connection per request.
- ``bascule-fastcgi[-loop]`` (``fastcgi_pass``, ``fastcgi_keep_conn on``, upstream keepalive),
  ``bascule-scgi[-loop]`` (``scgi_pass``) and ``bascule-http-unix[-loop]``: not run unless named
  (``--variants`` or ``--all``); a bascule that refuses the ``--bind`` form is reported as skipped, not
  failed.

What the issue asks: bascule over uwsgi at least 2x uWSGI's req/s, and at least 0.9x bascule over
proxy_pass with upstream keepalive. Both ratios are printed (and written with ``--out``) for each wsgi mode,
from each variant's median round.

Method, as in benchmarks/run.py: nginx and the gateway are pinned to CPU 0, wrk and this runner to CPU 1.
For each scenario and round, every variant takes its turn (rounds interleave, so a burst of other work lands
on one round of one variant, not on all of its runs): its gateway is started fresh, one GET / and one
16 KiB POST /echo through nginx must answer 200 with the right body, wrk warms it up, then loads it for
``--seconds``. wrk's non-2xx answers and socket errors are counted as errors. The CPU that nginx and the
gateway each used during the timed run is read from /proc, per request: where the shared core's time goes.

  python benchmarks/nginx_chain.py --rounds 3 --out /tmp/nginx-chain.json
  python benchmarks/nginx_chain.py --all --seconds 3 --rounds 1          # with FastCGI, SCGI, Unix sockets
  python benchmarks/nginx_chain.py --variants bascule-http,bascule-http-unix  # kept TCP vs Unix, one per request
  python benchmarks/nginx_chain.py --bascule-build cg=/venv/bin/python --variants uwsgi,bascule-uwsgi@cg

bascule runs with ``--bascule-python`` (default: this interpreter), so measure what users install: a
compiled (mypyc) build, ``pip install .`` in a venv, not an editable install. uWSGI is the ``uwsgi`` script
of PyPI ``pyuwsgi`` (``--uwsgi``; default: beside --bascule-python, beside this interpreter, then PATH).
nginx is Debian's (``--nginx``), started with its own configuration in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import common  # benchmarks/common.py: the rounds, medians, ratios and tables the round-based scripts share
import loadtools  # benchmarks/loadtools.py: running wrk, its POST script, its parser
import procs  # benchmarks/procs.py: starting, pinning, measuring and stopping the servers
import quiet  # benchmarks/quiet.py: other work on the machine, and measuring around it
import report  # benchmarks/report.py: the figures' formats
import run  # benchmarks/run.py: the apps module, the check request
import suite  # benchmarks/suite.py: run.py's echo body size

HERE = procs.HERE
LOG_DIR = Path(tempfile.gettempdir()) / "bascule-nginx-chain"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PARAMS = {"uwsgi": "/etc/nginx/uwsgi_params", "fastcgi": "/etc/nginx/fastcgi_params", "scgi": "/etc/nginx/scgi_params"}
#: uWSGI at its fastest for this app on one core: one process, one thread (threads only add GIL handoffs for
#: an app that never waits), no master (it serves nothing; a master with one worker measured the same),
#: SIGTERM stops it (uWSGI 2.0 reloads on SIGTERM otherwise). --listen above nginx's 64 connections.
UWSGI_ARGS = "--processes 1 --disable-logging --die-on-term --listen 1024"
ECHO_SIZE = suite.ECHO_SIZE
TARGETS = {"uwsgi": 2.0, "http": 0.9}  # bascule-uwsgi / uwsgi, bascule-uwsgi / bascule-http


# ------------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One upstream behind nginx: which server, over which nginx module, in which WSGI mode."""

    name: str
    kind: str  # how nginx talks to it: "uwsgi", "http", "fastcgi", "scgi"
    server: str  # "bascule" or "uwsgi"
    mode: str = ""  # bascule's --wsgi-mode
    python: str = ""  # a --bascule-build's interpreter ('' for --bascule-python's)
    build: str = ""  # that build's label
    optional: bool = False  # a refused --bind form is "skipped", not "failed"
    unix: bool = False  # nginx reaches it over a Unix socket (a path in the run's directory), not a loopback port


def base_variants() -> list[Variant]:
    out = [Variant("uwsgi", "uwsgi", "uwsgi")]
    for kind in ("uwsgi", "http", "http-unix", "fastcgi", "scgi"):
        for mode in ("threads", "loop"):
            name = f"bascule-{kind}" + ("-loop" if mode == "loop" else "")
            unix = kind.endswith("-unix")
            out.append(Variant(name, kind.removesuffix("-unix"), "bascule", mode,
                               optional=unix or kind in ("fastcgi", "scgi"), unix=unix))
    return out


DEFAULT_VARIANTS = ("uwsgi", "bascule-uwsgi", "bascule-uwsgi-loop", "bascule-http", "bascule-http-loop")


def with_builds(variants: list[Variant], builds: dict[str, str]) -> dict[str, Variant]:
    """Every variant, plus ``NAME@LABEL`` for each bascule one and each --bascule-build LABEL=PYTHON."""
    out = {v.name: v for v in variants}
    for label, python in builds.items():
        for v in variants:
            if v.server == "bascule":
                name = f"{v.name}@{label}"
                out[name] = dataclasses.replace(v, name=name, python=python, build=label)
    return out


#: The longest path a Unix socket can bind on Linux (sun_path's 108 bytes, less the terminating NUL).
UNIX_PATH_MAX = 107


def socket_path(root: Path, variant: Variant) -> Path:
    """Where ``variant``'s gateway binds its Unix socket: one file per variant in the run's directory ``root``,
    named after it (a build's label is the user's, so anything but letters, digits, '.', '-', '@' and '_'
    becomes '_').

    A path too long for a socket is refused here, before anything starts: bascule would exit with 2 and a
    "bind" message, which refused_bind() takes for a build without Unix sockets, a skip rather than an error.
    """
    path = root / (re.sub(r"[^A-Za-z0-9.@_-]", "_", variant.name) + ".sock")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(f"{path}: longer than the {UNIX_PATH_MAX} bytes of a Unix socket's path "
                         "(a shorter TMPDIR, or a shorter --bascule-build label)")
    return path


def bind_form(variant: Variant) -> str:
    """The start of ``variant``'s --bind value, for the note of a bascule that refuses it."""
    return ("" if variant.kind == "http" else f"{variant.kind}://") + ("unix:" if variant.unix else "")


# ------------------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    method: str = "GET"
    body_size: int = 0


SCENARIOS = {s.name: s for s in (Scenario("text", "/"), Scenario("echo", "/echo", "POST", ECHO_SIZE))}


# -------------------------------------------------------------------------------------------- nginx


def nginx_conf(root: Path, routes: Sequence[tuple[int, Variant, int | Path]], keepalive: int = 32,
               connections: int = 4096) -> str:
    """The one nginx configuration for the whole run: a server block per variant.

    ``routes`` is (nginx's port, variant, the upstream's port or Unix socket path). Every setting that is
    not the upstream module is the same for all variants: one process, no access log, client keep-alive
    connections that last the whole run (keepalive_requests), 16 KiB bodies buffered in memory
    (client_body_buffer_size), responses buffered (the default, ``*_buffering on``). Upstream keepalive is
    given where the protocol allows it (HTTP/1.1 and FastCGI): ``keepalive`` idle connections kept per worker
    (with more requests in flight than that, nginx closes the extra connections after their response); uwsgi
    and SCGI connections carry one request each. The ``-unix`` HTTP variants have no keepalive on purpose:
    nginx closes each upstream connection after its response, so every request pays a connect() and accept()
    on the socket, which is what they measure.
    """
    temps = "\n".join(f"    {kind}_temp_path {root}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    blocks: list[str] = []
    for listen, variant, upstream in routes:
        up = f"up_{listen}"
        if variant.kind == "http":
            pool = "" if variant.unix else f"keepalive {keepalive};\n        keepalive_requests 1000000;"
            passing = (f"proxy_pass http://{up};\n"
                       "            proxy_http_version 1.1;\n"
                       '            proxy_set_header Connection "";\n'
                       "            proxy_set_header Host $host;\n"
                       "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                       "            proxy_set_header X-Forwarded-Proto $scheme;")
        elif variant.kind == "fastcgi":
            pool = f"keepalive {keepalive};\n        keepalive_requests 1000000;"
            passing = f"include {PARAMS['fastcgi']};\n            fastcgi_keep_conn on;\n            fastcgi_pass {up};"
        elif variant.kind in ("uwsgi", "scgi"):
            pool = ""
            passing = f"include {PARAMS[variant.kind]};\n            {variant.kind}_pass {up};"
        else:
            raise ValueError(f"unknown upstream kind {variant.kind!r}")
        pool = f"\n        {pool}" if pool else ""
        server = f"unix:{upstream}" if isinstance(upstream, Path) else f"127.0.0.1:{upstream}"
        blocks.append(f"""    upstream {up} {{  # {variant.name}
        server {server};{pool}
    }}
    server {{
        listen 127.0.0.1:{listen} backlog=4096;
        location / {{
            {passing}
        }}
    }}""")
    body = "\n".join(blocks)
    return f"""daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    client_body_temp_path {root}/body;
{temps}
{body}
}}
"""


@contextlib.contextmanager
def nginx(root: Path, conf: str, cpu: str | None, ports: Sequence[int]) -> Iterator[int]:
    """Start nginx with ``conf`` (pinned to ``cpu``); yields its pid once every port listens."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nginx.conf").write_text(conf)
    argv = [*procs.pin(cpu), NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")]
    proc = procs.spawn(argv, root / "stdout.log")  # -p: nginx finds its files from the prefix, whatever its cwd
    try:
        for port in ports:
            if not procs.wait_port(port, proc, 10):
                raise RuntimeError(f"nginx did not start: {procs.log_tail(root / 'error.log')}")
        yield proc.pid
    finally:
        procs.stop(proc)


# ------------------------------------------------------------------------------------------ upstreams


def upstream_argv(variant: Variant, upstream: int | Path, bascule_python: str, uwsgi: str, uwsgi_args: str,
                  bascule_args: Sequence[str] = ()) -> list[str]:
    """The gateway's command line, serving benchmarks/apps.py's wsgi_app on 127.0.0.1:``upstream`` (a port)
    or on the Unix socket at ``upstream`` (a path)."""
    address = f"unix:{upstream}" if isinstance(upstream, Path) else f"127.0.0.1:{upstream}"
    if variant.server == "uwsgi":  # uWSGI's --socket reads a path (no colon) as a Unix socket
        return [uwsgi, "--socket", str(upstream) if isinstance(upstream, Path) else address, "--module",
                "apps:wsgi_app", "--chdir", str(HERE), *shlex.split(uwsgi_args)]
    bind = address if variant.kind == "http" else f"{variant.kind}://{address}"
    return [variant.python or bascule_python, "-m", "bascule", "apps:wsgi_app", "--app-dir", str(HERE),
            "--interface", "wsgi", "--bind", bind, "--workers", "1", "--wsgi-mode", variant.mode,
            "--no-access-log", *bascule_args]


def find_uwsgi(bascule_python: str) -> str:
    for where in (Path(bascule_python).parent, Path(sys.executable).parent):
        if (where / "uwsgi").exists():
            return str(where / "uwsgi")
    return shutil.which("uwsgi") or "uwsgi"


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Round:
    """One variant in one scenario, one round."""

    variant: str
    scenario: str
    round: int
    status: str = "ok"  # "ok", "failed", "skipped"
    note: str = ""
    rps: float = 0.0
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    gateway_us: float | None = None  # the gateway's CPU per request (its process tree), microseconds
    nginx_us: float | None = None  # nginx's CPU per request
    others_cpu_pct: float | None = None  # CPU used by other work on the machine, % of one CPU
    attempts: int = 1  # measured again when other work disturbed it (--busy-retries)


def check(port: int, apps: Any) -> str:
    """GET / and a 16 KiB POST /echo through nginx: both 200 with the right body. '' means fine."""
    for method, path, body, want in (("GET", "/", None, apps.TEXT),
                                     ("POST", "/echo", b"a" * ECHO_SIZE, b"a" * ECHO_SIZE)):
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        answer = run.request(port, method, path, body, headers)
        if isinstance(answer, str):
            return f"{method} {path}: {answer}"
        status, got = answer
        if status != 200:
            return f"{method} {path} answered {status}: {got[:120]!r}"
        if got != want:
            return f"{method} {path} got {len(got)} body bytes, expected {len(want)}"
    return ""


def wrk_argv(scratch: Path, sc: Scenario, port: int, seconds: float, connections: int, cpu: str | None) -> list[str]:
    extra: list[str] = []
    if sc.method == "POST":
        extra += ["-s", str(loadtools.post_script(scratch, sc.body_size))]
    return [*procs.pin(cpu), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "--latency", *extra, f"http://127.0.0.1:{port}{sc.path}"]


def wrk(argv: list[str], seconds: float) -> loadtools.Load:
    done = loadtools.run_tool(argv, "wrk", seconds)
    return done if isinstance(done, loadtools.Load) else loadtools.parse_wrk(done.stdout + done.stderr)


@dataclass
class Plan(common.RoundsPlan[Variant, Scenario]):
    uwsgi: str
    uwsgi_args: str
    scratch: Path
    busy_retries: int = 0
    #: variant -> (nginx's port, the upstream's port, or its Unix socket's path for a ``unix`` variant)
    routes: dict[str, tuple[int, int | Path]] = field(default_factory=dict)


def refused_bind(code: int | None, log: Path) -> bool:
    """Did bascule exit because it does not know this --bind form (an older build, a listener not written)?

    A configuration error exits with 2 and names the option; a build without FastCGI reads
    ``fastcgi://127.0.0.1`` as a host and says "bind 'fastcgi://...': write an IPv6 address in brackets".
    """
    try:
        text = log.read_text(errors="replace").lower()
    except OSError:
        return False
    return code == 2 and "bind" in text


def measure(plan: Plan, variant: Variant, sc: Scenario, round_no: int, nginx_pid: int, apps: Any) -> Round:
    """Start ``variant``'s gateway, check the chain, warm it up, load it once, stop it."""
    result = Round(variant.name, sc.name, round_no + 1)
    listen, upstream = plan.routes[variant.name]
    log_path = plan.log_dir / f"{variant.name}-{sc.name}-{round_no + 1}.log"
    argv = [*procs.pin(plan.server_cpu), *upstream_argv(variant, upstream, plan.bascule_python, plan.uwsgi,
                                                  plan.uwsgi_args, plan.bascule_args)]
    if isinstance(upstream, Path):
        # The last round's socket file (or a killed run's): bascule replaces a stale one itself, but a build
        # that does not would fail to bind over it (EADDRINUSE), a failure that is not the one measured.
        upstream.unlink(missing_ok=True)
    proc = procs.spawn(argv, log_path, dict(os.environ, WEB_CONCURRENCY="1"))
    try:
        if why := procs.not_started(upstream, proc, plan.start_timeout):
            if variant.optional and refused_bind(proc.poll(), log_path):
                result.status, result.note = "skipped", f"this bascule refuses --bind {bind_form(variant)}"
            else:
                result.status, result.note = "failed", f"did not start ({why}): {procs.log_tail(log_path)}"
            return result
        if problem := check(listen, apps):
            result.status, result.note = "failed", f"check: {problem}; log {log_path}"
            return result
        if plan.warmup > 0:
            wrk(wrk_argv(plan.scratch, sc, listen, plan.warmup, plan.connections, plan.client_cpu), plan.warmup)
        audit = quiet.CpuAudit(proc.pid)
        before = procs.cpu_seconds([proc.pid]), procs.cpu_seconds([nginx_pid])
        load = wrk(wrk_argv(plan.scratch, sc, listen, plan.seconds, plan.connections, plan.client_cpu), plan.seconds)
        after = procs.cpu_seconds([proc.pid]), procs.cpu_seconds([nginx_pid])
        others = audit.others_pct()
        if others is not None:  # CpuAudit counts nginx as other work: take its share out
            others = max(0.0, round(others - 100 * (after[1] - before[1]) / plan.seconds, 1))
        result.others_cpu_pct = others
        if load.failure:
            result.status, result.note = "failed", f"{load.failure}; log {log_path}"
            return result
        loadtools.take_load(result, load)
        if load.requests:
            result.gateway_us = round(1e6 * (after[0] - before[0]) / load.requests, 1)
            result.nginx_us = round(1e6 * (after[1] - before[1]) / load.requests, 1)
        if proc.poll() is not None:
            result.status, result.note = "failed", f"the gateway exited with {proc.returncode} under load"
    finally:
        procs.stop(proc)
    return result


def measure_calmly(plan: Plan, variant: Variant, sc: Scenario, round_no: int, nginx_pid: int, apps: Any) -> Round:
    """measure() on a quiet machine if one comes within --quiet-wait, again if other work disturbed it
    anyway (up to --busy-retries times); the least disturbed attempt is kept."""
    best, attempts = quiet.calmly(lambda: measure(plan, variant, sc, round_no, nginx_pid, apps),
                                  plan.quiet_wait, plan.busy_retries)
    best.attempts = attempts
    return best


# ------------------------------------------------------------------------------------------- results


def acceptance(best: dict[tuple[str, str], Round], variants: Sequence[Variant],
               scenarios: Sequence[Scenario]) -> list[common.Ratio]:
    """bascule-uwsgi[-loop][@build] / uwsgi (>= 2) and / bascule-http in the same mode and build (>= 0.9)."""
    names = {v.name for v in variants}
    out: list[common.Ratio] = []
    for sc in scenarios:
        for v in variants:
            if v.server != "bascule" or v.kind != "uwsgi":
                continue
            http = v.name.replace("bascule-uwsgi", "bascule-http", 1)
            for theirs, target in (("uwsgi", TARGETS["uwsgi"]), (http, TARGETS["http"])):
                if theirs not in names:
                    continue
                out.append(common.ratio(best, sc.name, v.name, theirs, target))
    return out


def markdown(plan: Plan, rounds: Sequence[Round], ratios: Sequence[common.Ratio]) -> str:
    """The tables for docs/benchmarks.md: req/s per round and the median, then the issue's ratios."""
    lines = []
    for sc in plan.scenarios:
        title = "GET / (13 B)" if sc.method == "GET" else f"POST {sc.path} ({sc.body_size // 1024} KiB echoed)"
        lines += common.rounds_table(
            f"{title}, {plan.connections} connections", "variant", [],
            ["gateway CPU µs/req", "nginx CPU µs/req"], plan.rounds, [v.name for v in plan.variants], sc.name,
            rounds, lambda b: ([], [common.fmt_us(b.gateway_us), common.fmt_us(b.nginx_us)]))
    lines += common.ratio_table(ratios, "| scenario | ratio | measured | target |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python benchmarks/nginx_chain.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", help=f"comma-separated (default {','.join(DEFAULT_VARIANTS)}; "
                                       f"all: {','.join(v.name for v in base_variants())})")
    ap.add_argument("--all", action="store_true", help="every variant, FastCGI, SCGI and Unix sockets too")
    ap.add_argument("--scenarios", default="text,echo", help=f"comma-separated from {','.join(SCENARIOS)}")
    ap.add_argument("--rounds", type=int, default=3, help="every variant this many times, taking turns")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each timed run")
    ap.add_argument("--connections", type=int, default=64, help="wrk's connections to nginx")
    ap.add_argument("--keepalive", type=int, default=32,
                    help="idle upstream connections nginx keeps for proxy_pass and fastcgi_pass (default 32, "
                         "the issue's; below --connections nginx still opens and closes some per request; "
                         "none for the -unix variants)")
    ap.add_argument("--nginx-cpu", choices=("server", "client", "free"), default="server",
                    help="pin nginx beside the gateway (default), beside wrk, or not at all")
    ap.add_argument("--bascule-python", default=sys.executable, help="interpreter that runs `-m bascule`")
    ap.add_argument("--bascule-build", action="append", default=[], metavar="LABEL=PYTHON",
                    help="repeatable: another bascule install, as variants NAME@LABEL")
    ap.add_argument("--bascule-args", default="", help="extra flags for every bascule variant")
    ap.add_argument("--uwsgi", help="pyuwsgi's uwsgi script (default: beside --bascule-python, here, PATH)")
    ap.add_argument("--uwsgi-args", default=UWSGI_ARGS, help=f"uWSGI's flags beside --socket/--module "
                                                             f"(default {UWSGI_ARGS!r})")
    ap.add_argument("--nginx", default=NGINX, help=f"nginx binary (default {NGINX})")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before each run, wait up to this many seconds for other work on the machine to stop")
    ap.add_argument("--busy-retries", type=int, default=1,
                    help=f"measure a run again, up to this many times, when other work used more than "
                         f"{quiet.BUSY_PCT:g}%% of a CPU during it; the least disturbed attempt is kept")
    ap.add_argument("--no-pin", action="store_true", help="do not pin nginx+gateway and wrk to CPUs")
    ap.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"gateway and nginx logs (default {LOG_DIR})")
    ap.add_argument("--out", type=Path, help="JSON result (every round, the medians, the ratios)")
    ap.add_argument("--dry-run", action="store_true", help="print the nginx config and commands, run nothing")
    args = ap.parse_args(argv)
    builds = common.parse_builds(ap, args.bascule_build)
    known = with_builds(base_variants(), builds)
    if args.all:
        names = list(known)
    elif args.variants:
        names = args.variants.split(",")
    else:
        names = list(DEFAULT_VARIANTS) + [f"{n}@{label}" for label in builds for n in DEFAULT_VARIANTS
                                          if n.startswith("bascule")]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    args.variant_list = [known[n] for n in names]
    args.scenario_list = common.pick_scenarios(ap, args.scenarios, SCENARIOS)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1 or args.keepalive < 1:
        ap.error("--rounds, --seconds, --connections and --keepalive must be >= 1")
    if args.warmup < 0 or args.quiet_wait < 0 or args.busy_retries < 0:
        ap.error("--warmup, --quiet-wait and --busy-retries must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global NGINX
    args = parse_args(argv)
    NGINX = args.nginx
    pinned = procs.can_pin(args.no_pin)
    uwsgi = args.uwsgi or find_uwsgi(args.bascule_python)
    with tempfile.TemporaryDirectory(prefix="bascule-nginx-chain-") as scratch:
        plan = Plan(variants=args.variant_list, scenarios=args.scenario_list, rounds=args.rounds,
                    seconds=args.seconds, warmup=args.warmup, connections=args.connections,
                    bascule_python=args.bascule_python, bascule_args=tuple(shlex.split(args.bascule_args)),
                    uwsgi=uwsgi, uwsgi_args=args.uwsgi_args, server_cpu=procs.SERVER_CPU if pinned else None,
                    client_cpu=procs.CLIENT_CPU if pinned else None, log_dir=args.log_dir, scratch=Path(scratch),
                    quiet_wait=args.quiet_wait, busy_retries=args.busy_retries)
        try:
            for v in plan.variants:
                plan.routes[v.name] = (procs.free_port(),
                                       socket_path(Path(scratch), v) if v.unix else procs.free_port())
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        conf = nginx_conf(Path(scratch) / "nginx", [(plan.routes[v.name][0], v, plan.routes[v.name][1])
                                                    for v in plan.variants], args.keepalive)
        nginx_cpu = {"server": plan.server_cpu, "client": plan.client_cpu, "free": None}[args.nginx_cpu]
        if args.dry_run:
            print(conf)
            for v in plan.variants:
                listen, upstream = plan.routes[v.name]
                print(f"# {v.name} (nginx :{listen}): "
                      + shlex.join(upstream_argv(v, upstream, plan.bascule_python, uwsgi, plan.uwsgi_args,
                                                 plan.bascule_args)))
            return 0
        for tool in ("wrk", NGINX):
            if shutil.which(tool) is None:
                print(f"missing {tool} (apt-get install wrk nginx)", file=sys.stderr)
                return 2
        procs.raise_nofile()
        if pinned:
            procs.keep_off_server_cpu()
        args.log_dir.mkdir(parents=True, exist_ok=True)
        apps = run.load_apps()
        started = datetime.datetime.now(datetime.UTC)
        print(f"{len(plan.variants)} variants x {len(plan.scenarios)} scenarios x {plan.rounds} rounds, "
              f"{plan.seconds:g} s each (+{plan.warmup:g} s warm-up); logs in {args.log_dir}", flush=True)
        with procs.terminate_on_signals(), nginx(Path(scratch) / "nginx", conf, nginx_cpu,
                                               [plan.routes[v.name][0] for v in plan.variants]) as nginx_pid:
            every = common.run_rounds(
                plan.scenarios, plan.rounds, plan.variants,
                lambda v, sc, round_no: measure_calmly(plan, v, sc, round_no, nginx_pid, apps), progress)
            with contextlib.suppress(OSError):
                shutil.copy(Path(scratch) / "nginx" / "nginx.conf", args.log_dir / "nginx.conf")
    best = common.medians(every)
    ratios = acceptance(best, plan.variants, plan.scenarios)
    table = markdown(plan, every, ratios)
    print("\n" + table)
    pythons = {v.python or plan.bascule_python: f" @{v.build}" if v.build else ""
               for v in plan.variants if v.server == "bascule"}
    found = common.bascule_versions(pythons, ["bascule", "uvloop", "httptools"])
    if any(v.server == "uwsgi" for v in plan.variants):
        found["uwsgi"] = uwsgi_version(uwsgi)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["nginx"] = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
    if args.out is not None:
        meta = {**common.meta_head(started, "benchmarks/nginx_chain.py", argv, found), "uwsgi_args": plan.uwsgi_args,
                "pinning": {"gateway_cpu": plan.server_cpu, "nginx_cpu": nginx_cpu, "wrk_cpu": plan.client_cpu},
                "keepalive": args.keepalive,
                "seconds": plan.seconds, "warmup": plan.warmup, "rounds": plan.rounds,
                "connections": plan.connections, "nginx_conf": conf}
        common.write_json(args.out, meta, every, best, ratios)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    failed = [r for r in best.values() if r.status == "failed"]
    return 1 if failed else 0


def uwsgi_version(uwsgi: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([uwsgi, "--version"], capture_output=True, text=True, timeout=30)
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "unknown"
    return "unknown"


def progress(r: Round) -> str:
    if r.status != "ok":
        return f"{r.scenario:>5} round {r.round}  {r.variant:<24} {r.status.upper()}: {r.note}"
    errors = f"{r.errors} ({r.error_detail})" if r.errors else "0"
    return (f"{r.scenario:>5} round {r.round}  {r.variant:<24} {r.rps:>9,.0f} req/s  p50 {report.fmt_ms(r.p50_ms):>9}  "
            f"p99 {report.fmt_ms(r.p99_ms):>9}  errors {errors}  gateway {common.fmt_us(r.gateway_us)} µs/req  "
            f"nginx {common.fmt_us(r.nginx_us)} µs/req  others {report.fmt_pct(r.others_cpu_pct)}"
            + (f" (best of {r.attempts})" if r.attempts > 1 else ""))


if __name__ == "__main__":
    sys.exit(main())
