"""Process-model acceptance runs (issue 5): what a load sees when a worker dies, on SIGHUP, and on recycling.

For each server (bascule and the peers, each with 2 workers) and each scenario, a ``wrk -t1 -c64`` load runs
on loopback for ``--duration`` seconds, and at ``--at`` seconds:

- ``kill``: one worker gets SIGKILL; reported: wrk's errors, and the time until the master has a new child
  (polled from /proc every millisecond);
- ``hup``: the app's file is edited and the master gets SIGHUP; reported: wrk's errors, and whether the
  server answers with the edited code afterwards;
- ``maxreq``: nothing is done; the servers run with --max-requests 5000 (jitter 500) and we report wrk's
  errors and how many workers were replaced (granian has no request-count recycling: skipped).

wrk's errors are its socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. Run it on an
otherwise idle machine (wrk is CPU-bound); it never runs two loads at once.

    python benchmarks/process_model.py [--servers bascule,gunicorn,uvicorn,granian] [--scenarios kill,hup,maxreq]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PEERS = Path(os.environ.get("BASCULE_PEERS_BIN", "/tmp/bascule-peers/bin"))
APP = '''\
VERSION = b"{version}"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = VERSION if scope["path"] == "/version" else b"Hello, world!"
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})


def wsgi(environ, start_response):
    body = VERSION if environ["PATH_INFO"] == "/version" else b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
MAX_REQUESTS, JITTER = 5000, 500


def command(server: str, port: int, scenario: str, gunicorn_class: str) -> list[str] | None:
    recycle = scenario == "maxreq"
    if server == "bascule":
        cmd = [sys.executable, "-m", "bascule", "pm_app:app", "--workers", "2", "--port", str(port),
               "--no-access-log", "--log-level", "warning"]
        return cmd + (["--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", str(JITTER)] if recycle else [])
    if server == "gunicorn":
        cmd = [str(PEERS / "gunicorn"), "-w", "2", "-k", gunicorn_class, "-b", f"127.0.0.1:{port}", "pm_app:wsgi",
               "--log-level", "warning"]
        if gunicorn_class == "gthread":
            cmd += ["--threads", "8"]
        return cmd + (["--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", str(JITTER)] if recycle else [])
    if server == "uvicorn":
        cmd = [str(PEERS / "uvicorn"), "pm_app:app", "--workers", "2", "--port", str(port), "--no-access-log",
               "--log-level", "warning"]
        return cmd + (["--limit-max-requests", str(MAX_REQUESTS), "--limit-max-requests-jitter", str(JITTER)]
                      if recycle else [])
    if server == "granian":
        if recycle:
            return None  # no request-count recycling (only --workers-lifetime, at least 60 s)
        return [str(PEERS / "granian"), "--interface", "asgi", "--workers", "2", "--port", str(port),
                "--respawn-failed-workers", "--no-log", "pm_app:app"]
    raise ValueError(server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> set[int]:
    """Worker processes of ``pid``: its children, less multiprocessing's helper processes."""
    try:
        pids = {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()
    workers = set()
    for child in pids:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline and b"semaphore_tracker" not in cmdline:
            workers.add(child)
    return workers


def get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if get(port, "/") is not None:
            return True
        time.sleep(0.05)
    return False


@dataclass
class Result:
    server: str
    scenario: str
    requests_per_s: float = 0.0
    errors: int = 0
    detail: str = ""
    note: str = ""


def parse_wrk(output: str) -> tuple[float, int, str]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors, parts = 0, []
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        names = ("connect", "read", "write", "timeout")
        for name, value in zip(names, map(int, sock.groups()), strict=True):
            errors += value
            if value:
                parts.append(f"{name} {value}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
        parts.append(f"non-2xx {non2xx.group(1)}")
    return float(rps.group(1)) if rps else 0.0, errors, ", ".join(parts)


def run_one(server: str, scenario: str, args: argparse.Namespace, workdir: Path) -> Result:
    result = Result(server, scenario)
    (workdir / "pm_app.py").write_text(APP.format(version="one"))
    port = free_port()
    cmd = command(server, port, scenario, args.gunicorn_class)
    if cmd is None:
        result.note = "not supported"
        return result
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env = {k: v for k, v in env.items() if not k.startswith(("BASCULE_", "WEB_CONCURRENCY"))}
    log = open(workdir / f"{server}-{scenario}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_up(port, proc) or not _wait_workers(proc.pid, 2):
            result.note = "did not start: " + (workdir / f"{server}-{scenario}.log").read_text()[-300:]
            return result
        seen: set[int] = set(children(proc.pid))
        stop_watch = threading.Event()

        def watch() -> None:  # every worker pid there ever was, for counting recycles
            while not stop_watch.is_set():
                seen.update(children(proc.pid))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s",
                                f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        time.sleep(args.at)
        if scenario == "kill":
            before = children(proc.pid)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            respawn = None
            while time.monotonic() - killed < args.duration:
                if children(proc.pid) - before:
                    respawn = time.monotonic() - killed
                    break
                time.sleep(0.001)
            result.note = f"new worker after {respawn:.3f} s" if respawn is not None else "no new worker"
        elif scenario == "hup":
            (workdir / "pm_app.py").write_text(APP.format(version="second"))
            proc.send_signal(signal.SIGHUP)
        output, _ = wrk.communicate(timeout=args.duration + 30)
        stop_watch.set()
        watcher.join()
        result.requests_per_s, result.errors, result.detail = parse_wrk(output)
        if scenario == "hup":
            time.sleep(1.0)
            versions = {get(port, "/version") for _ in range(8)}
            result.note = "serves the edited code" if versions == {b"second"} else f"serves {versions}"
        elif scenario == "maxreq":
            result.note = f"{len(seen) - 2} worker(s) replaced"
        if proc.poll() is not None:
            result.note += f"; server exited with {proc.returncode}"
        return result
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def _wait_workers(pid: int, count: int, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(children(pid)) >= count:
            time.sleep(0.5)  # let them finish booting
            return True
        time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="bascule,gunicorn,uvicorn,granian")
    parser.add_argument("--scenarios", default="kill,hup,maxreq")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--at", type=float, default=3.0, help="seconds into the load when the event happens")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--gunicorn-class", default="gthread", choices=("gthread", "sync"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios.split(","):
            for server in args.servers.split(","):
                while subprocess.run(["pgrep", "-x", "wrk"], capture_output=True).returncode == 0:
                    time.sleep(1)  # another load runs on this machine: never two at once
                result = run_one(server, scenario, args, Path(tmp))
                results.append(result)
                print(f"{scenario:7} {server:9} {result.requests_per_s:9.0f} req/s  errors {result.errors:5}"
                      f"  {result.detail:30} {result.note}", flush=True)
    print("\n| scenario | server | req/s | wrk errors | detail | note |\n|---|---|---|---|---|---|")
    for r in results:
        name = f"gunicorn ({args.gunicorn_class})" if r.server == "gunicorn" else r.server
        print(f"| {r.scenario} | {name} | {r.requests_per_s:.0f} | {r.errors} | {r.detail} | {r.note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
