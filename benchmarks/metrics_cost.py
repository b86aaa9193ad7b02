"""What --metrics costs: wrk -> bascule (ASGI ``/``, benchmarks/apps.py) with metrics off and on, side by side.

Issue 16 asks that ASGI ``/`` req/s with metrics on stays within 5% of metrics off. Each round starts both
variants fresh, one after the other in alternating order (so a neighbour's load falls on both alike), checks
that ``/`` answers 200, warms the server up and loads it with wrk for ``--seconds``: one process, keep-alive,
``--connections`` connections, no access log. The server is pinned to CPU 0 and wrk to CPU 1 (``--no-pin``
to leave both free). The report is each variant's median req/s and the ratio on/off of the medians, with
every round's figures, so the spread shows (other work on a shared machine moves single rounds).

With metrics on, the collector counts every request (bascule.ops.metrics) and probes the loop's lag four
times a second; no admin listener is needed to measure the cost of collecting.

  python benchmarks/metrics_cost.py --rounds 5 --seconds 5
  python benchmarks/metrics_cost.py --bascule-python /venv/bin/python   # a compiled (mypyc) build
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import run  # benchmarks/run.py: wrk's parser, ports, stopping a server

HERE = Path(__file__).parent
VARIANTS = {"off": ["--no-metrics"], "on": ["--metrics"]}
TARGET = 0.95  # on / off at least


def server_argv(python: str, port: int, extra: Sequence[str], pin: bool) -> list[str]:
    return [*(["taskset", "-c", "0"] if pin else []), python, "-m", "bascule", "apps:asgi_app", "--app-dir",
            str(HERE), "--interface", "asgi3", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            *extra]


def wrk_argv(port: int, seconds: float, connections: int, pin: bool) -> list[str]:
    return [*(["taskset", "-c", "1"] if pin else []), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", f"http://127.0.0.1:{port}/"]


def check(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET / answered {response.status}")
    finally:
        conn.close()


def measure(args: argparse.Namespace, variant: str, log_dir: Path) -> float:
    port = run.free_port()
    log = log_dir / f"bascule-{variant}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(server_argv(args.bascule_python, port, VARIANTS[variant], not args.no_pin),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not run.wait_port(port, proc, 20):
            raise RuntimeError(f"bascule ({variant}) did not start: {run.log_tail(log)}")
        check(port)
        subprocess.run(wrk_argv(port, 1, args.connections, not args.no_pin), capture_output=True, timeout=30,
                       check=False)  # warm-up
        done = subprocess.run(wrk_argv(port, args.seconds, args.connections, not args.no_pin), capture_output=True,
                              text=True, timeout=args.seconds + 30, check=False)
        load = run.parse_wrk(done.stdout)
        if load.failure or load.errors:
            raise RuntimeError(f"wrk ({variant}): {load.failure or load.error_detail}")
        return load.rps
    finally:
        run.stop(proc)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--bascule-python", default=sys.executable, help="the interpreter whose bascule to run")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server to CPU 0 and wrk to CPU 1")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    run.raise_nofile()
    log_dir = Path(tempfile.mkdtemp(prefix="bascule-metrics-cost-"))
    rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_no in range(args.rounds):
        order = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
        for variant in order:
            rps = measure(args, variant, log_dir)
            rounds[variant].append(rps)
            print(f"round {round_no + 1} {variant:>3}: {rps:,.0f} req/s", flush=True)
        time.sleep(0.5)
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    ratio = medians["on"] / medians["off"]
    paired = [on / off for on, off in zip(rounds["on"], rounds["off"], strict=True)]
    print(f"\nASGI / ({args.connections} connections, {args.seconds:g} s x {args.rounds} rounds, "
          f"{args.bascule_python})")
    print(f"metrics off: median {medians['off']:,.0f} req/s  (rounds: {', '.join(f'{v:,.0f}' for v in rounds['off'])})")
    print(f"metrics on:  median {medians['on']:,.0f} req/s  (rounds: {', '.join(f'{v:,.0f}' for v in rounds['on'])})")
    print(f"on / off: {ratio:.3f} of the medians; per round {min(paired):.3f}-{max(paired):.3f} "
          f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    if args.out:
        args.out.write_text(json.dumps({"rounds": rounds, "medians": medians, "ratio": ratio, "paired": paired,
                                        "python": args.bascule_python, "connections": args.connections,
                                        "seconds": args.seconds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
