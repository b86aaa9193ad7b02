"""WebSocket benchmark: echo throughput and the memory of idle connections, bascule and uvicorn side by side.

Method
------
Both servers serve benchmarks/apps.py's ``asgi_app`` (a WebSocket echo at any path), one process each,
pinned to CPU 0 (``taskset -c 0``); the load client runs on CPU 1. uvicorn runs with ``--ws websockets``
(the same protocol library bascule drives), httptools and uvloop.

- Throughput: ``../shared/bench/wsbench.py PORT SECONDS 16 50`` (16 connections, each writing batches of
  50 masked 32-byte text frames and reading the 50 echoes), messages/s. Servers take turns for
  ``--repeat`` rounds; each one's median is kept, and the ratio bascule/uvicorn is the figure to read.
- Memory: the server's RSS (VmRSS) with no connection, then with ``--idle`` open, idle WebSockets
  (handshake done, nothing sent), once without and once with a permessage-deflate offer (what browsers
  send); (RSS with - RSS without) / N is the cost of one connection.

Usage: python benchmarks/websocket.py [--repeat 3] [--seconds 5] [--idle 1000]
Run it with the interpreter that has bascule installed; uvicorn comes from --peers-venv. It waits (up to
--quiet-wait seconds) while another benchmark (wrk, benchmarks/run.py) is running.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WSBENCH = HERE.parent.parent / "shared" / "bench" / "wsbench.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_quiet(max_wait: float) -> None:
    """Wait while other load generators run (wrk, benchmarks/run.py), at most ``max_wait`` seconds."""
    end = time.monotonic() + max_wait
    while time.monotonic() < end:
        found = subprocess.run(["pgrep", "-f", r"^wrk |benchmarks/run\.py|h2load "], capture_output=True, text=True)
        if not found.stdout.strip():
            return
        time.sleep(2)
    print("warning: other benchmarks are still running; figures may be disturbed", file=sys.stderr)


def commands(peers: Path, port: int) -> dict[str, list[str]]:
    return {
        "bascule": [sys.executable, "-m", "bascule", "apps:asgi_app", "--app-dir", str(HERE), "--port", str(port),
                    "--no-access-log", "--log-level", "warning"],
        "uvicorn": [str(peers / "bin" / "uvicorn"), "apps:asgi_app", "--app-dir", str(HERE), "--port", str(port),
                    "--ws", "websockets", "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                    "--log-level", "warning"],
    }


class Running:
    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start: {argv}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def throughput(python: Path, port: int, seconds: float) -> float:
    out = subprocess.run(["taskset", "-c", "1", str(python), str(WSBENCH), str(port), str(seconds), "16", "50"],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    match = re.search(r"(\d+) msgs/s", out)
    if match is None:
        raise RuntimeError(f"unexpected wsbench output: {out!r}")
    return float(match[1])


async def _open_idle(port: int, count: int, deflate: bool) -> list[asyncio.StreamWriter]:
    extra = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"handshake refused: {head!r}")
        return writer

    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return writers


def idle_cost(argv: list[str], port: int, count: int, deflate: bool) -> tuple[int, int]:
    """(RSS KiB with no connection, RSS KiB with ``count`` idle WebSockets), on a fresh server."""
    server = Running(argv, port)
    try:
        time.sleep(0.5)
        pid = server.proc.pid
        before = rss_kib(pid)

        async def hold() -> int:
            writers = await _open_idle(port, count, deflate)
            await asyncio.sleep(2.0)  # let the server settle (tasks parked, buffers released)
            after = rss_kib(pid)
            for writer in writers:
                writer.close()
            return after

        return before, asyncio.run(hold())
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--peers-venv", type=Path, default=Path("/tmp/bascule-peers"))
    ap.add_argument("--quiet-wait", type=float, default=120.0)
    args = ap.parse_args(argv)
    if shutil.which("taskset") is None or not WSBENCH.exists():
        print(f"needs taskset and {WSBENCH}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    python = args.peers_venv / "bin" / "python"  # wsbench needs uvloop, which the peers venv has
    rates: dict[str, list[float]] = {"bascule": [], "uvicorn": []}
    for round_no in range(args.repeat):
        for name in rates:
            wait_quiet(args.quiet_wait)
            port = free_port()
            server = Running(commands(args.peers_venv, port)[name], port)
            try:
                throughput(python, port, 1.0)  # warm-up
                rate = throughput(python, port, args.seconds)
            finally:
                server.stop()
            rates[name].append(rate)
            print(f"round {round_no + 1}: {name:8} {rate:10.0f} msgs/s", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print("\necho throughput (median msgs/s, server on one core):")
    for name, value in medians.items():
        print(f"  {name:8} {value:10.0f}")
    print(f"  ratio bascule/uvicorn: {medians['bascule'] / medians['uvicorn']:.2f}x")
    print(f"\nidle WebSockets ({args.idle} connections), RSS per connection:")
    for deflate in (False, True):
        for name in rates:
            wait_quiet(args.quiet_wait)
            port = free_port()
            before, after = idle_cost(commands(args.peers_venv, port)[name], port, args.idle, deflate)
            label = "deflate" if deflate else "plain"
            print(f"  {label:7} {name:8} {before / 1024:7.1f} MiB -> {after / 1024:7.1f} MiB: "
                  f"{(after - before) / args.idle:6.1f} KiB per connection", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
