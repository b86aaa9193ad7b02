"""WebSocket floods (issue 12, defects 5 and 6): what one hostile WebSocket client can make bascule spend.

Each test starts ``python -m bascule`` serving tests/integration/apps/it_ws_flood_app.py (``/echo`` echoes,
``/sink`` accepts and never receives). An attacker on a raw socket then does one of:

1. floods masked PING frames, or empty non-final continuation frames, as fast as the socket takes them for
   ~3 s, never reading (SO_RCVBUF 4 KB, so the server's pongs back up at once). Meanwhile a legitimate
   client (the ``websockets`` library) does echo round-trips on another connection. The attacker must be
   closed with 1008 (or dropped right after the close frame, which it does not read) and the legitimate
   round-trips must all complete, none slower than :data:`LATENCY_BOUND` (a correctness bound: the bug held
   every other client for seconds; an idle round-trip is ~1 ms). One-byte fragments of one text message
   are budgeted the same way (valid, but ~5 us of parsing per byte). The latency bound also holds during a
   flood of 64-byte fragments, which no budget stops (Autobahn sends such fragments);
2. sends permessage-deflate messages of 12 MiB of zeros (12 KB each on the wire) to ``/sink`` for ~3 s:
   the server's resident memory (VmRSS, sampled every 10 ms) must grow by less than :data:`RSS_LIMIT_MB`,
   although ``--ws-max-size`` x ``--ws-max-queue`` is 512 MiB; and one compressed message that inflates
   past ``--ws-max-size`` is refused with 1009 without being inflated whole.

Figures are printed (``pytest -s`` shows them) for the issue's closing note.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Running
from it_support import APPS, log_lines_with
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID"),
              pytest.mark.timeout(60)]

FLOOD_SECONDS = 3.0
LATENCY_BOUND = 1.0  # seconds: no legitimate round-trip waits this long
MIN_ROUND_TRIPS = 20  # legitimate round-trips completed during each flood, at the least
RSS_LIMIT_MB = 64.0
PING, CONT, TEXT, BINARY, CLOSE = 0x9, 0x0, 0x1, 0x2, 0x8


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    if not payload:
        return head + key
    mask = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the complete unmasked server frames in ``data``."""
    out, pos = [], 0
    while len(data) - pos >= 2:
        n, start = data[pos + 1] & 0x7F, pos + 2
        if n == 126:
            if len(data) - pos < 4:
                break
            n, start = struct.unpack_from("!H", data, pos + 2)[0], pos + 4
        elif n == 127:
            if len(data) - pos < 10:
                break
            n, start = struct.unpack_from("!Q", data, pos + 2)[0], pos + 10
        if len(data) - start < n:
            break
        out.append((data[pos] & 0x0F, data[start:start + n]))
        pos = start + n
    return out


