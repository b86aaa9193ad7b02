"""HTTP/2 floods (issue 7, acceptance 3 and "Protection"): what one hostile connection can make bascule spend.

Each test starts ``python -m bascule`` on cleartext HTTP/2 (prior knowledge) serving
tests/integration/apps/it_h2_flood_app.py, an ASGI app that counts its calls per path and how many of
its invocations run at once (``/stats``). An attacker connection (raw frames from this file: frame
headers with ``struct``, header blocks with ``hpack``) then does one of:

1. rapid reset (CVE-2023-44487): HEADERS + RST_STREAM(CANCEL) pairs to a path whose app sleeps, as fast
   as the socket takes them (burst, reconnecting after each GOAWAY), and paced just under the reset budget;
2. CONTINUATION flood (CVE-2024-27316 family): HEADERS without END_HEADERS, then CONTINUATION frames
   carrying header bytes, empty ones, and full-size ones;
3. HPACK bomb: one 4 KB dynamic-table entry, then a block of 16,000 one-byte references to it (~66 MB if
   decoded whole); and the same bomb sent again and again on a stream the server already reset;
4. PING and SETTINGS floods from a client that never reads (SO_RCVBUF 4 KB), and SETTINGS frames of
   2,730 entries each (the most a 16 KB frame holds) while 100 streams are open;
5. "MadeYouReset": frames that make the server reset streams (WINDOW_UPDATE of 0, DATA after END_STREAM,
   malformed requests) in a loop;
6. header validation: malformed fields get RST_STREAM(PROTOCOL_ERROR), the app is not called, and the
   connection still serves the next request;
7. idle and slow clients: 200 connections that send only the preface, and a header block left unfinished.

Meanwhile a legitimate client on another connection (httpx, HTTP/2 prior knowledge) keeps requesting
``/legit``. "Bounded" here means, for every attack:

- the attacker gets GOAWAY (ENHANCE_YOUR_CALM where a budget is the reason) and the connection closes
  after a number of frames fixed by the server's budgets (RESETS_PER_TICK, CONTROL_PER_TICK,
  MAX_BLOCK_FRAMES, limit_request_header_size), not by how much the attacker sends;
- the server's resident memory (VmRSS of the process, sampled every 10 ms) grows by less than 30 MB;
- the app's concurrent invocations stay within a small multiple of SETTINGS_MAX_CONCURRENT_STREAMS;
- the legitimate client sees no failure, is served at least a handful of times during the attack, and no
  request of it takes longer than 1 s (its median on an idle server is ~2 ms): the event loop is never
  held for long by one connection's frames. The server's CPU time during each attack is reported.

Numbers measured on each run are printed (``pytest -s`` shows them) for the issue's closing note.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hpack
import httpx
import pytest
from conftest import Running
from it_support import APPS, wait_for

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID"),
              pytest.mark.timeout(20)]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PROTOCOL_ERROR, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x1, 0x8, 0x9, 0xB
NAMES = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x5: "STREAM_CLOSED", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
         0x9: "COMPRESSION_ERROR", 0xB: "ENHANCE_YOUR_CALM"}

RSS_LIMIT_MB = 30.0
LEGIT_MAX_LATENCY = 1.0  # seconds: no legitimate request waits this long
LEGIT_MIN_SERVED = 5  # legitimate requests completed during each attack, at the least
MAX_STREAMS = 100  # bascule's default SETTINGS_MAX_CONCURRENT_STREAMS
RESETS_PER_TICK = 200  # src/bascule/protocols/stream_table.py
CONTROL_PER_TICK = 2000
MAX_BLOCK_FRAMES = 64
# the highest stream id a GOAWAY for too many resets may name: two budgets' worth of client streams (a tick
# may refill the budget once while the flood is read)
RESET_LAST_STREAM = 2 * (2 * RESETS_PER_TICK + 1) - 1


# -- frames -------------------------------------------------------------------------------------------------

def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBL", n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def rst(sid: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">L", code))


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">L", increment))


def request_fields(path: str, method: str = "GET", extra: list[tuple[str, str]] | None = None) -> list[Any]:
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"), *(extra or [])]


@dataclass
class Frame:
    type: int
    flags: int
    sid: int
    payload: bytes

    @property
    def code(self) -> int:
        """The error code of a RST_STREAM or GOAWAY."""
        return struct.unpack_from(">L", self.payload, 4 if self.type == GOAWAY else 0)[0]

    @property
    def last_stream(self) -> int:
        return struct.unpack_from(">L", self.payload)[0] & 0x7FFFFFFF

    def __repr__(self) -> str:
        if self.type == GOAWAY:
            return (f"GOAWAY({NAMES.get(self.code, hex(self.code))}, last_stream={self.last_stream}, "
                    f"{self.payload[8:80]!r})")
        if self.type == RST_STREAM:
            return f"RST_STREAM({self.sid}, {NAMES.get(self.code, hex(self.code))})"
        return f"Frame(type={self.type}, flags={self.flags:#x}, stream={self.sid}, {len(self.payload)} bytes)"


class RawH2:
    """One cleartext HTTP/2 connection with prior knowledge: raw frames out, parsed frames in."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, preface: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.encoder = hpack.Encoder()
        self.frames: list[Frame] = []
        self.closed = ""  # why reading stopped: "EOF" or the error
        self._buf = b""
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0))

    def block(self, fields: list[Any]) -> bytes:
        """An HPACK block from this connection's encoder (send every block made, in order)."""
        return bytes(self.encoder.encode(fields))

    def send(self, data: bytes, timeout: float = 2.0) -> bool:
        """sendall; False once the server has closed or reset the connection (or stopped reading for ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def poll(self, timeout: float = 0.0) -> list[Frame]:
        """Frames that arrived within ``timeout`` (0: only those already here); sets ``closed`` on EOF/reset."""
        new: list[Frame] = []
        end = time.monotonic() + timeout
        while not self.closed:
            remaining = end - time.monotonic()
            if timeout <= 0 or new:
                self.sock.setblocking(False)  # only what is already here
            elif remaining <= 0:
                break
            else:
                self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, TimeoutError):
                break
            except OSError as exc:
                self.closed = type(exc).__name__
                break
            if not data:
                self.closed = "EOF"
                break
            self._buf += data
            new.extend(self._parse())
        return new

    def _parse(self) -> list[Frame]:
        out, buf, pos = [], self._buf, 0
        while len(buf) - pos >= 9:
            hi, lo, ftype, flags, sid = struct.unpack_from(">BHBBL", buf, pos)
            n = hi << 16 | lo
            if len(buf) - pos - 9 < n:
                break
            out.append(Frame(ftype, flags, sid & 0x7FFFFFFF, buf[pos + 9:pos + 9 + n]))
            pos += 9 + n
        self._buf = buf[pos:]
        self.frames.extend(out)
        return out

    def wait(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> Frame | None:
        """The first frame (already received or arriving within ``timeout``) that satisfies ``predicate``."""
        for f in self.frames:
            if predicate(f):
                return f
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            for f in self.poll(min(0.1, end - time.monotonic())):
                if predicate(f):
                    return f
        return None

    def barrier(self, timeout: float = 8.0) -> float | None:
        """PING and wait for its ACK: the seconds until the server had handled everything sent before it."""
        began = time.monotonic()
        token = struct.pack(">d", began)
        if not self.send(frame(PING, 0, 0, token)):
            return None
        ack = self.wait(lambda f: f.type == PING and bool(f.flags & ACK) and f.payload == token, timeout)
        return None if ack is None else time.monotonic() - began

    def goaway(self) -> Frame | None:
        return next((f for f in self.frames if f.type == GOAWAY), None)

    def wait_closed(self, timeout: float = 5.0) -> Frame | None:
        """Read until the server closes the connection (or ``timeout``); its GOAWAY, if one came."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            self.poll(min(0.2, end - time.monotonic()))
        return self.goaway()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def blast(conn: RawH2, chunk: Callable[[int], bytes], *, units_per_chunk: int, max_units: int,
          max_seconds: float) -> tuple[int, float]:
    """Send ``chunk(i)`` for i = 0, 1, ... as fast as the socket takes them, reading what comes back between
    sends, until GOAWAY, the connection closes, ``max_units`` or ``max_seconds``. Returns (units sent, seconds)."""
    start, sent, i = time.monotonic(), 0, 0
    while sent < max_units and time.monotonic() - start < max_seconds:
        if not conn.send(chunk(i), timeout=max(0.05, max_seconds - (time.monotonic() - start))):
            break
        sent += units_per_chunk
        i += 1
        conn.poll()
        if conn.goaway() or conn.closed:
            break
    return sent, time.monotonic() - start


