"""System calls per request, by name: the wake-ups a hand-over between threads costs, counted with strace.

Why
---
callgrind (benchmarks/callgrind.py) counts the instructions a request costs but not how often a thread is
put to sleep and woken, which is what a hand-over between the event loop and a thread pool mostly costs
(futex for the GIL and the pool's queue, write/read on the loop's wake-up fd, epoll_wait returning
early). strace counts those exactly, whatever else the machine is doing.

How
---
One bascule (one worker, access log off, benchmarks/apps.py's app of ``--app``) runs under ``strace -f -c``
from start to stop, twice: serving ``--warmup`` GET / one at a time over one keep-alive HTTP/1.1
connection, then ``--warmup`` + ``--requests``; the difference of the two tables divided by ``--requests``
is the figure (attaching strace to a running server instead stalled it in this sandbox). strace slows
every system call down, so the figures are counts, not times.

Usage
-----
  python benchmarks/wakeups.py --app wsgi VENV/bin/python                       # --wsgi-mode threads
  python benchmarks/wakeups.py --app wsgi --bascule-args="--wsgi-mode loop" VENV/bin/python
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import procs  # benchmarks/procs.py: ports, stopping a server
from callgrind import APPS, HERE, HOST, STOP_GRACE, BenchError, H1Client, server_env, wait_port

MAX_REQUESTS = 100_000


def traced_calls(python: str, args: argparse.Namespace, requests: int) -> dict[str, int]:
    """System calls by name of one server under ``strace -f -c`` from its start to its stop, having served
    ``--warmup`` + ``requests`` GET / over one connection."""
    port = procs.free_port()
    app, interface = APPS[args.app]
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out, tempfile.TemporaryFile() as log:
        cmd = ["strace", "-f", "-c", "-o", out.name, python, "-m", "bascule", app, "--app-dir", str(HERE),
               "--interface", interface, "--host", HOST, "--port", str(port), "--workers", "1", "--no-access-log",
               *shlex.split(args.bascule_args)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env(), start_new_session=True)
        try:
            wait_port(port, proc, 60.0)
            client = H1Client(port, 60.0)
            try:
                client.run(args.warmup + requests)
            finally:
                client.close()
        except BenchError as exc:
            log.seek(0)
            raise BenchError(f"{exc}: {log.read()[-600:].decode(errors='replace')}") from exc
        finally:  # SIGTERM to the group: bascule stops gracefully and strace, seeing it exit, writes its table
            procs.stop(proc, grace=STOP_GRACE)
        table = out.read()
    calls: dict[str, int] = {}
    for line in table.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    return calls


def count(python: str, args: argparse.Namespace) -> dict[str, float]:
    """System calls per request, by name: a server that served ``--requests`` more than another, the
    difference divided by ``--requests`` (start-up, warm-up and shutdown cancel out)."""
    short = traced_calls(python, args, 0)
    long = traced_calls(python, args, args.requests)
    return {name: (n - short.get(name, 0)) / args.requests for name, n in long.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/wakeups.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("python", help="an interpreter with bascule installed (compiled: pip install .)")
    ap.add_argument("--app", choices=sorted(APPS), default="wsgi")
    ap.add_argument("--bascule-args", default="", help="extra flags for bascule")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=500)
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        ap.error(f"--requests 1..{MAX_REQUESTS}")
    try:
        calls = count(args.python, args)
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.app} {args.bascule_args or '(defaults)'}: system calls per request over {args.requests} requests")
    for name, per in sorted(calls.items(), key=lambda kv: -kv[1]):
        if per >= 0.01:
            print(f"  {name:<16} {per:6.2f}")
    print(f"  {'total':<16} {sum(calls.values()):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
