"""HTTP/3: bascule ``--http3`` and hypercorn ``--quic-bind`` side by side, with bare aioquic as the floor.

Issue 17's performance acceptance: HTTP/3 req/s for ``GET /`` (13 B) and ``GET /big`` (64 KiB), bascule at
least 3x hypercorn's on the same core, and a note of where aioquic itself bounds it. Every variant serves
benchmarks/apps.py's ``asgi_app`` (same routes, same bytes as benchmarks/run.py), one process each:

- ``hypercorn``: hypercorn ``--quic-bind`` on the TLS port, one worker, ``-k uvloop`` (as in run.py).
- ``bascule``: bascule ``--http3`` with ``--ssl-certfile/--ssl-keyfile`` (UDP on the TLS port), one worker;
  ``bascule-wsgi`` serves ``wsgi_app`` the same way (not run unless named).
- ``aioquic``: this script's ``--floor`` server: aioquic's own asyncio protocol and H3Connection on uvloop,
  answering each request from inside aioquic's event callback with the route's bytes, no ASGI, no app,
  no limits, flushing after every datagram as aioquic's asyncio protocol does. ``aioquic-batched`` (run
  when named) flushes once per event-loop turn instead, so the datagrams read in one turn share one
  ``datagrams_to_send``: what a server gains by batching its flushes. bascule / aioquic is the share of the
  ceiling bascule reaches; a ceiling below 3x hypercorn means the issue's target cannot be met on aioquic.

The load generator
------------------
Debian's h2load is built without QUIC, so the client is libcurl with ngtcp2/nghttp3 as bundled by
curl_cffi, driven here through its raw multi interface rather than its ``AsyncSession``: a plain
``curl_multi_perform``/``curl_multi_poll`` loop over ``--connections x --streams`` easy handles that are
re-added as each transfer completes (a closed-loop load, like wrk's). Bodies go to /dev/null through
libcurl's own ``fwrite`` (no Python call per chunk); per transfer the loop only reads the status, size,
HTTP version and total time. Each connection gets its own host name (``cN.bench``, resolved to 127.0.0.1
with ``CURLOPT_RESOLVE``; one connection per host, ``CURLOPT_PIPEWAIT``), so the streams are spread over
exactly ``--connections`` QUIC connections. Certificates are not verified (a throwaway trustme
certificate). Measured on hypercorn (64 concurrent requests): this loop costs the client about half the
CPU per request of ``AsyncSession`` with 64 tasks, and reaches several times its req/s.

The client measures its own CPU time (``process_time``) over the timed part and reports it per request
and as a share of its core ("client busy"): when that nears 100% the client, not the server, is the bound
(the runner warns above 80%). "datagrams/req" is every UDP datagram the machine sent during the timed
part (both ways: /proc/net/snmp) over the requests: how well a server packs its answers and ACKs;
"drops" are datagrams lost on a full socket receive buffer (RcvbufErrors) meanwhile, and in brackets those
lost at the server's socket (/proc/net/udp; the rest were the client's).

Method, as in benchmarks/run.py and benchmarks/static.py: the server is pinned to CPU 0, the client and
this runner to CPU 1. For each scenario and round every variant takes its turn (rounds interleave): it is
started fresh, one HTTP/3 GET must answer 200 over h3 with the route's exact bytes, then the client warms
it up for ``--warmup`` seconds and loads it for ``--seconds`` on the same connections. Errors are transfers
that failed, answered non-200, came back with another size or over another HTTP version. The server's
CPU per request comes from /proc; others' CPU (work on the machine that is none of ours) is reported per
run, as in run.py.

``--profile DIR`` also samples the bascule and hypercorn servers with py-spy (``pip install py-spy``)
during the timed run and splits their samples by the innermost frame from a known package: aioquic
(QUIC packets, TLS records, H3 framing), the server's own code, the app, or the rest (event loop, stdlib).

  python benchmarks/h3.py --rounds 3 --markdown /tmp/h3.md --out /tmp/h3.json
  python benchmarks/h3.py --variants hypercorn,aioquic --scenarios small --rounds 1 --seconds 3
  python benchmarks/h3.py --variants bascule --profile /tmp/h3-profile --rounds 1
  python benchmarks/h3.py --bascule-build cg=/venv/bin/python --variants hypercorn,bascule@cg,aioquic
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import common  # benchmarks/common.py: the rounds, medians, ratios and tables
import machine  # benchmarks/machine.py: the versions of what ran
import procs  # benchmarks/procs.py: starting, pinning, measuring and stopping the servers
import quiet  # benchmarks/quiet.py: other work on the machine, and measuring around it
import report  # benchmarks/report.py: the figures' formats
import run  # benchmarks/run.py: the apps module

HERE = procs.HERE
LOG_DIR = Path(tempfile.gettempdir()) / "bascule-h3-bench"
TARGET = ("hypercorn", 3.0)  # bascule / hypercorn at least this
CURL_HTTP_3 = 30  # CURLINFO_HTTP_VERSION's value for HTTP/3
TRANSFER_TIMEOUT_MS = 10_000
DRAIN_SECONDS = 10.0  # after the timed part, how long the client waits for the transfers still in flight


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    title: str


SCENARIOS = {s.name: s for s in (Scenario("small", "/", "GET / (13 B)"),
                                 Scenario("big", "/big", "GET /big (64 KiB)"))}


@dataclass(frozen=True)
class Variant:
    name: str
    server: str  # "hypercorn", "bascule", "aioquic"
    interface: str = "asgi"
    python: str = ""  # a --bascule-build's interpreter ('' for --bascule-python's)


VARIANTS = {v.name: v for v in (Variant("hypercorn", "hypercorn"), Variant("bascule", "bascule"),
                                Variant("bascule-wsgi", "bascule", "wsgi"), Variant("aioquic", "aioquic"),
                                Variant("aioquic-batched", "aioquic"))}
DEFAULT_VARIANTS = ("hypercorn", "bascule", "aioquic")


def variants_for(builds: dict[str, str]) -> dict[str, Variant]:
    """Every variant, plus ``bascule@LABEL`` for each --bascule-build LABEL=PYTHON."""
    out = dict(VARIANTS)
    for label, python in builds.items():
        out[f"bascule@{label}"] = Variant(f"bascule@{label}", "bascule", python=python)
    return out


def expected_body(path: str) -> bytes:
    apps = run.load_apps()
    return bytes(apps.BIG) if path == "/big" else bytes(apps.TEXT)


# ------------------------------------------------------------------------------------------- the client


def load(port: int, path: str, connections: int, streams: int, warmup: float, seconds: float,
         size: int) -> dict[str, Any]:
    """The closed-loop HTTP/3 load (runs in the client process). Prints ``go`` to stdout when the timed part
    starts, so the runner can read the server's CPU at that moment; returns the figures of the timed part."""
    import gc
    from array import array

    import cffi  # type: ignore[import-untyped]
    from curl_cffi._wrapper import ffi, lib  # type: ignore[import-not-found]
    from curl_cffi.const import CurlHttpVersion, CurlInfo, CurlMOpt, CurlOpt
    from curl_cffi.curl import Curl

    gc.disable()  # nothing here makes cycles; a collection would land in the timed loop
    libc_ffi = cffi.FFI()
    libc_ffi.cdef("void *fopen(const char *, const char *);")
    libc: Any = libc_ffi.dlopen(None)
    devnull = libc.fopen(b"/dev/null", b"wb")
    sink = ffi.cast("void *", int(libc_ffi.cast("uintptr_t", devnull)))  # libcurl's default fwrite writes here

    multi = lib.curl_multi_init()
    lib.curl_multi_setopt(multi, CurlMOpt.MAX_HOST_CONNECTIONS, ffi.new("long *", 1))
    lib.curl_multi_setopt(multi, CurlMOpt.MAX_CONCURRENT_STREAMS, ffi.new("long *", streams))
    handles = []
    for i in range(connections * streams):
        host = f"c{i % connections}.bench"
        easy = Curl()
        easy.setopt(CurlOpt.URL, f"https://{host}:{port}{path}".encode())
        easy.setopt(CurlOpt.RESOLVE, [f"{host}:{port}:127.0.0.1".encode()])
        easy.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V3ONLY)
        easy.setopt(CurlOpt.SSL_VERIFYPEER, 0)
        easy.setopt(CurlOpt.SSL_VERIFYHOST, 0)
        easy.setopt(CurlOpt.NOSIGNAL, 1)
        easy.setopt(CurlOpt.PIPEWAIT, 1)
        easy.setopt(CurlOpt.TIMEOUT_MS, TRANSFER_TIMEOUT_MS)
        lib._curl_easy_setopt(easy._curl, CurlOpt.WRITEDATA, sink)
        handles.append(easy)  # keeps the Curl objects (and their C handles) alive
        lib.curl_multi_add_handle(multi, easy._curl)

    running, queued = ffi.new("int *"), ffi.new("int *")
    code, got, version, total_us = ffi.new("long *"), ffi.new("int64_t *"), ffi.new("long *"), ffi.new("int64_t *")
    conn_id = ffi.new("int64_t *")
    timed = False
    ok = errors = 0
    kinds: dict[str, int] = {}
    latencies = array("q")
    conns: set[int] = set()
    start = time.monotonic()
    warm_end = start + warmup
    end = warm_end + seconds
    cpu0 = cpu1 = 0.0
    while True:
        lib.curl_multi_perform(multi, running)
        now = time.monotonic()
        if not timed and now >= warm_end:
            timed = True
            sys.stdout.write("go\n")
            sys.stdout.flush()
            cpu0 = time.process_time()
        while (msg := lib.curl_multi_info_read(multi, queued)) != ffi.NULL:
            easy_c = msg.easy_handle
            result = msg.data.result
            if timed and now < end:
                lib.curl_easy_getinfo(easy_c, CurlInfo.RESPONSE_CODE, code)
                lib.curl_easy_getinfo(easy_c, CurlInfo.SIZE_DOWNLOAD_T, got)
                lib.curl_easy_getinfo(easy_c, CurlInfo.HTTP_VERSION, version)
                if result == 0 and code[0] == 200 and got[0] == size and version[0] == CURL_HTTP_3:
                    ok += 1
                    lib.curl_easy_getinfo(easy_c, CurlInfo.TOTAL_TIME_T, total_us)
                    latencies.append(total_us[0])
                    lib.curl_easy_getinfo(easy_c, CurlInfo.CONN_ID, conn_id)
                    conns.add(conn_id[0])
                else:
                    errors += 1
                    kind = (f"curl error {result}" if result else f"status {code[0]}" if code[0] != 200
                            else f"HTTP version {version[0]}" if version[0] != CURL_HTTP_3 else "wrong size")
                    kinds[kind] = kinds.get(kind, 0) + 1
            lib.curl_multi_remove_handle(multi, easy_c)
            if now < end:
                lib.curl_multi_add_handle(multi, easy_c)
        if now >= end:
            if not cpu1:
                cpu1 = time.process_time()
            if running[0] == 0 or now >= end + DRAIN_SECONDS:
                break
        lib.curl_multi_poll(multi, ffi.NULL, 0, 50, ffi.NULL)
    for easy in handles:
        lib.curl_multi_remove_handle(multi, easy._curl)
    lib.curl_multi_cleanup(multi)
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000 if ordered else None

    return {"requests": ok, "errors": errors, "error_detail": ", ".join(f"{k} {v}" for k, v in kinds.items()),
            "rps": ok / seconds, "client_cpu": cpu1 - cpu0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "connections": len(conns)}