# -- the server and what we measure of it ---------------------------------------------------------------------

def proc_status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class FloodServer:
    running: Running
    pid: int

    @property
    def port(self) -> int:
        return self.running.port

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.running.url}/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@pytest.fixture
def flood_server(cli_server: Callable[..., contextlib.AbstractContextManager[Running]]
                 ) -> Callable[..., contextlib.AbstractContextManager[FloodServer]]:
    """``with flood_server(*extra_flags) as srv:`` bascule as a process serving it_h2_flood_app, h2c on."""

    @contextlib.contextmanager
    def start(*extra: str) -> Iterator[FloodServer]:
        args = ["it_h2_flood_app:app", "--http2", "--no-access-log", "--log-level", "warning",
                "--timeout-request-head", "1", *extra]
        with cli_server(args, cwd=APPS) as running:
            assert running.proc is not None
            server = FloodServer(running, running.proc.pid)
            server.stats()  # the app is up (lifespan done) before the clock starts
            yield server

    return start


@dataclass
class Watch:
    """What a legitimate client and a memory sampler saw while an attack ran (see :func:`watched`)."""

    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss_start_kb: int = 0
    rss_peak_kb: int = 0
    cpu: float = 0.0
    elapsed: float = 0.0

    @property
    def rss_growth_mb(self) -> float:
        return (self.rss_peak_kb - self.rss_start_kb) / 1024

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        return (f"legit {self.ok} ok / {len(self.failures)} failed, latency median "
                f"{statistics.median(lat) * 1000:.1f} ms max {lat[-1] * 1000:.1f} ms; "
                f"RSS +{self.rss_growth_mb:.1f} MB; server CPU {self.cpu:.2f} s in {self.elapsed:.2f} s")

    def check(self, min_served: int = LEGIT_MIN_SERVED) -> None:
        """The acceptance bounds shared by every attack."""
        assert not self.failures, f"legitimate requests failed during the attack: {self.failures[:3]}"
        assert self.ok >= min_served, f"only {self.ok} legitimate requests served during the attack"
        worst = max(self.latencies)
        assert worst < LEGIT_MAX_LATENCY, (
            f"a legitimate request on another connection took {worst:.2f} s during the attack: one connection's "
            f"frames held the server's event loop ({self.summary()})")
        assert self.rss_growth_mb < RSS_LIMIT_MB, f"server RSS grew by {self.rss_growth_mb:.1f} MB"


