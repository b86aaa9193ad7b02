"""Instructions per request under callgrind: the hot path's cost in instructions, for builds side by side.

Why
---
Requests per second on a shared or virtual machine drift by 10-30% from one minute to the next, so a
change of a few per cent to the hot path cannot be seen in them (benchmarks/run.py reads ratios taken in
one run for that reason). The number of instructions the server executes per request does not depend on
what else the machine is doing: it is the figure a hot-path change is judged by (issue 13: HTTP/1.1 -> ASGI
and HTTP/2 -> ASGI must stay within +3% of before). Unlike the in-memory harness of docs/performance.md, this
counts a real server on real sockets: uvloop, the protocol, the gateway, the app and the write to the socket.

How
---
For every interpreter given (a venv's python with bascule installed *compiled*: ``pip install .``, not
editable; the report names the build it found), in turn, for ``--rounds`` rounds:

1. start one bascule process (one worker, access log off, benchmarks/apps.py's ASGI app, whose ``GET /``
   answers 13 bytes of text) under ``valgrind --tool=callgrind --instr-atstart=no``: it runs uninstrumented,
   only a few times slower than natively, until told otherwise;
2. warm it up from this process, outside valgrind: ``--warmup`` requests over HTTP/1.1 and as many over
   HTTP/2, so imports, caches and CPython's specialised bytecode are in place;
3. per protocol: ``callgrind_control -i on`` and ``-z``; ``--requests`` requests over one keep-alive
   connection, one at a time (HTTP/1.1: a raw socket opened beforehand; HTTP/2: ``h2load -n N -c 1 -m 1``,
   prior knowledge, so its one connection's set-up is counted too, spread over the N requests);
   ``callgrind_control --dump``; ``-i off``;
4. stop the server.

Everything the server process does in that window is counted (uvloop, the protocol, the gateway, the app,
the garbage collector), nothing outside it, with one exception: timer callbacks (uvloop's
``uv__run_timers``: the twice-a-second date line, timeouts that fire) run by the clock, not per request,
and a server under valgrind on a busy machine can take twice as long for the same N, so they are taken
out of the figure and shown in a column of their own (a few hundred Ir per request, more when the machine
was busy). The figure is (the dump's total Ir - timers) / N. ``PYTHONHASHSEED=0`` makes string hashing
the same in every run; ``PYTHONPATH`` and ``BASCULE_*`` variables are not passed on, so the installed build
runs with its defaults.
Rounds take turns over the interpreters and every round is shown. Rounds of one build in one run agree
to about 0.1%; separate runs of the same build can differ by up to ~0.4% (heap layout: pymalloc's pools,
sets keyed by object address), so compare builds measured in the same run, which is what passing them
all at once does. The ratio column is each build's mean over the first interpreter's.

Usage
-----
  python benchmarks/callgrind.py before=/venvs/before/bin/python now=/venvs/now/bin/python
  python benchmarks/callgrind.py --requests 5000 --rounds 3 --json out.json VENV/bin/python ...

An argument is ``LABEL=PYTHON`` or just ``PYTHON`` (labelled by its venv's directory name). Needs valgrind
(``apt-get install valgrind``) and, for HTTP/2, h2load (``apt-get install nghttp2-client``, or
``python benchmarks/run.py --setup``). Loopback only; each step has a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import procs  # benchmarks/procs.py: ports, stopping a server

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
PROTOCOLS = {"h1": "HTTP/1.1 -> ASGI", "h2": "HTTP/2 -> ASGI", "h1close": "HTTP/1.1 close -> ASGI",
             "h1echo": "HTTP/1.1 16 KiB echo -> ASGI"}
#: ``h1close`` opens a new connection for every request and asks ``Connection: close``: accept, the
#: connection's setup and teardown, and the close are counted with the request (issue 18). ``h1echo`` is
#: run.py's echo scenario one request at a time: POST /echo with 16 KiB, answered with the same bytes.
#: --app: benchmarks/apps.py's app of each interface (both answer GET / with the same 13 bytes). A WSGI
#: server's threads are all counted (callgrind runs every thread of the process, one at a time), so
#: ``--app wsgi`` shows the cost of the loop <-> thread-pool hand-over; ``--bascule-args="--wsgi-mode loop"``
#: counts the same app run on the loop thread.
APPS = {"asgi": ("apps:asgi_app", "asgi3"), "wsgi": ("apps:wsgi_app", "wsgi")}
EXPECTED_BODY = b"Hello, world!"  # benchmarks/apps.py's TEXT, what GET / answers
ECHO_BODY = b"a" * 16384  # run.py's echo scenario's body
MAX_REQUESTS = 100_000
MAX_ROUNDS = 10
MAX_BUILDS = 8
STOP_GRACE = 60.0  # seconds a server under valgrind has to stop on SIGTERM before it is killed
#: Where the HTTP/1.1 protocol module lives, newest layout first (protocols/http1.py until issue 13).
PROBE = """
import importlib
for name in ("bascule.protocols.h1.connection", "bascule.protocols.http1"):
    try:
        print(importlib.import_module(name).__file__)
        break
    except ImportError:
        pass
