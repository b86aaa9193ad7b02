"""Slow-client acceptance run (issue 6): many connections trickling header lines against one server.

Starts ``python -m bascule benchmarks.apps:asgi_app`` (one worker, --timeout-request-head SECONDS), opens
``--clients`` connections (default 1000) that each send a request line and then one header line every
``--interval`` seconds, never finishing the head. Meanwhile a fresh client sends a complete request every
0.25 s and the time to its answer is recorded. Reported: the worst and median latency of the fresh
clients (target: < 1 s), and how long after its first byte every trickler was closed (target: all of them
by the head deadline plus one tick).

    python benchmarks/slowloris.py --clients 1000 --head-timeout 5

Raise the open-files limit first (``ulimit -n 4096``); the script raises its soft limit as far as allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def trickler(port: int, interval: float, closed_after: list[float], started: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: slow\r\n")
    started.set()
    i = 0
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:
                writer.write(b"X-Slow-%d: y\r\n" % i)
                i += 1
                continue
            if not data:
                break
    except OSError:
        pass
    closed_after.append(time.monotonic() - t0)
    writer.close()


async def fresh_client(port: int) -> float:
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: fresh\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"fresh client got {data[:40]!r}")
    return time.monotonic() - t0


async def run(port: int, clients: int, interval: float, head_timeout: float) -> int:
    closed_after: list[float] = []
    events = [asyncio.Event() for _ in range(clients)]
    tasks = []
    for ev in events:
        tasks.append(asyncio.create_task(trickler(port, interval, closed_after, ev)))
        await asyncio.sleep(0)
    await asyncio.gather(*(ev.wait() for ev in events))
    latencies = []
    end = time.monotonic() + head_timeout + 2
    while time.monotonic() < end:
        latencies.append(await fresh_client(port))
        await asyncio.sleep(0.25)
    await asyncio.wait(tasks, timeout=head_timeout + 3)
    still_open = sum(not t.done() for t in tasks)
    for t in tasks:
        t.cancel()
    print(f"tricklers: {clients}, closed: {len(closed_after)}, still open: {still_open}")
    if closed_after:
        print(f"closed after: min {min(closed_after):.2f} s, max {max(closed_after):.2f} s "
              f"(head deadline {head_timeout} s, tick 0.5 s)")
    print(f"fresh clients: {len(latencies)}, median {statistics.median(latencies) * 1000:.1f} ms, "
          f"worst {max(latencies) * 1000:.1f} ms")
    ok = still_open == 0 and max(latencies) < 1.0 and (not closed_after or max(closed_after) < head_timeout + 1.5)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between header lines")
    parser.add_argument("--head-timeout", type=float, default=5.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.clients + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "bascule", "benchmarks.apps:asgi_app", "--port", str(port), "--no-access-log",
         "--timeout-request-head", str(args.head_timeout), "--log-level", "warning"],
        cwd=ROOT, env=env)
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        return asyncio.run(run(port, args.clients, args.interval, args.head_timeout))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