@contextlib.contextmanager
def watched(server: FloodServer, label: str) -> Iterator[Watch]:
    """Run a legitimate HTTP/2 client (another connection) and a VmRSS sampler around the attack in the body."""
    watch = Watch()
    stop = threading.Event()
    watch.rss_start_kb = watch.rss_peak_kb = proc_status_kb(server.pid, "VmRSS")

    def legit() -> None:
        with httpx.Client(http1=False, http2=True, base_url=server.running.url, timeout=10) as client:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    response = client.get("/legit")
                    if response.status_code != 200 or response.content != b"ok":
                        watch.failures.append(f"{response.status_code} {response.content[:80]!r}")
                    else:
                        watch.ok += 1
                except httpx.HTTPError as exc:
                    watch.failures.append(repr(exc))
                watch.latencies.append(time.monotonic() - began)
                stop.wait(0.01)

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, AssertionError):
                watch.rss_peak_kb = max(watch.rss_peak_kb, proc_status_kb(server.pid, "VmRSS"))
            stop.wait(0.01)

    threads = [threading.Thread(target=legit, daemon=True), threading.Thread(target=sample, daemon=True)]
    for thread in threads:
        thread.start()
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    try:
        yield watch
        stop.wait(0.2)  # the legitimate client is also served just after the attack
    finally:
        watch.elapsed = time.monotonic() - t0
        watch.cpu = cpu_seconds(server.pid) - cpu0
        stop.set()
        for thread in threads:
            thread.join(15)
        print(f"\n[{label}] {watch.summary()}")


# -- 1. rapid reset ----------------------------------------------------------------------------------------