def check(port: int, path: str, want: bytes, timeout: float) -> str:
    """One HTTP/3 GET: 200, over h3, with exactly the route's bytes. '' means fine. Retried until ``timeout``
    (the UDP side may come up after the process starts); the last problem is returned."""
    from curl_cffi import CurlHttpVersion, requests

    deadline = time.monotonic() + timeout
    problem = "no attempt"
    while time.monotonic() < deadline:
        try:
            response = requests.get(f"https://127.0.0.1:{port}{path}", http_version=CurlHttpVersion.V3ONLY,
                                    verify=False, timeout=3)
        except Exception as exc:  # curl_cffi raises its own error types for every network failure
            problem = f"GET {path} over HTTP/3: {exc}"
            time.sleep(0.2)
            continue
        if response.status_code != 200:
            return f"GET {path} answered {response.status_code}"
        if response.http_version != CURL_HTTP_3:
            return f"GET {path} came over HTTP version {response.http_version}, not 3"
        if response.content != want:
            return f"GET {path} got {len(response.content)} body bytes, expected {len(want)}"
        return ""
    return problem


# ---------------------------------------------------------------------------------------- the floor


def floor_server(port: int, cert: str, key: str, batched: bool = False) -> None:
    """Bare aioquic on uvloop: answer every request from aioquic's event callback with the route's bytes.

    What any server built on aioquic pays at least: packet protection, QUIC frames and acknowledgements,
    QPACK and HTTP/3 framing, one datagram send per flush. No app, no ASGI, no limits, no timeouts.
    ``batched``: flush once per event-loop turn instead of after every datagram received (aioquic's
    asyncio protocol does the latter), so the datagrams read in one turn share one ``datagrams_to_send``."""
    import asyncio

    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import serve
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ProtocolNegotiated, QuicEvent

    apps = run.load_apps()
    routes = {b"/": (b"text/plain", bytes(apps.TEXT)), b"/big": (b"application/octet-stream", bytes(apps.BIG))}

    class Floor(QuicConnectionProtocol):
        h3: H3Connection | None = None

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ProtocolNegotiated):
                self.h3 = H3Connection(self._quic)
            if self.h3 is None:
                return
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived):
                    path = dict(h3_event.headers).get(b":path", b"/")
                    content_type, body = routes.get(path, routes[b"/"])
                    self.h3.send_headers(h3_event.stream_id, [
                        (b":status", b"200"), (b"content-type", content_type),
                        (b"content-length", str(len(body)).encode())])
                    self.h3.send_data(h3_event.stream_id, body, end_stream=True)

        if batched:
            def datagram_received(self, data: bytes | str, addr: Any) -> None:
                self._quic.receive_datagram(data, addr, now=self._loop.time())  # type: ignore[arg-type]
                self._process_events()
                self._transmit_soon()

    async def main() -> None:
        configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=None)
        configuration.load_cert_chain(cert, key)
        await serve("127.0.0.1", port, configuration=configuration, create_protocol=Floor)
        print(f"aioquic floor on udp 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


# ------------------------------------------------------------------------------------------ servers


def find_tool(name: str, *pythons: str) -> str:
    """``name``'s script beside one of ``pythons`` (their venvs), else on PATH."""
    for python in pythons:
        candidate = Path(python).parent / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name) or name