import bascule
print(getattr(bascule, "__version__", "?"))
"""


@dataclass(frozen=True)
class Build:
    """One interpreter to measure, under a short label."""

    label: str
    python: str


@dataclass
class Measure:
    """One protocol in one round of one build."""

    label: str
    protocol: str
    round: int
    requests: int
    instructions: int  # the dump's total
    timers: int  # of which in timer callbacks
    seconds: float  # how long the counted batch took, under valgrind

    @property
    def per_request(self) -> float:
        return (self.instructions - self.timers) / self.requests


@dataclass
class Report:
    """Everything measured, and what it was measured on."""

    builds: list[Build]
    kinds: dict[str, str] = field(default_factory=dict)  # label -> "compiled (...so)" / "pure Python (...py)"
    measures: list[Measure] = field(default_factory=list)


class BenchError(Exception):
    """A step failed; the message says which and why."""


# ------------------------------------------------------------------------------------------ the server


def parse_build(arg: str) -> Build:
    label, sep, python = arg.partition("=")
    if not sep:
        python = arg
        path = Path(arg)
        label = path.parent.parent.name if path.parent.name == "bin" else path.name
    if not re.fullmatch(r"[\w.-]+", label) or not python:
        raise argparse.ArgumentTypeError(f"expected LABEL=PYTHON (LABEL: letters, digits, . _ -), got {arg!r}")
    return Build(label, python)


def server_env() -> dict[str, str]:
    """This process's environment without what would change which bascule runs, or how."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "WEB_CONCURRENCY") and not k.startswith("BASCULE_")}
    env["PYTHONHASHSEED"] = "0"
    return env


def build_kind(python: str) -> str:
    """'compiled (...)' or 'pure Python (...)', from where the HTTP/1.1 protocol module was loaded."""
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60, env=server_env())
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"cannot run {python}: {exc}") from exc
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) < 2:
        raise BenchError(f"{python} cannot import bascule: {done.stderr.strip()[-300:]}")
    module = Path(lines[0])
    kind = "compiled" if module.suffix == ".so" else "pure Python"
    return f"{kind} ({module.name}, bascule {lines[1]})"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """procs.wait_port, failing with a BenchError that says why the server is not listening."""
    if procs.wait_port(port, proc, timeout):
        return
    if proc.poll() is not None:
        raise BenchError(f"the server exited with status {proc.returncode} before listening")
    raise BenchError(f"the server did not listen on port {port} within {timeout:g} s")


@contextlib.contextmanager
def server_under_callgrind(build: Build, port: int, out_base: Path, log_path: Path, extra: Sequence[str],
                           start_timeout: float, app_kind: str = "asgi") -> Iterator[int]:
    """Run bascule under callgrind with instrumentation off; yield its pid (valgrind's own: it execs nothing)."""
    app, interface = APPS[app_kind]
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-line=no",
           f"--callgrind-out-file={out_base}.%p",
           build.python, "-m", "bascule", app, "--app-dir", str(HERE), "--interface", interface,
           "--host", HOST, "--port", str(port), "--workers", "1", "--no-access-log", *extra]
    with open(log_path, "wb") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env(), start_new_session=True)
        try:
            wait_port(port, proc, start_timeout)
            yield proc.pid
        finally:
            procs.stop(proc, grace=STOP_GRACE)