def test_rapid_reset_burst(flood_server: Callable[..., Any]) -> None:
    """HEADERS + RST_STREAM(CANCEL) pairs as fast as possible, reconnecting after each GOAWAY, for 3 s
    (at most 20,000 pairs per connection): every connection gets GOAWAY(ENHANCE_YOUR_CALM) after a few hundred
    streams, the sleeping app does not pile up, memory stays flat and the legitimate client is served."""
    with flood_server() as srv, watched(srv, "rapid reset, burst") as watch:
        results = []
        start = time.monotonic()
        while time.monotonic() - start < 3.0 and len(results) < 50:
            conn = RawH2(srv.port)
            block = conn.block(request_fields("/sleep?2"))

            def pairs(i: int, block: bytes = block) -> bytes:
                return b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid, block) + rst(sid)
                                for sid in range(1 + 200 * i, 201 + 200 * i, 2))

            sent, seconds = blast(conn, pairs, units_per_chunk=100, max_units=20_000, max_seconds=5.0)
            goaway = conn.wait_closed(3.0)
            results.append((sent, seconds, goaway, conn.closed))
            conn.close()
        stats = srv.stats()
    last_streams = sorted({r[2].last_stream if r[2] else None for r in results}, key=str)
    print(f"[rapid reset, burst] {len(results)} connections; pairs sent before GOAWAY/close: "
          f"{[r[0] for r in results][:8]}...; GOAWAY last_stream values: {last_streams}"
          f"; app /sleep calls {stats['calls'].get('/sleep', 0)}, peak concurrent {stats['peak']}")
    for sent, seconds, goaway, closed in results:
        assert goaway is not None, f"no GOAWAY after {sent} pairs in {seconds:.2f} s (closed: {closed!r})"
        assert goaway.code == ENHANCE_YOUR_CALM, goaway
        assert closed, "the connection stayed open after GOAWAY"
        # the server stops after its reset budget (plus a budget more if a tick refilled it meanwhile); what the
        # client got into the socket buffers before it saw GOAWAY is larger, and says nothing about the server
        assert goaway.last_stream <= RESET_LAST_STREAM, goaway
    assert stats["peak"] <= 2 * MAX_STREAMS, f"app invocations piled up: {stats}"
    watch.check()


@pytest.mark.timeout(25)
def test_rapid_reset_paced_under_budget(flood_server: Callable[..., Any]) -> None:
    """The same pairs, paced at ~300 per second (under RESETS_PER_TICK per 0.5 s tick) so that each stream
    is dispatched before its RST_STREAM arrives, for 3 s, against an app that sleeps 3 s without reading.

    A reset does not cancel the app's task (ASGI: the app learns of it from ``http.disconnect``), so unless
    the server keeps counting reset-but-still-running invocations against the connection's stream limit
    (as Go's net/http2 does since CVE-2023-44487), they accumulate at the paced rate times the app's
    duration, whatever SETTINGS_MAX_CONCURRENT_STREAMS says. Bound asserted: 2 x MAX_CONCURRENT_STREAMS."""
    with flood_server() as srv, watched(srv, "rapid reset, paced") as watch:
        conn = RawH2(srv.port)
        block = conn.block(request_fields("/sleep?3"))
        sid, pairs, start = 1, 0, time.monotonic()
        while time.monotonic() - start < 3.0 and not conn.closed and not conn.goaway():
            ids = range(sid, sid + 100, 2)
            sid += 100
            if not conn.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, i, block) for i in ids)):
                break
            time.sleep(0.01)  # let the server dispatch them
            if not conn.send(b"".join(rst(i) for i in ids)):
                break
            pairs += len(ids)
            time.sleep(0.15)
            conn.poll()
        elapsed = time.monotonic() - start
        stats = srv.stats()
        goaway = conn.goaway()
        conn.close()
    print(f"[rapid reset, paced] {pairs} pairs in {elapsed:.2f} s, GOAWAY {goaway}; app /sleep "
          f"calls {stats['calls'].get('/sleep', 0)}, running now {stats['active']}, peak concurrent {stats['peak']}")
    watch.check()
    assert stats["peak"] <= 2 * MAX_STREAMS, (
        f"{stats['peak']} app invocations ran at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS is "
        f"{MAX_STREAMS}): streams reset by the client free their slot while their app task keeps running, so a "
        f"client pacing resets under the budget piles up work without bound")


