"""Micro benchmark of the wire side's write path: keep-alive requests through one connection, no sockets.

One HTTP/1.1 connection (H1Connection) and one HTTP/2 connection (H2Connection) are driven through a fake
transport and a fake loop whose ``call_soon`` only records, so each request costs exactly what the protocol
does for it: parse, dispatch, ``send_head(..., end=True)`` from the "app" (inline, as an app that never
suspends), then the end-of-pass flush. No event loop, no gateway: what changes when the write plumbing
(outbox, writer, semantics) changes is what this measures. Run it before and after such a change, on the
same build (pure Python, or compiled with mypyc), and read the ratio; absolute figures vary by machine.

  PYTHONPATH=src python benchmarks/wire_loop.py [--requests N] [--rounds R]

Timings on a shared machine drift; instruction counts do not. Per request, with callgrind:
  for n in 1000 3000; do PYTHONPATH=src valgrind --tool=callgrind --callgrind-out-file=/dev/null \
      python benchmarks/wire_loop.py --only h1 --rounds 1 --requests $n 2>&1 | grep Collected; done
  (the difference of the two counts / 2000)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import hpack

from bascule.config import Config
from bascule.context import ServerContext
from bascule.mounts import AppTable, resolve_mounts
from bascule.protocols.exchange import Exchange
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.connection import H2Connection

HEADERS = [(b"content-type", b"text/plain")]
BODY = b"Hello, world!"


class FakeLoop:
    """The slice of an event loop the protocols use on this path: call_soon records, the bench runs them."""

    def __init__(self) -> None:
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.ready.append((callback, args))

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        pass

    def time(self) -> float:
        return 0.0

    def run_ready(self) -> None:
        ready, self.ready = self.ready, []
        for callback, args in ready:
            callback(*args)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.written += len(piece)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def answer(ex: Exchange) -> None:
    ex.send_head(200, HEADERS, BODY, end=True)


def context(loop: FakeLoop) -> ServerContext:
    config = Config(app="x:y", access_log=False, http2=True, timeout_request=None)
    return ServerContext(config, loop, answer, access_log=False)  # type: ignore[arg-type]


def h1_run(n: int) -> float:
    loop = FakeLoop()
    conn = H1Connection(context(loop))
    transport = FakeTransport()
    conn.connection_made(transport)
    request = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    start = time.perf_counter()
    for _ in range(n):
        conn.data_received(request)
        loop.run_ready()
    elapsed = time.perf_counter() - start
    assert transport.written > n * 100, transport.written
    return elapsed


async def plaintext(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def asgi_run(n: int) -> float:
    """HTTP/1.1 -> ASGI: the same requests through the real gateway, on a real event loop."""
    loop = asyncio.new_event_loop()
    config = Config(app="x:y", access_log=False, timeout_request=None, lifespan="off")
    table = AppTable(config, resolve_mounts(config, plaintext))
    conn = H1Connection(ServerContext(config, loop, table.dispatch, access_log=False))
    transport = FakeTransport()
    conn.connection_made(transport)
    request = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"

    async def drive() -> float:
        start = time.perf_counter()
        for _ in range(n):
            conn.data_received(request)
            await asyncio.sleep(0)  # one loop pass: the app's task and the end-of-pass write
        return time.perf_counter() - start

    try:
        elapsed = loop.run_until_complete(drive())
    finally:
        loop.close()
    assert transport.written > n * 100, transport.written
    return elapsed


def h2_requests(n: int) -> list[bytes]:
    """n reads, each one GET on a new stream plus the WINDOW_UPDATE giving the last body's bytes back."""
    encoder = hpack.Encoder()
    reads = [fr.PREFACE + fr.settings({})]
    for i in range(n):
        sid = 2 * i + 1
        block = encoder.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/plaintext"),
                                (b":authority", b"localhost"), (b"user-agent", b"bench")])
        reads.append(fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, sid, block)
                     + fr.window_update(0, len(BODY)))
    return reads


def h2_run(n: int) -> float:
    loop = FakeLoop()
    conn = H2Connection(context(loop))
    transport = FakeTransport()
    conn.connection_made(transport)
    reads = h2_requests(n)
    conn.data_received(reads[0])
    loop.run_ready()
    start = time.perf_counter()
    for data in reads[1:]:
        conn.data_received(data)
        loop.run_ready()
    elapsed = time.perf_counter() - start
    assert not conn.closed and transport.written > n * 20, transport.written
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=("h1", "h2", "asgi"),
                        help="one protocol (for callgrind: run it at two --requests and divide the difference in "
                             "instructions by the difference in requests)")
    args = parser.parse_args()
    import bascule.protocols.h1.connection as h1mod

    print(f"compiled: {not h1mod.__file__.endswith('.py')}")
    for name, run in (("HTTP/1.1", h1_run), ("HTTP/2", h2_run), ("HTTP/1.1 -> ASGI", asgi_run)):
        if args.only is not None and name != {"h1": "HTTP/1.1", "h2": "HTTP/2", "asgi": "HTTP/1.1 -> ASGI"}[args.only]:
            continue
        run(1000)  # warm-up
        times = [run(args.requests) for _ in range(args.rounds)]
        per = [t / args.requests * 1e6 for t in times]
        print(f"{name}: best {min(per):.3f} us/request, median {statistics.median(per):.3f}")


if __name__ == "__main__":
    main()
