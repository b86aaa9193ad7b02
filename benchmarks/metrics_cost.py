"""What --metrics costs: wrk -> bascule (ASGI ``/``, benchmarks/apps.py) with metrics off and on, side by side.

Issue 16 asks that ASGI ``/`` req/s with metrics on stays within 5% of metrics off. Each round starts one
server of each variant (one process, keep-alive, ``--connections`` connections, no access log), checks that
``/`` answers 200 and warms both up; then wrk loads them in turn, ``--slices`` times each for ``--seconds``,
alternating which goes first. The figure is the median over every back-to-back pair of on/off: on a machine
other work shares, whole rounds move by tens of per cent, but two loads a few seconds apart mostly see the
same neighbours. The server is pinned to CPU 0 and wrk to CPU 1 (``--no-pin`` to leave both free).
benchmarks/callgrind.py (``--bascule-args=--metrics``) gives the noise-free figure: instructions per request.

With metrics on, the collector counts every request (bascule.ops.metrics) and probes the loop's lag four
times a second; no admin listener is needed to measure the cost of collecting.

  python benchmarks/metrics_cost.py --rounds 3 --slices 6 --seconds 2
  python benchmarks/metrics_cost.py --bascule-python /venv/bin/python   # a compiled (mypyc) build
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import loadtools  # benchmarks/loadtools.py: wrk's parser
import procs  # benchmarks/procs.py: ports, stopping a server

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


@contextlib.contextmanager
def started(args: argparse.Namespace, variant: str, log_dir: Path) -> Iterator[int]:
    """One bascule of ``variant`` on a free port, checked and warmed up; yields the port."""
    port = procs.free_port()
    log = log_dir / f"bascule-{variant}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(server_argv(args.bascule_python, port, VARIANTS[variant], not args.no_pin),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not procs.wait_port(port, proc, 20):
            raise RuntimeError(f"bascule ({variant}) did not start: {procs.log_tail(log)}")
        check(port)
        load(args, port, 1.0)  # warm-up
        yield port
    finally:
        procs.stop(proc)


def load(args: argparse.Namespace, port: int, seconds: float) -> float:
    done = subprocess.run(wrk_argv(port, seconds, args.connections, not args.no_pin), capture_output=True,
                          text=True, timeout=seconds + 30, check=False)
    result = loadtools.parse_wrk(done.stdout)
    if result.failure or result.errors:
        raise RuntimeError(f"wrk: {result.failure or result.error_detail}")
    return result.rps


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="fresh server pairs (default 5)")
    ap.add_argument("--slices", type=int, default=6, help="loads per variant and round, alternating (default 6)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one load (default 2)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--bascule-python", default=sys.executable, help="the interpreter whose bascule to run")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server to CPU 0 and wrk to CPU 1")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    procs.raise_nofile()
    log_dir = Path(tempfile.mkdtemp(prefix="bascule-metrics-cost-"))
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    paired: list[float] = []
    for round_no in range(args.rounds):
        with started(args, "off", log_dir) as off_port, started(args, "on", log_dir) as on_port:
            ports = {"off": off_port, "on": on_port}
            for slice_no in range(args.slices):
                order = list(VARIANTS) if (round_no + slice_no) % 2 == 0 else list(reversed(VARIANTS))
                pair = {variant: load(args, ports[variant], args.seconds) for variant in order}
                for variant, rps in pair.items():
                    figures[variant].append(rps)
                paired.append(pair["on"] / pair["off"])
                print(f"round {round_no + 1}.{slice_no + 1}: off {pair['off']:,.0f}  on {pair['on']:,.0f}  "
                      f"on/off {paired[-1]:.3f}", flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    ratio = statistics.median(paired)
    quartiles = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [ratio, ratio, ratio]
    print(f"\nASGI / ({args.connections} connections, {args.rounds} rounds x {args.slices} pairs of "
          f"{args.seconds:g} s, {args.bascule_python})")
    for name in VARIANTS:
        values = figures[name]
        print(f"metrics {name + ':':<4} median {medians[name]:,.0f} req/s (min {min(values):,.0f}, "
              f"max {max(values):,.0f})")
    print(f"on / off, median of the {len(paired)} back-to-back pairs: {ratio:.3f} (quartiles {quartiles[0]:.3f}-"
          f"{quartiles[2]:.3f}; target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    if args.out:
        args.out.write_text(json.dumps({"figures": figures, "medians": medians, "paired": paired, "ratio": ratio,
                                        "python": args.bascule_python, "connections": args.connections,
                                        "seconds": args.seconds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