# -- 2. CONTINUATION flood -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["header-bytes", "empty", "full-size"])
def test_continuation_flood(flood_server: Callable[..., Any], kind: str) -> None:
    """HEADERS without END_HEADERS, then endless CONTINUATION frames (HPACK literal fields of ~1 KB, empty
    ones, or 16 KB ones); reconnecting after each GOAWAY for 2 s: GOAWAY(ENHANCE_YOUR_CALM) once the block
    is over MAX_BLOCK_FRAMES frames or limit_request_header_size bytes."""
    literal = b"\x00\x06x-fill\x7f\xe9\x06" + b"v" * 1000  # literal without indexing, 1000-byte value
    assert hpack.Decoder().decode(literal) == [("x-fill", "v" * 1000)]
    payload = {"header-bytes": literal, "empty": b"", "full-size": literal * 16}[kind]
    per_chunk = 4
    with flood_server() as srv, watched(srv, f"CONTINUATION flood, {kind}") as watch:
        results = []
        start = time.monotonic()
        while time.monotonic() - start < 2.0 and len(results) < 50:
            conn = RawH2(srv.port)
            head = frame(HEADERS, END_STREAM, 1, conn.block(request_fields("/flood")))

            def continuations(i: int, head: bytes = head) -> bytes:
                return (head if i == 0 else b"") + frame(CONTINUATION, 0, 1, payload) * per_chunk

            sent, seconds = blast(conn, continuations, units_per_chunk=per_chunk, max_units=100_000, max_seconds=3.0)
            goaway = conn.wait_closed(3.0)
            results.append((sent, seconds, goaway, conn.closed))
            conn.close()
        stats = srv.stats()
    print(f"[CONTINUATION flood, {kind}] {len(results)} connections; CONTINUATION frames sent before GOAWAY/close: "
          f"{sorted({r[0] for r in results})}; GOAWAY {results[0][2]}")
    for sent, seconds, goaway, closed in results:
        assert goaway is not None and goaway.code == ENHANCE_YOUR_CALM, (sent, seconds, goaway, closed)
        assert closed
        # what the client sent before it saw GOAWAY is what fits in the socket buffers; the server's
        # bound (64 frames or 64 KB) is what lets GOAWAY come at all
        assert sent < 100_000
    assert stats["calls"].get("/flood", 0) == 0
    watch.check()


@pytest.mark.parametrize(("frames", "served"), [(MAX_BLOCK_FRAMES - 1, True), (MAX_BLOCK_FRAMES + 1, False)])
def test_continuation_limit_is_the_frame_count(flood_server: Callable[..., Any], frames: int, served: bool) -> None:
    """The bound is exact: a block of HEADERS + 63 empty CONTINUATION frames is a request; one of 65 is not."""
    with flood_server() as srv:
        conn = RawH2(srv.port)
        block = conn.block(request_fields("/count"))
        data = frame(HEADERS, END_STREAM, 1, block) + frame(CONTINUATION, 0, 1) * (frames - 1)
        conn.send(data + frame(CONTINUATION, END_HEADERS, 1))
        if served:
            end = conn.wait(lambda f: f.type == DATA and f.sid == 1 and bool(f.flags & END_STREAM))
            assert end is not None and end.payload == b"ok", conn.frames
        else:
            goaway = conn.wait_closed()
            assert goaway is not None and goaway.code == ENHANCE_YOUR_CALM, conn.frames
        conn.close()


# -- 3. HPACK bomb -------------------------------------------------------------------------------------------

def bomb_blocks(conn: RawH2) -> tuple[bytes, bytes]:
    """A request that adds a ~4 KB entry to the dynamic table, and a block of 16,000 references to it."""
    value = b"b" * 4000  # entry size 4000 + 6 + 32 octets: fits the default 4,096-octet table
    # literal with incremental indexing, new name: the entry becomes index 62, the newest in the dynamic table
    seed = conn.block(request_fields("/seed")) + b"\x40\x06x-bomb\x7f" + _hpack_int(len(value) - 127) + value
    refs = b"\x82\x86\x84" + b"\xbe" * 16_000  # :method GET, :scheme http, :path /, then index 62 x 16,000
    return seed, refs


def _hpack_int(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_hpack_bomb(flood_server: Callable[..., Any]) -> None:
    """16,000 one-byte references to a 4 KB entry would decode to ~66 MB: the server stops at
    limit_request_header_size and answers GOAWAY (ENHANCE_YOUR_CALM or COMPRESSION_ERROR), quickly."""
    with flood_server() as srv, watched(srv, "HPACK bomb") as watch:
        outcomes = []
        start = time.monotonic()
        while time.monotonic() - start < 2.0 and len(outcomes) < 40:
            conn = RawH2(srv.port)
            seed, refs = bomb_blocks(conn)
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, seed))
            seeded = conn.wait(lambda f: f.type == DATA and f.sid == 1 and bool(f.flags & END_STREAM))
            assert seeded is not None, f"the seeding request was not served: {conn.frames}"
            began = time.monotonic()
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, refs))
            goaway = conn.wait_closed(3.0)
            outcomes.append((time.monotonic() - began, goaway, conn.closed))
            conn.close()
    print(f"[HPACK bomb] {len(outcomes)} bombs; GOAWAY {outcomes[0][1]}; slowest answer "
          f"{max(o[0] for o in outcomes) * 1000:.1f} ms")
    for seconds, goaway, closed in outcomes:
        assert goaway is not None and goaway.code in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR), (goaway, closed)
        assert closed
        assert seconds < 1.0
    watch.check()