@dataclass
class Plan(common.RoundsPlan[Variant, Scenario]):
    streams: int
    hypercorn: str
    cert: Path
    key: Path
    profile_dir: Path | None = None
    py_spy: str = "py-spy"
    bodies: dict[str, bytes] = field(default_factory=dict)


def server_argv(plan: Plan, variant: Variant, port: int) -> list[str]:
    """The command line serving benchmarks/apps.py over HTTP/3 on UDP 127.0.0.1:``port`` (and TLS on TCP)."""
    if variant.server == "hypercorn":
        return [plan.hypercorn, "--certfile", str(plan.cert), "--keyfile", str(plan.key), "--bind",
                f"127.0.0.1:{port}", "--quic-bind", f"127.0.0.1:{port}", "-w", "1", "-k", "uvloop",
                "--log-level", "warning", "apps:asgi_app"]
    if variant.server == "aioquic":
        return [sys.executable, str(Path(__file__).resolve()), "--floor", str(port), str(plan.cert), str(plan.key),
                "batched" if variant.name.endswith("-batched") else "plain"]
    return [variant.python or plan.bascule_python, "-m", "bascule", f"apps:{variant.interface}_app",
            "--app-dir", str(HERE), "--interface", "asgi3" if variant.interface == "asgi" else "wsgi",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
            "--ssl-certfile", str(plan.cert), "--ssl-keyfile", str(plan.key), "--http3", *plan.bascule_args]


