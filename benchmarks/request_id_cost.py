"""Micro benchmark: what request ids and JSON access lines cost per request, side by side, no sockets.

Keep-alive ``GET /`` requests go through one HTTP/1.1 connection (a fake transport) into the real ASGI gateway
on a real event loop (uvloop when installed), as benchmarks/wire_loop.py's ``asgi`` case, under these settings:

- ``baseline``: no access log, no request ids;
- ``request-id``: ``--request-id on``, the client sends no id (one is made, added to the request, echoed);
- ``request-id, trusted``: the same with a valid ``X-Request-ID`` from a trusted (loopback) peer;
- ``text log`` / ``json log``: the access log on (bascule's own handler, writing to a null stream), the default
  template or ``json`` (which turns request ids on: ``--request-id auto``).

The differences between rows are the per-request costs. Run on one build (pure Python, or compiled with mypyc)
and read the differences; absolute figures vary by machine and load.

  PYTHONPATH=src python benchmarks/request_id_cost.py [--requests N] [--rounds R]

Timings on a shared machine drift; instruction counts do not. Per request, with callgrind, for each case:
  for n in 1000 3000; do PYTHONPATH=src valgrind --tool=callgrind --callgrind-out-file=/dev/null \
      python benchmarks/request_id_cost.py --only baseline --rounds 1 --requests $n 2>&1 | grep Collected; done
  (the difference of the two counts / 2000)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import sys
import time
from typing import Any

from bascule.config import Config
from bascule.context import ServerContext
from bascule.logs import configure_logging
from bascule.mounts import AppTable, resolve_mounts
from bascule.protocols.h1.connection import H1Connection

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from wire_loop import FakeTransport, plaintext  # the sibling benchmark's doubles

PLAIN = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
WITH_ID = (b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\n"
           b"X-Request-ID: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\r\n")

CASES: list[tuple[str, dict[str, Any], bytes]] = [
    ("baseline", {"access_log": False, "request_id": "off"}, PLAIN),
    ("request-id", {"access_log": False, "request_id": "on"}, PLAIN),
    ("request-id, trusted", {"access_log": False, "request_id": "on"}, WITH_ID),
    ("text log", {"access_log": True, "request_id": "off"}, PLAIN),
    ("json log (ids on)", {"access_log": True, "access_log_format": "json"}, PLAIN),
]


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(options: dict[str, Any], request: bytes, n: int) -> float:
    loop = new_loop()
    config = Config(app="x:y", timeout_request=None, lifespan="off", **options)
    saved = sys.stdout
    sys.stdout = io.StringIO()  # bascule's access handler writes here; emptied between rounds
    try:
        configure_logging(config)
        table = AppTable(config, resolve_mounts(config, plaintext))
        conn = H1Connection(ServerContext(config, loop, table.dispatch, access_log=config.access_log))
        transport = FakeTransport()
        conn.connection_made(transport)

        done = loop.create_future()
        left = n

        def feed() -> None:
            """One request per loop pass, from a plain callback as a transport calls data_received (inside a
            task, the gateway could not start the app's task eagerly)."""
            nonlocal left
            if not left:
                done.set_result(None)
                return
            left -= 1
            conn.data_received(request)
            loop.call_soon(feed)  # after the end-of-pass flush the request scheduled

        start = time.perf_counter()
        loop.call_soon(feed)
        loop.run_until_complete(done)
        elapsed = time.perf_counter() - start
        assert transport.written > n * 100, transport.written
        return elapsed
    finally:
        sys.stdout = saved
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=[name for name, _, _ in CASES],
                        help="one case (for callgrind: run it at two --requests, divide the difference in instructions "
                             "by the difference in requests)")
    args = parser.parse_args()
    import bascule.accesslog as accesslog

    logging.getLogger("bascule.error").setLevel(logging.ERROR)
    print(f"compiled: {not accesslog.__file__.endswith('.py')}")
    cases = [case for case in CASES if args.only in (None, case[0])]
    for _, options, request in cases:
        run(options, request, 1000)  # warm-up
    per: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.rounds):  # interleaved: a drift of the machine's speed hits every case alike
        for name, options, request in cases:
            per[name].append(run(options, request, args.requests) / args.requests * 1e6)
    base = statistics.median(per["baseline"]) if "baseline" in per else 0.0
    for name, times in per.items():
        median = statistics.median(times)
        print(f"{name:22s} median {median:7.3f} us/request (best {min(times):.3f}), "
              f"{median - base:+.3f} us vs baseline")

if __name__ == "__main__":
    main()