def test_hpack_bomb_on_a_reset_stream(flood_server: Callable[..., Any]) -> None:
    """The bomb again and again as HEADERS on a stream the server has reset (stream 1, malformed request).

    RFC 9113 makes the server decode such a block to keep its HPACK state, but each decode of 16 KB of
    references runs until the header-list limit (~5 ms of Python), so such blocks cannot be free: at most 400
    are sent (~2 s of decoding if none is refused). Expected: other connections keep normal latency, and
    GOAWAY(ENHANCE_YOUR_CALM) - a header list over SETTINGS_MAX_HEADER_LIST_SIZE ends the connection on a new
    stream, and should on a reset one too."""
    with flood_server() as srv, watched(srv, "HPACK bomb on a reset stream") as watch:
        conn = RawH2(srv.port)
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, conn.block(request_fields("/x", extra=[("Bad", "1")]))))
        reset = conn.wait(lambda f: f.type == RST_STREAM and f.sid == 1)
        assert reset is not None and reset.code == PROTOCOL_ERROR, conn.frames
        bomb = frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x82" * 16_000)  # :method GET x 16,000
        sent, seconds = blast(conn, lambda i: bomb, units_per_chunk=1, max_units=400, max_seconds=3.0)
        handled = None if conn.goaway() or conn.closed else conn.barrier()  # until the server has decoded them all
        goaway = conn.wait_closed(2.0) if conn.goaway() or conn.closed else None
        conn.close()
    print(f"[HPACK bomb on a reset stream] {sent} bomb frames sent in {seconds:.2f} s, all handled "
          f"{handled and f'{handled:.2f}'} s after; GOAWAY {goaway}")
    watch.check()
    assert goaway is not None and goaway.code == ENHANCE_YOUR_CALM, (
        f"{sent} HEADERS frames of 16,000 HPACK references each on reset stream 1 were decoded without any budget "
        f"({watch.summary()})")


# -- 4. PING and SETTINGS floods -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
def test_control_flood_from_a_client_that_never_reads(flood_server: Callable[..., Any], kind: str) -> None:
    """Up to 100,000 PING (or empty-ish SETTINGS) frames in 5 s from a client with a 4 KB receive buffer
    that never reads the acknowledgements: the server closes the connection after CONTROL_PER_TICK frames in
    a tick (its GOAWAY may be stuck behind the unread answers, so a reset also counts), memory stays flat."""
    one = frame(PING, 0, 0, b"12345678") if kind == "PING" else frame(SETTINGS, 0, 0, struct.pack(">HL", 3, 100))
    with flood_server() as srv, watched(srv, f"{kind} flood") as watch:
        conn = RawH2(srv.port, rcvbuf=4096)
        start, sent = time.monotonic(), 0
        while sent < 100_000 and time.monotonic() - start < 5.0:
            if not conn.send(one * 1000, timeout=0.5):
                break
            sent += 1000
        elapsed = time.monotonic() - start
        # Now read: acknowledgements, then GOAWAY or a reset. Closed means the server gave up on the connection.
        goaway = conn.wait_closed(3.0)
        acks = sum(1 for f in conn.frames if f.type == (PING if kind == "PING" else SETTINGS) and f.flags & ACK)
        conn.close()
    print(f"[{kind} flood] {sent} frames accepted by the socket in {elapsed:.2f} s; server answered {acks} ACKs "
          f"then {goaway or conn.closed}")
    assert conn.closed, "the connection is still open after the flood"
    assert goaway is None or goaway.code == ENHANCE_YOUR_CALM, goaway
    assert acks <= 3 * CONTROL_PER_TICK
    watch.check()


def test_settings_with_many_entries(flood_server: Callable[..., Any]) -> None:
    """SETTINGS frames of 2,730 INITIAL_WINDOW_SIZE entries each (16 KB), values alternating, while 100
    streams are open: each entry changes every stream's window, so one frame is ~273,000 updates yet
    counts once against CONTROL_PER_TICK. At most 100 such frames (1.6 MB) in at most 2 s: the server must
    charge for the work (GOAWAY) or stay responsive; other connections keep normal latency."""
    entries = b"".join(struct.pack(">HL", 4, 65535 + (i & 1)) for i in range(2730))
    big = frame(SETTINGS, 0, 0, entries)
    with flood_server() as srv:
        conn = RawH2(srv.port)
        block = conn.block(request_fields("/hold", method="POST"))
        conn.send(b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, block) for i in range(MAX_STREAMS)))
        assert conn.wait(lambda f: f.type == SETTINGS and not f.flags & ACK) is not None
        time.sleep(0.2)
        with watched(srv, "SETTINGS with 2,730 entries") as watch:
            sent, seconds = blast(conn, lambda i: big, units_per_chunk=1, max_units=100, max_seconds=2.0)
            handled = None if conn.goaway() or conn.closed else conn.barrier()  # until the server has applied them
        goaway = conn.goaway()
        conn.close()
    print(f"[SETTINGS with 2,730 entries] {sent} frames sent in {seconds:.2f} s, all handled "
          f"{handled and f'{handled:.2f}'} s after; GOAWAY {goaway}")
    watch.check()