def client_argv(plan: Plan, sc: Scenario, port: int) -> list[str]:
    spec = {"port": port, "path": sc.path, "connections": plan.connections, "streams": plan.streams,
            "warmup": plan.warmup, "seconds": plan.seconds, "size": len(plan.bodies[sc.name])}
    return [*procs.pin(plan.client_cpu), sys.executable, str(Path(__file__).resolve()), "--client",
            json.dumps(spec)]


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Round:
    variant: str
    scenario: str
    round: int
    status: str = "ok"  # "ok", "failed"
    note: str = ""
    rps: float = 0.0
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    connections: int = 0  # QUIC connections the timed transfers used
    server_us: float | None = None  # the server's CPU per request (its process tree), microseconds
    client_us: float | None = None  # the client's CPU per request
    client_busy_pct: float | None = None  # the client's CPU over the timed part, % of its core
    datagrams: float | None = None  # UDP datagrams sent per request, both ways (server's and client's)
    drops: int = 0  # datagrams dropped on a full socket receive buffer during the timed part
    server_drops: int = 0  # of which at the server's socket (over its whole life)
    others_cpu_pct: float | None = None
    profile: dict[str, float] = field(default_factory=dict)  # share of py-spy samples per part (--profile)


def udp_counters() -> tuple[int, int]:
    """This machine's UDP datagrams sent and receive-buffer drops so far (/proc/net/snmp; every process,
    so another QUIC user on the machine would show up here too)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
        row = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    except (OSError, IndexError, ValueError):
        return 0, 0
    return row.get("OutDatagrams", 0), row.get("RcvbufErrors", 0)


def socket_drops(port: int) -> int:
    """Datagrams dropped so far at the UDP sockets bound to ``port`` (the server's: /proc/net/udp's last
    column), over their whole life (warm-up and check included)."""
    want, total = f":{port:04X}", 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want):
                total += int(fields[-1])
    return total


def profile_split(raw: Path, server: str) -> dict[str, float]:
    """py-spy's collapsed stacks -> the share of samples whose innermost frame from a known package is in
    aioquic, the server's own package, the app, or none of them (event loop, stdlib)."""
    parts = {"aioquic": ("aioquic/",), "server": (f"{server}/",), "app": ("apps.py",)}
    counts = dict.fromkeys([*parts, "other"], 0)
    try:
        lines = raw.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        where = "other"
        for frame in reversed(stack.split(";")):
            found = next((part for part, marks in parts.items() if any(m in frame for m in marks)), None)
            if found:
                where = found
                break
        counts[where] += int(n)
    total = sum(counts.values())
    return {k: round(100 * v / total, 1) for k, v in counts.items()} if total else {}