def ws_open(port: int, path: str, *, rcvbuf: int | None = None, extensions: str | None = None) -> socket.socket:
    """A raw socket that completed the WebSocket handshake to ``path`` (the 101 head read, nothing more)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing after the head is consumed
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    if extensions:
        assert b"permessage-deflate" in head.lower(), head
    return sock


def proc_status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /proc/{pid}/status")


@pytest.fixture
def flood_server(cli_server: Callable[..., contextlib.AbstractContextManager[Running]]
                 ) -> Callable[..., contextlib.AbstractContextManager[Running]]:
    """``with flood_server(*extra_flags) as srv:`` bascule as a process serving it_ws_flood_app."""

    @contextlib.contextmanager
    def start(*extra: str) -> Iterator[Running]:
        args = ["it_ws_flood_app:app", "--no-access-log", "--log-level", "warning", *extra]
        with cli_server(args, cwd=APPS) as running:
            assert running.proc is not None
            yield running

    return start


@dataclass
class Legit:
    """Echo round-trips of a legitimate client on its own connection, in a thread of its own."""

    port: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _run(self) -> None:
        try:
            async with connect(f"ws://127.0.0.1:{self.port}/echo", open_timeout=10, ping_interval=None) as ws:
                self._ready.set()
                i = 0
                while not self._stop.is_set() and i < 100_000:
                    began = time.monotonic()
                    await ws.send(f"round trip {i}")
                    answer = await asyncio.wait_for(ws.recv(), 15)
                    self.latencies.append(time.monotonic() - began)
                    if answer != f"round trip {i}":
                        self.failures.append(f"round trip {i} answered {answer!r}")
                    i += 1
                    await asyncio.sleep(0.01)
        except Exception as exc:
            self.failures.append(repr(exc))
        finally:
            self._ready.set()

    def __enter__(self) -> Legit:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        assert self._ready.wait(15)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # served just after the flood too
        self._stop.set()
        assert self._thread is not None
        self._thread.join(20)

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        return (f"legit {len(self.latencies)} round-trips, {len(self.failures)} failures, latency median "
                f"{lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")


def flood(sock: socket.socket, unit: bytes, seconds: float) -> tuple[int, str]:
    """Send ``unit`` again and again, never reading, for ``seconds``: (units sent, how it ended)."""
    chunk = unit * max(1, 65536 // len(unit))
    per_chunk = len(chunk) // len(unit)
    sent, end = 0, time.monotonic() + seconds
    while (remaining := end - time.monotonic()) > 0:
        sock.settimeout(max(0.05, remaining))
        try:
            sock.sendall(chunk)
        except TimeoutError:
            return sent, "send blocked (server not reading)"
        except OSError as exc:
            return sent, f"send failed: {type(exc).__name__}"
        sent += per_chunk
    return sent, "time up"


def read_to_end(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Everything the server still sends, until it closes (``how``: EOF or the error) or ``timeout``."""
    data, end = b"", time.monotonic() + timeout
    while (remaining := end - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            return data, "still open"
        except OSError as exc:
            return data, type(exc).__name__
        if not chunk:
            return data, "EOF"
        data += chunk
    return data, "still open"


FLOODS = {
    "ping": (b"", masked(PING, b"flood")),
    "empty-continuation": (masked(TEXT, b"", fin=False), masked(CONT, b"", fin=False)),
    "one-byte-fragments": (masked(TEXT, b"a", fin=False), masked(CONT, b"a", fin=False)),
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_flood_without_reading_is_closed_and_others_are_served(
        flood_server: Callable[..., contextlib.AbstractContextManager[Running]], kind: str) -> None:
    opening, unit = FLOODS[kind]
    with flood_server() as srv:
        assert srv.proc is not None
        rss_start = proc_status_kb(srv.proc.pid, "VmRSS")
        with Legit(srv.port) as legit:
            attacker = ws_open(srv.port, "/echo", rcvbuf=4096)
            attacker.sendall(opening)
            started = time.monotonic()
            sent, how = flood(attacker, unit, FLOOD_SECONDS)
            flooded = time.monotonic() - started
            data, ending = read_to_end(attacker, 5.0)
            attacker.close()
            # the legitimate client keeps going for the whole flood window, even when the flooder is cut short
            time.sleep(max(0.0, started + FLOOD_SECONDS - time.monotonic()))
        rss_mb = (proc_status_kb(srv.proc.pid, "VmRSS") - rss_start) / 1024
        warnings = log_lines_with(srv.log_path, "1008", timeout=2.0) if srv.log_path else []
        frames = server_frames(data)
        closes = [payload for opcode, payload in frames if opcode == CLOSE]
        print(f"\n[{kind} flood] {sent} frames in {flooded:.2f} s ({how}); then {len(data)} bytes read, "
              f"{len(frames)} frames, close {closes[-1][:2].hex() if closes else None}, {ending}; "
              f"RSS {rss_mb:+.1f} MB; {legit.summary()}; log: {warnings[:1]}")
    assert not legit.failures, f"the legitimate client failed during the flood: {legit.failures[:3]}"
    assert len(legit.latencies) >= MIN_ROUND_TRIPS, legit.summary()
    assert max(legit.latencies) < LATENCY_BOUND, (
        f"a legitimate round-trip took {max(legit.latencies):.2f} s during the flood: one connection's "
        f"frames held the server's event loop ({legit.summary()})")
    assert ending != "still open", f"the flooder was not closed ({how}, then {ending})"
    if closes:
        assert struct.unpack_from("!H", closes[-1])[0] == 1008, closes[-1]
    assert warnings, f"no warning about the flood in the log:\n{srv.log()[-2000:]}"
    assert rss_mb < RSS_LIMIT_MB


def test_a_flood_of_tiny_fragments_does_not_hold_other_clients(
        flood_server: Callable[..., contextlib.AbstractContextManager[Running]]) -> None:
    """64-byte fragments of one long text message: valid, not small enough for the budget (SMALL_FRAGMENT),
    ~5 us each to parse. A read of them is fed to the frame engine a slice at a time, the loop serving
    others between slices."""
    piece = b"a" * 64
    with flood_server() as srv, Legit(srv.port) as legit:
        attacker = ws_open(srv.port, "/echo", rcvbuf=4096)
        attacker.sendall(masked(TEXT, piece, fin=False))
        started = time.monotonic()
        sent, how = flood(attacker, masked(CONT, piece, fin=False), FLOOD_SECONDS)
        time.sleep(max(0.0, started + FLOOD_SECONDS - time.monotonic()))
        attacker.close()
    print(f"\n[tiny-fragment flood] {sent} frames ({how}); {legit.summary()}")
    assert not legit.failures, legit.failures[:3]
    assert len(legit.latencies) >= MIN_ROUND_TRIPS, legit.summary()
    assert max(legit.latencies) < LATENCY_BOUND, legit.summary()


MESSAGE = 12 * 1024 * 1024  # under the default --ws-max-size (16 MiB)


def deflated(size: int) -> bytes:
    """``size`` zero bytes as one permessage-deflate message payload (no context takeover)."""
    compressor = zlib.compressobj(wbits=-15)
    payload = compressor.compress(bytes(size)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


def test_compressed_messages_for_an_app_that_never_receives_stay_bounded(
        flood_server: Callable[..., contextlib.AbstractContextManager[Running]]) -> None:
    message = masked(BINARY, deflated(MESSAGE), rsv1=True)
    with flood_server() as srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        sock = ws_open(srv.port, "/sink", extensions="permessage-deflate; client_no_context_takeover")
        rss_start = peak = proc_status_kb(pid, "VmRSS")
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                with contextlib.suppress(OSError, AssertionError):
                    peak = max(peak, proc_status_kb(pid, "VmRSS"))
                stop.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent, how = flood(sock, message, FLOOD_SECONDS)
        stop.wait(0.5)  # what was sent last is taken in (or not) before the last samples
        stop.set()
        sampler.join(5)
        _, ending = read_to_end(sock, 0.2)
        sock.close()
        growth = (peak - rss_start) / 1024
        print(f"\n[compressed flood] {sent} messages of {MESSAGE >> 20} MiB ({len(message)} bytes each on the "
              f"wire) in {FLOOD_SECONDS} s ({how}); peak RSS +{growth:.1f} MB; connection {ending}")
    assert sent > 64, f"only {sent} messages sent: the test did not flood ({how})"
    assert ending == "still open", "the connection is paused (back-pressure), not closed"
    assert growth < RSS_LIMIT_MB, f"server RSS grew by {growth:.1f} MB for an app that never receives"


def test_compressed_message_over_max_size_is_refused_without_inflating_it(
        flood_server: Callable[..., contextlib.AbstractContextManager[Running]]) -> None:
    bomb = masked(BINARY, deflated(256 * 1024 * 1024), rsv1=True)  # 256 MiB of zeros in ~250 KB
    with flood_server("--ws-max-size", str(1 << 20)) as srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        sock = ws_open(srv.port, "/echo", extensions="permessage-deflate; client_no_context_takeover")
        hwm_start = proc_status_kb(pid, "VmHWM")
        with contextlib.suppress(OSError):
            sock.sendall(bomb)
        data, ending = read_to_end(sock, 5.0)
        sock.close()
        growth = (proc_status_kb(pid, "VmHWM") - hwm_start) / 1024
    closes = [payload for opcode, payload in server_frames(data) if opcode == CLOSE]
    print(f"\n[deflate bomb] peak RSS +{growth:.1f} MB; close {closes}; {ending}")
    assert closes and struct.unpack_from("!H", closes[0])[0] == 1009, (data[:100], ending)
    assert growth < RSS_LIMIT_MB