@pytest.mark.parametrize("kind", ["empty-DATA", "RST_STREAM"])
def test_cheap_frames_on_a_reset_stream(flood_server: Callable[..., Any], kind: str) -> None:
    """Empty DATA frames (CVE-2019-9518) or RST_STREAM frames (CVE-2019-9514) on stream 1 after the server has
    reset it, up to 1,000,000 frames in at most 1.5 s. Empty DATA on an open stream, PING, SETTINGS, PRIORITY
    and WINDOW_UPDATE are all charged to CONTROL_PER_TICK; frames on a stream we reset must not be the one
    free kind. Expected: GOAWAY(ENHANCE_YOUR_CALM) after a budget, and other connections keep normal latency."""
    one = frame(DATA, 0, 1) if kind == "empty-DATA" else rst(1)
    with flood_server() as srv, watched(srv, f"{kind} on a reset stream") as watch:
        conn = RawH2(srv.port)
        conn.send(frame(HEADERS, END_HEADERS, 1, conn.block(request_fields("/x", "POST", extra=[("Bad", "1")]))))
        reset = conn.wait(lambda f: f.type == RST_STREAM and f.sid == 1)
        assert reset is not None and reset.code == PROTOCOL_ERROR, conn.frames
        sent, seconds = blast(conn, lambda i: one * 10_000, units_per_chunk=10_000, max_units=1_000_000,
                              max_seconds=1.5)
        handled = None if conn.goaway() or conn.closed else conn.barrier()
        goaway = conn.wait_closed(2.0) if conn.goaway() or conn.closed else None
        conn.close()
    print(f"[{kind} on a reset stream] {sent} frames sent in {seconds:.2f} s, all handled "
          f"{handled and f'{handled:.2f}'} s after; GOAWAY {goaway}")
    assert goaway is not None and goaway.code == ENHANCE_YOUR_CALM, (
        f"{sent} {kind} frames on reset stream 1 were handled without any budget ({watch.summary()})")
    watch.check()


# -- 5. MadeYouReset -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["window-update-0", "data-after-end-stream", "malformed-request"])
def test_made_you_reset(flood_server: Callable[..., Any], kind: str) -> None:
    """Frames that make the server reset streams it opened, in a loop: each reset counts against
    RESETS_PER_TICK, so GOAWAY(ENHANCE_YOUR_CALM) follows after a few hundred streams."""
    with flood_server() as srv, watched(srv, f"MadeYouReset, {kind}") as watch:
        conn = RawH2(srv.port)
        if kind == "malformed-request":
            block = conn.block(request_fields("/made", extra=[("connection", "close")]))
        else:
            block = conn.block(request_fields("/sleep?2"))

        def streams(i: int) -> bytes:
            out = []
            for sid in range(1 + 100 * i, 101 + 100 * i, 2):
                if kind == "window-update-0":
                    out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block) + window_update(sid, 0))
                elif kind == "data-after-end-stream":
                    out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block) + frame(DATA, 0, sid, b"x"))
                else:
                    out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
            return b"".join(out)

        sent, seconds = blast(conn, streams, units_per_chunk=50, max_units=20_000, max_seconds=5.0)
        goaway = conn.wait_closed(3.0)
        resets = sum(1 for f in conn.frames if f.type == RST_STREAM)
        conn.close()
        stats = srv.stats()
    print(f"[MadeYouReset, {kind}] {sent} streams sent in {seconds:.2f} s; server reset {resets} then {goaway}; "
          f"app peak concurrent {stats['peak']}")
    assert goaway is not None and goaway.code == ENHANCE_YOUR_CALM, (goaway, conn.closed, resets)
    assert conn.closed
    assert goaway.last_stream <= RESET_LAST_STREAM, goaway
    assert stats["peak"] <= 2 * MAX_STREAMS, stats
    if kind == "malformed-request":
        assert stats["calls"].get("/made", 0) == 0
    watch.check()


# -- 6. header validation ------------------------------------------------------------------------------------