def measure(plan: Plan, variant: Variant, sc: Scenario, round_no: int) -> Round:
    """Start ``variant``, check the route over h3, warm it up and load it (one client run), stop it."""
    result = Round(variant.name, sc.name, round_no + 1)
    port = procs.free_port()
    log_path = plan.log_dir / f"{variant.name}-{sc.name}-{round_no + 1}.log"
    argv = [*procs.pin(plan.server_cpu), *server_argv(plan, variant, port)]
    proc = procs.spawn(argv, log_path, dict(os.environ, WEB_CONCURRENCY="1"))
    spy: subprocess.Popen[bytes] | None = None
    try:
        if problem := check(port, sc.path, plan.bodies[sc.name], plan.start_timeout):
            code = proc.poll()
            why = f" (exited with {code}: {procs.log_tail(log_path)})" if code is not None else f"; log {log_path}"
            result.status, result.note = "failed", f"check: {problem}{why}"
            return result
        client = subprocess.Popen(client_argv(plan, sc, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        assert client.stdout is not None
        go = client.stdout.readline()  # the warm-up is over: the timed part starts now
        audit = quiet.CpuAudit(proc.pid)
        before = procs.cpu_seconds([proc.pid])
        udp_before = udp_counters()
        raw = None
        if plan.profile_dir is not None and variant.server != "aioquic" and go == "go\n":
            raw = plan.profile_dir / f"{variant.name}-{sc.name}-{round_no + 1}.txt"
            spy = subprocess.Popen([*procs.pin(plan.client_cpu), plan.py_spy, "record", "--pid",
                                    str(proc.pid), "--subprocesses", "--rate", "250", "--duration",
                                    str(max(1, int(plan.seconds) - 1)), "--format", "raw", "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            out, err = client.communicate(timeout=plan.seconds + DRAIN_SECONDS + 30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.communicate()
            result.status, result.note = "failed", "the client did not finish"
            return result
        used = procs.cpu_seconds([proc.pid]) - before
        udp_after = udp_counters()
        result.server_drops = socket_drops(port)
        result.others_cpu_pct = audit.others_pct()
        if client.returncode != 0 or go != "go\n":
            result.status, result.note = "failed", f"client: {(go + out + err).strip()[-300:]}"
            return result
        figures = json.loads(out.strip().splitlines()[-1])
        result.rps, result.requests = figures["rps"], figures["requests"]
        result.p50_ms, result.p99_ms = figures["p50_ms"], figures["p99_ms"]
        result.errors, result.error_detail = figures["errors"], figures["error_detail"]
        result.connections = figures["connections"]
        result.client_busy_pct = round(100 * figures["client_cpu"] / plan.seconds, 1)
        if result.requests:
            result.server_us = round(1e6 * used / result.requests, 1)
            result.client_us = round(1e6 * figures["client_cpu"] / result.requests, 1)
            result.datagrams = round((udp_after[0] - udp_before[0]) / result.requests, 2)
        result.drops = udp_after[1] - udp_before[1]
        if proc.poll() is not None:
            result.status, result.note = "failed", f"the server exited with {proc.returncode} under load"
        if spy is not None and raw is not None:
            spy.wait(30)
            result.profile = profile_split(raw, "bascule" if variant.server == "bascule" else variant.server)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        procs.stop(proc)
    return result


# ------------------------------------------------------------------------------------------- results


def markdown(plan: Plan, rounds: Sequence[Round]) -> str:
    """The tables for docs/benchmarks.md: req/s per round and the median's CPU costs, then the ratios."""
    best = common.medians(rounds)
    lines: list[str] = []
    for sc in plan.scenarios:
        lines += common.rounds_table(
            f"{sc.title} over HTTP/3, {plan.connections} QUIC connections x {plan.streams} streams", "server", [],
            ["p50", "p99", "server CPU µs/req", "client CPU µs/req", "client busy", "datagrams/req",
             "drops (server's)"], plan.rounds, [v.name for v in plan.variants], sc.name, rounds, cpu_cells)
    lines += common.ratio_table(ratios(best, plan), "| scenario | ratio (req/s) | measured | target |")
    lines += relative(best, plan)
    profiled = [(k, r) for k, r in sorted(best.items()) if r.profile]
    if profiled:
        lines += ["Where the server's time goes (py-spy samples, innermost frame from a known package):", "",
                  "| scenario | server | aioquic | server's own code | app | event loop, stdlib |",
                  "|---|---|---:|---:|---:|---:|"]
        for (name, scenario), r in profiled:
            p = r.profile
            lines.append(f"| {scenario} | {name} | {p.get('aioquic', 0):.0f}% | {p.get('server', 0):.0f}% | "
                         f"{p.get('app', 0):.0f}% | {p.get('other', 0):.0f}% |")
        lines.append("")
    return "\n".join(lines)


def cpu_cells(b: Round) -> tuple[list[str], list[str]]:
    """A median round's cells after its errors: latency, CPU costs, datagrams and drops."""
    busy = "-" if b.client_busy_pct is None else f"{b.client_busy_pct:.0f}%"
    return [], [report.fmt_ms(b.p50_ms), report.fmt_ms(b.p99_ms), common.fmt_us(b.server_us),
                common.fmt_us(b.client_us), busy, fmt_datagrams(b.datagrams), f"{b.drops} ({b.server_drops})"]


def fmt_datagrams(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def relative(best: dict[tuple[str, str], Round], plan: Plan) -> list[str]:
    """Every server against hypercorn twice: by req/s, and by the server's CPU per request (hypercorn's over
    its own). On a busy machine the second holds better: other work steals wall time from every run, while
    the CPU a request costs moves less. Plus req/s against the plain aioquic floor."""
    names = {v.name for v in plan.variants}
    if "hypercorn" not in names and "aioquic" not in names:
        return []
    rows = []
    for sc in plan.scenarios:
        base, floor = best.get(("hypercorn", sc.name)), best.get(("aioquic", sc.name))
        for v in plan.variants:
            r = best.get((v.name, sc.name))
            if r is None or r.status != "ok" or v.name == "hypercorn":
                continue
            by_rps = by_cpu = of_floor = "-"
            if base is not None and base.status == "ok" and base.rps > 0:
                by_rps = f"{r.rps / base.rps:.2f}x"
                if base.server_us and r.server_us:
                    by_cpu = f"{base.server_us / r.server_us:.2f}x"
            if floor is not None and floor.status == "ok" and floor.rps > 0 and v.name != "aioquic":
                of_floor = f"{100 * r.rps / floor.rps:.0f}%"
            rows.append(f"| {sc.name} | {v.name} | {by_rps} | {by_cpu} | {of_floor} |")
    if not rows:
        return []
    return ["Against hypercorn (req/s, and hypercorn's server CPU per request over this server's) and against "
            "the aioquic floor:", "", "| scenario | server | req/s vs hypercorn | CPU/req vs hypercorn "
            "| req/s vs aioquic floor |", "|---|---|---:|---:|---:|", *rows, ""]


def ratios(best: dict[tuple[str, str], Round], plan: Plan) -> list[common.Ratio]:
    """Each bascule variant over hypercorn, per scenario (the issue: at least 3x)."""
    theirs, target = TARGET
    out: list[common.Ratio] = []
    if theirs not in {v.name for v in plan.variants}:
        return out
    for sc in plan.scenarios:
        for v in plan.variants:
            if v.server != "bascule":
                continue
            out.append(common.ratio(best, sc.name, v.name, theirs, target))
    return out


def progress(r: Round) -> str:
    if r.status != "ok":
        return f"{r.scenario:>5} round {r.round}  {r.variant:<12} {r.status.upper()}: {r.note}"
    errors = f"{r.errors} ({r.error_detail})" if r.errors else "0"
    split = (" profile " + " ".join(f"{k} {v:.0f}%" for k, v in r.profile.items())) if r.profile else ""
    return (f"{r.scenario:>5} round {r.round}  {r.variant:<12} {r.rps:>8,.0f} req/s  "
            f"p50 {report.fmt_ms(r.p50_ms):>9}  p99 {report.fmt_ms(r.p99_ms):>9}  errors {errors}  "
            f"conns {r.connections}  server {common.fmt_us(r.server_us)} µs/req  "
            f"client {common.fmt_us(r.client_us)} µs/req ({report.fmt_pct(r.client_busy_pct)} busy)  "
            f"datagrams/req {fmt_datagrams(r.datagrams)}  drops {r.drops} (server {r.server_drops})  "
            f"others {report.fmt_pct(r.others_cpu_pct)}{split}")


# ----------------------------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python benchmarks/h3.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated from {','.join(VARIANTS)} (default {','.join(DEFAULT_VARIANTS)})")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated from {','.join(SCENARIOS)}")
    ap.add_argument("--rounds", type=int, default=3, help="every variant this many times, taking turns")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each timed run")
    ap.add_argument("--connections", type=int, default=4, help="QUIC connections")
    ap.add_argument("--streams", type=int, default=16, help="concurrent requests on each connection")
    ap.add_argument("--bascule-python", default=sys.executable, help="interpreter that runs `-m bascule`")
    ap.add_argument("--bascule-build", action="append", default=[], metavar="LABEL=PYTHON",
                    help="repeatable: another bascule install to measure in the same run, as variant bascule@LABEL")
    ap.add_argument("--bascule-args", default="", help="extra flags for bascule")
    ap.add_argument("--hypercorn", help="hypercorn's script (default: beside --bascule-python, here, PATH)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="sample the bascule and hypercorn servers with py-spy during each timed run; "
                         "raw stacks go to DIR")
    ap.add_argument("--py-spy", help="py-spy's path (default: beside this interpreter, else PATH)")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before each run, wait up to this many seconds for other work on the machine to stop")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to CPUs")
    ap.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"server logs (default {LOG_DIR})")
    ap.add_argument("--out", type=Path, help="JSON result (every round, the medians, the ratios)")
    ap.add_argument("--markdown", type=Path, help="also write the markdown tables to this file")
    args = ap.parse_args(argv)
    known = variants_for(common.parse_builds(ap, args.bascule_build))
    args.variant_list = []
    for name in args.variants.split(","):
        if name not in known:
            ap.error(f"unknown variant {name!r}; choose from {', '.join(known)}")
        args.variant_list.append(known[name])
    args.scenario_list = common.pick_scenarios(ap, args.scenarios, SCENARIOS)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1 or args.streams < 1:
        ap.error("--rounds, --seconds, --connections and --streams must be >= 1")
    if args.warmup < 0 or args.quiet_wait < 0:
        ap.error("--warmup and --quiet-wait must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import curl_cffi  # noqa: F401
        import trustme
    except ImportError as exc:
        print(f"missing {exc.name}: pip install curl_cffi trustme aioquic", file=sys.stderr)
        return 2
    pinned = procs.can_pin(args.no_pin)
    if pinned:
        procs.keep_off_server_cpu()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    with tempfile.TemporaryDirectory(prefix="bascule-h3-bench-") as scratch:
        leaf = trustme.CA().issue_cert("localhost", "127.0.0.1")
        cert, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        plan = Plan(variants=args.variant_list, scenarios=args.scenario_list, rounds=args.rounds,
                    seconds=args.seconds, warmup=args.warmup, connections=args.connections, streams=args.streams,
                    bascule_python=args.bascule_python, bascule_args=tuple(shlex.split(args.bascule_args)),
                    hypercorn=args.hypercorn or find_tool("hypercorn", args.bascule_python, sys.executable),
                    server_cpu=procs.SERVER_CPU if pinned else None, client_cpu=procs.CLIENT_CPU if pinned else None,
                    log_dir=args.log_dir, cert=cert, key=key, profile_dir=args.profile,
                    py_spy=args.py_spy or find_tool("py-spy", sys.executable), quiet_wait=args.quiet_wait)
        for sc in plan.scenarios:
            plan.bodies[sc.name] = expected_body(sc.path)
        print(f"{len(plan.variants)} variants x {len(plan.scenarios)} scenarios x {plan.rounds} rounds, "
              f"{plan.seconds:g} s each (+{plan.warmup:g} s warm-up), {plan.connections} connections x "
              f"{plan.streams} streams; logs in {args.log_dir}", flush=True)
        with procs.terminate_on_signals():
            every = common.run_rounds(
                plan.scenarios, plan.rounds, plan.variants,
                lambda v, sc, round_no: quiet.calmly(lambda: measure(plan, v, sc, round_no), plan.quiet_wait, 0)[0],
                progress)
    table = markdown(plan, every)
    print("\n" + table)
    found = common.bascule_versions(common.bascule_pythons(plan.variants, plan.bascule_python),
                                    ["bascule", "aioquic", "uvloop"])
    found.update(machine.dist_versions(sys.executable, ["curl_cffi"]))
    found.update(machine.dist_versions(str(Path(plan.hypercorn).parent / "python"), ["hypercorn"]))
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    if args.out is not None:
        best = common.medians(every)
        meta = {**common.meta_head(started, "benchmarks/h3.py", argv, found),
                "pinning": {"server_cpu": plan.server_cpu, "client_cpu": plan.client_cpu},
                "seconds": plan.seconds, "warmup": plan.warmup, "rounds": plan.rounds,
                "connections": plan.connections, "streams": plan.streams}
        common.write_json(args.out, meta, every, best, ratios(best, plan))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    busy = [r for r in every if r.status == "ok" and (r.client_busy_pct or 0) > 80]
    if busy:
        print(f"warning: the client used over 80% of its core in {len(busy)} run(s): there it may be the bound, "
              "not the server", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in common.medians(every).values()) else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        spec = json.loads(sys.argv[2])
        print(json.dumps(load(spec["port"], spec["path"], spec["connections"], spec["streams"], spec["warmup"],
                              spec["seconds"], spec["size"])))
        sys.exit(0)
    if len(sys.argv) == 6 and sys.argv[1] == "--floor":
        floor_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "batched")
        sys.exit(0)
    sys.exit(main())