def control(pid: int, *args: str) -> None:
    """One ``callgrind_control`` command to the server; it answers 'OK' once valgrind has done it."""
    cmd = ["callgrind_control", *args, str(pid)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{shlex.join(cmd)} did not answer within 60 s") from exc
    if done.returncode != 0 or "OK" not in done.stdout:
        raise BenchError(f"{shlex.join(cmd)} failed: {(done.stdout + done.stderr).strip()[-300:]}")


def read_dump(out_base: Path, pid: int, part: int, tag: str) -> tuple[int, int]:
    """(total Ir, Ir in timer callbacks) of dump number ``part`` (callgrind names it ``<out-file>.<part>``)."""
    path = Path(f"{out_base}.{pid}.{part}")
    text = path.read_text(errors="replace")
    if f"Trigger: dump {tag}" not in text:
        raise BenchError(f"{path} is not the dump {tag!r}")
    for key in ("summary", "totals"):
        if m := re.search(rf"^{key}: (\d+)", text, re.MULTILINE):
            return int(m.group(1)), inclusive_cost(text, "uv__run_timers")
    raise BenchError(f"no summary line in {path}")


def inclusive_cost(text: str, function: str) -> int:
    """Ir spent in ``function`` and what it called, from a callgrind dump (format: valgrind's docs,
    "Callgrind Format Specification"): its own cost lines plus the cost line after each of its ``calls=``.
    Names are compressed as ``(id) name`` on first use and ``(id)`` after; fn and cfn share the ids."""
    names: dict[str, str] = {}

    def name(spec: str) -> str:
        ref, _, rest = spec.partition(" ")
        if ref.startswith("(") and ref.endswith(")"):
            if rest:
                names[ref] = rest
            return names.get(ref, "")
        return spec

    inside = False
    total = 0
    for line in text.splitlines():
        if not line:
            continue
        if line[0].isdigit() or line[0] in "+-*":
            if inside:
                parts = line.split()
                total += int(parts[1]) if len(parts) > 1 else 0
        elif line.startswith("fn="):
            inside = name(line[3:]).split("'")[0] == function
        elif line.startswith("cfn="):
            name(line[4:])
    return total


# ------------------------------------------------------------------------------------------ the clients


class H1Client:
    """Sequential GET / (or POST /echo) over one keep-alive HTTP/1.1 connection, checking every answer."""

    REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    CLOSE_REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    ECHO_REQUEST = (f"POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Length: {len(ECHO_BODY)}\r\n\r\n").encode() + ECHO_BODY

    def __init__(self, port: int, timeout: float, *, new_connections: bool = False, echo: bool = False) -> None:
        self.port, self.timeout, self.new_connections = port, timeout, new_connections
        self.request, self.expected = (self.ECHO_REQUEST, ECHO_BODY) if echo else (self.REQUEST, EXPECTED_BODY)
        self.sock = self._connect()
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed the HTTP/1.1 connection")
        self.buf += chunk

    def get(self) -> None:
        self.sock.sendall(self.request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        status = head.split(b"\r\n", 1)[0]
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if not status.startswith(b"HTTP/1.1 200 ") or m is None:
            raise BenchError(f"unexpected HTTP/1.1 answer: {head[:200]!r}")
        length = int(m.group(1))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        if body != self.expected:
            raise BenchError(f"unexpected HTTP/1.1 body: {body[:100]!r}")

    def run(self, count: int) -> None:
        if not self.new_connections:
            for _ in range(count):
                self.get()
            return
        for _ in range(count):
            self.sock.close()
            self.sock, self.buf = self._connect(), b""
            self.sock.sendall(self.CLOSE_REQUEST)
            answer = b""
            while chunk := self.sock.recv(65536):  # the whole answer, then the server's close
                answer += chunk
            if not answer.startswith(b"HTTP/1.1 200 ") or not answer.endswith(EXPECTED_BODY):
                raise BenchError(f"unexpected HTTP/1.1 answer on a new connection: {answer[:200]!r}")


def h1_requests(port: int, count: int, timeout: float) -> None:
    client = H1Client(port, timeout)
    try:
        client.run(count)
    finally:
        client.close()


def h2_requests(port: int, count: int, timeout: float) -> None:
    """``count`` GET / over one HTTP/2 connection (prior knowledge), one stream at a time, all answered 200."""
    cmd = ["h2load", "-n", str(count), "-c", "1", "-m", "1", "-t", "1", f"http://{HOST}:{port}/"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{shlex.join(cmd)} did not finish within {timeout:g} s") from exc
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", done.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if m is None or codes is None or int(m.group(2)) != count or int(codes.group(1)) != count:
        raise BenchError(f"h2load: not {count} answers of 2xx: {done.stdout.strip()[-400:]} {done.stderr[-200:]}")


# ----------------------------------------------------------------------------------------- measuring


def measure_build(build: Build, round_no: int, args: argparse.Namespace, scratch: Path) -> list[Measure]:
    """One server under callgrind, warmed up, then each protocol counted in turn."""
    port = procs.free_port()
    out_base = scratch / f"callgrind.{build.label}.{round_no}"
    log_path = scratch / f"server.{build.label}.{round_no}.log"
    results: list[Measure] = []
    try:
        with server_under_callgrind(build, port, out_base, log_path, shlex.split(args.bascule_args),
                                    args.start_timeout, args.app) as pid:
            h1_requests(port, args.warmup, args.step_timeout)
            if "h2" in args.protocols:
                h2_requests(port, args.warmup, args.step_timeout)
            for part, protocol in enumerate(args.protocols, start=1):
                tag = f"{protocol}-{build.label}-{round_no}"
                client = (H1Client(port, args.step_timeout, new_connections=protocol == "h1close",
                                   echo=protocol == "h1echo") if protocol != "h2" else None)
                try:
                    control(pid, "-i", "on")
                    control(pid, "-z")
                    started = time.monotonic()
                    if client is not None:
                        client.run(args.requests)
                    else:
                        h2_requests(port, args.requests, args.step_timeout)
                    seconds = time.monotonic() - started
                    control(pid, f"--dump={tag}")
                    control(pid, "-i", "off")
                finally:
                    if client is not None:
                        client.close()
                total, timers = read_dump(out_base, pid, part, tag)
                measure = Measure(build.label, protocol, round_no, args.requests, total, timers, seconds)
                results.append(measure)
                print(f"  round {round_no} {build.label:>10} {path_name(protocol, args.app):<17} "
                      f"{measure.per_request:>10,.0f} Ir/request (+{timers / args.requests:,.0f} in timers, "
                      f"{seconds:.1f} s)", flush=True)
    except (BenchError, OSError) as exc:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:] if log_path.exists() else []
        raise BenchError(f"{build.label} round {round_no}: {exc}" + "".join(f"\n    | {t}" for t in tail)) from exc
    return results


def path_name(protocol: str, app: str) -> str:
    """'HTTP/1.1 -> WSGI' and the like: the protocol and the app's interface."""
    return PROTOCOLS[protocol].replace("ASGI", app.upper())


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def table(report: Report, protocols: Sequence[str], app: str = "asgi") -> list[str]:
    """Markdown: per protocol and build, every round, their mean, the spread, the ratio to the first build's
    mean, and (apart) the timers' Ir per request."""
    rounds = max((m.round for m in report.measures), default=0)
    lines = ["| path | build | " + " | ".join(f"round {r}" for r in range(1, rounds + 1))
             + " | mean | spread | / " + report.builds[0].label + " | timers |",
             "|---|---|" + "---:|" * (rounds + 4)]
    for protocol in protocols:
        base: float | None = None
        for build in report.builds:
            mine = sorted((m for m in report.measures if m.label == build.label and m.protocol == protocol),
                          key=lambda m: m.round)
            if not mine:
                continue
            values = [m.per_request for m in mine]
            avg = mean(values)
            base = avg if base is None else base
            spread = (max(values) - min(values)) / avg * 100
            cells = [f"{v:,.0f}" for v in values] + ["-"] * (rounds - len(values))
            timers = mean([m.timers / m.requests for m in mine])
            lines.append(f"| {path_name(protocol, app)} | {build.label} | " + " | ".join(cells)
                         + f" | {avg:,.0f} | {spread:.2f}% | {avg / base:.4f} | {timers:,.0f} |")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python benchmarks/callgrind.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", type=parse_build, metavar="[LABEL=]PYTHON",
                    help="interpreters with bascule installed (compiled); the first is the baseline")
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per protocol (default 2000)")
    ap.add_argument("--warmup", type=int, default=500, help="requests per protocol before counting (default 500)")
    ap.add_argument("--rounds", type=int, default=2, help="times every build is measured, in turn (default 2)")
    ap.add_argument("--protocols", default="h1,h2", help="comma-separated: h1, h2, h1close, h1echo (default h1,h2)")
    ap.add_argument("--app", choices=sorted(APPS), default="asgi", help="the app's interface (default asgi)")
    ap.add_argument("--bascule-args", default="", help="extra flags for bascule")
    ap.add_argument("--start-timeout", type=float, default=120.0, help="seconds for a server to listen")
    ap.add_argument("--step-timeout", type=float, default=600.0, help="seconds for one batch of requests")
    ap.add_argument("--json", type=Path, help="write every measure here as JSON")
    ap.add_argument("--keep", type=Path, help="keep the callgrind dumps and server logs in this directory")
    args = ap.parse_args(argv)
    args.protocols = [p for p in args.protocols.split(",") if p]
    if not args.protocols or any(p not in PROTOCOLS for p in args.protocols):
        ap.error(f"--protocols: choose from {', '.join(PROTOCOLS)}")
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.rounds <= MAX_ROUNDS or args.warmup < 1:
        ap.error(f"--requests 1..{MAX_REQUESTS}, --rounds 1..{MAX_ROUNDS}, --warmup >= 1")
    if len(args.builds) > MAX_BUILDS:
        ap.error(f"at most {MAX_BUILDS} interpreters")
    labels = [b.label for b in args.builds]
    if len(set(labels)) != len(labels):
        ap.error(f"labels must differ: {', '.join(labels)} (use LABEL=PYTHON)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needed = ["valgrind", "callgrind_control"] + (["h2load"] if "h2" in args.protocols else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install valgrind nghttp2-client", file=sys.stderr)
        return 2
    report = Report(builds=list(args.builds))
    try:
        for build in report.builds:
            report.kinds[build.label] = build_kind(build.python)
            print(f"{build.label}: {build.python}: {report.kinds[build.label]}", flush=True)
            if not report.kinds[build.label].startswith("compiled"):
                print(f"warning: {build.label} is not the compiled build (pip install ., not -e)", file=sys.stderr)
        print(f"{args.rounds} rounds x {len(report.builds)} builds; {args.requests} requests counted per protocol "
              f"after {args.warmup} to warm up", flush=True)
        with contextlib.ExitStack() as stack:
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                scratch = args.keep
            else:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bascule-callgrind-")))
            for round_no in range(1, args.rounds + 1):
                for build in report.builds:
                    report.measures.extend(measure_build(build, round_no, args, scratch))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print("\n".join(f"- {b.label}: `{b.python}`, {report.kinds[b.label]}" for b in report.builds))
    print()
    print("\n".join(table(report, args.protocols, args.app)))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "builds": [asdict(b) | {"kind": report.kinds[b.label]} for b in report.builds],
            "requests": args.requests, "warmup": args.warmup,
            "measures": [asdict(m) | {"per_request": m.per_request} for m in report.measures],
            "per_request": "(instructions - timers) / requests",
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