BAD_FIELDS = {
    "uppercase-name": [("X-Upper", "1")],
    "connection": [("connection", "keep-alive")],
    "transfer-encoding": [("transfer-encoding", "chunked")],
    "keep-alive": [("keep-alive", "timeout=5")],
    "proxy-connection": [("proxy-connection", "keep-alive")],
    "upgrade": [("upgrade", "websocket")],
    "te-gzip": [("te", "gzip")],
    "cr-in-value": [("x-a", "1\r2")],
    "lf-in-value": [("x-a", "1\n2")],
    "nul-in-value": [("x-a", "1\x002")],
    "space-in-name": [("x a", "1")],
    "colon-in-name": [("x:a", "1")],
    "empty-name": [("", "1")],
    "leading-space-in-value": [("x-a", " 1")],
}


@pytest.mark.timeout(10)
def test_header_validation(flood_server: Callable[..., Any]) -> None:
    """Each malformed request gets RST_STREAM(PROTOCOL_ERROR) on its own stream, the app is never called for it,
    and the same connection then serves a valid request (te: trailers is valid)."""
    with flood_server() as srv:
        conn = RawH2(srv.port)
        sid = 1
        for case, extra in BAD_FIELDS.items():
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                            conn.block(request_fields(f"/bad-{case}", extra=extra))))
            reset = conn.wait(lambda f, sid=sid: f.sid == sid and f.type in (RST_STREAM, HEADERS, GOAWAY))
            assert reset is not None and reset.type == RST_STREAM and reset.code == PROTOCOL_ERROR, (case, reset)
            sid += 2
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                            conn.block(request_fields(f"/good-after-{case}", extra=[("te", "trailers")]))))
            ok = conn.wait(lambda f, sid=sid: (f.sid == sid and f.type in (DATA, RST_STREAM)) or f.type == GOAWAY)
            assert ok is not None and ok.type == DATA and ok.payload == b"ok", (case, ok)
            sid += 2
        assert not conn.closed and conn.goaway() is None
        conn.close()
        calls = srv.stats()["calls"]
    print(f"[header validation] {len(BAD_FIELDS)} malformed requests reset, app calls: {calls}")
    assert not [path for path in calls if path.startswith("/bad-")], calls
    assert sum(1 for path in calls if path.startswith("/good-after-")) == len(BAD_FIELDS)


# -- 7. idle and slow clients ----------------------------------------------------------------------------------

@pytest.mark.timeout(15)
def test_idle_and_slow_connections_are_closed(flood_server: Callable[..., Any]) -> None:
    """With timeout_request_head = 1 s: 200 connections that send only the preface, and 20 that leave a header
    block unfinished (HEADERS without END_HEADERS, then silence), are all closed within 1 s + a tick or two;
    the server's descriptors return to where they were; the legitimate client is served throughout."""
    with flood_server() as srv:
        fds_before = srv.fds()
        with watched(srv, "200 idle + 20 slow connections") as watch:
            start = time.monotonic()
            idle = [RawH2(srv.port, preface=False) for _ in range(200)]
            for conn in idle:
                conn.send(PREFACE)
            slow = [RawH2(srv.port) for _ in range(20)]
            for conn in slow:
                conn.send(frame(HEADERS, END_STREAM, 1, conn.block(request_fields("/slow"))[:-2]))
            opened = time.monotonic() - start
            wait_for(lambda: srv.fds() >= fds_before + 220, timeout=1.0)
            fds_peak = srv.fds()
            closed_after = []
            for conn in idle + slow:
                conn.wait_closed(max(0.1, start + 4.0 - time.monotonic()))
                closed_after.append(time.monotonic() - start)
            still_open = [conn for conn in idle + slow if not conn.closed]
            goaways = [conn.goaway() for conn in slow]
            for conn in idle + slow:
                conn.close()
        deadline = time.monotonic() + 3
        while srv.fds() > fds_before and time.monotonic() < deadline:
            time.sleep(0.05)
        fds_after = srv.fds()
        calls = srv.stats()["calls"]
    print(f"[idle/slow] 220 connections opened in {opened:.2f} s, last closed {max(closed_after):.2f} s after the "
          f"first; still open: {len(still_open)}; slow GOAWAY: {goaways[0]}; server fds {fds_before} -> {fds_peak} -> "
          f"{fds_after}")
    assert not still_open, f"{len(still_open)} of 220 idle/slow connections still open after 4 s"
    assert all(g is not None and g.code == PROTOCOL_ERROR for g in goaways), goaways
    assert fds_after <= fds_before
    assert "/slow" not in calls
    watch.check()
