"""Acceptance: a 100 MB streamed upload to a WSGI app and to an ASGI app that discard it raises the server's
peak RSS by less than 30 MB.

The server is a real ``python -m bascule`` process; its peak resident set (VmHWM in /proc/PID/status) is
read before and after each upload. Where the kernel allows it, the peak is reset between uploads (writing
5 to /proc/PID/clear_refs) so that each upload is measured on its own; otherwise the growth is cumulative,
which is only stricter. Bodies are sent chunked (an httpx generator) and with a Content-Length (raw socket).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import clean_env, spawn, tcp_ready

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")

TOTAL = 100 * 1024 * 1024
CHUNK = b"\x5a" * (256 * 1024)
LIMIT_MB = 30.0


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not permitted here."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def body_chunks() -> Iterator[bytes]:
    for _ in range(TOTAL // len(CHUNK)):
        yield CHUNK


def upload_chunked(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/", content=body_chunks(), timeout=30)


def upload_content_length(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % TOTAL)
        for chunk in body_chunks():
            sock.sendall(chunk)
        data = b""
        while not data.endswith(str(TOTAL).encode()):
            more = sock.recv(65536)
            if not more:
                break
            data += more
        return data


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def sink(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, int]]:
    """(kind, port, pid) of a server whose app reads every body in chunks and throws it away."""
    kind = str(request.param)
    port = free_port()
    log = tmp_path_factory.mktemp(f"sink-{kind}") / "server.log"
    with spawn([f"it_sink:{kind}_app", "--port", str(port), "--no-access-log"], env=clean_env(), log=log,
               ready=tcp_ready(port)) as proc:
        # warm up: first request, thread pool, buffers, so the baseline is the server at work, not at rest
        assert httpx.post(f"http://127.0.0.1:{port}/", content=CHUNK * 8, timeout=10).text == str(len(CHUNK) * 8)
        yield kind, port, proc.pid


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_100mb_upload_peak_rss_growth(sink: tuple[str, int, int], framing: str,
                                      record_property: pytest.RecordProperty) -> None:
    kind, port, pid = sink
    per_upload = reset_peak(pid)
    before_hwm, before_rss = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
    started = time.monotonic()
    if framing == "chunked":
        response = upload_chunked(port)
        assert response.status_code == 200
        assert response.text == str(TOTAL)
    else:
        raw = upload_content_length(port)
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert raw.endswith(b"\r\n\r\n" + str(TOTAL).encode())
    took = time.monotonic() - started
    growth_mb = (status_kb(pid, "VmHWM") - before_hwm) / 1024
    rss_mb = (status_kb(pid, "VmRSS") - before_rss) / 1024
    figures = (f"{kind} {framing}: peak RSS +{growth_mb:.1f} MB (RSS now {rss_mb:+.1f} MB, baseline "
               f"{before_hwm / 1024:.1f} MB, {'per upload' if per_upload else 'cumulative'}), 100 MB in {took:.2f} s")
    record_property("rss", figures)
    print(figures)
    assert growth_mb < LIMIT_MB, figures


def test_the_measurement_sees_an_app_that_keeps_the_body(tmp_path: Path) -> None:
    """Control: the same measurement on an app that reads the body whole must show ~100 MB of growth."""
    port = free_port()
    with spawn(["it_sink:hoard_app", "--port", str(port), "--no-access-log"], env=clean_env(),
               log=tmp_path / "server.log", ready=tcp_ready(port)) as proc:
        before = status_kb(proc.pid, "VmHWM")
        assert upload_chunked(port).text == str(TOTAL)
        growth_mb = (status_kb(proc.pid, "VmHWM") - before) / 1024
    assert growth_mb > 90, f"peak RSS grew only {growth_mb:.1f} MB for a 100 MB body held in memory"


def test_wsgi_input_read_whole_large_body_is_linear(tmp_path: Path) -> None:
    """Django's request.body is wsgi.input.read(CONTENT_LENGTH): 64 MB must take about as long as sending it.

    The discarding app above takes ~0.2 s per 100 MB; 2 s for 64 MB leaves a wide margin for slow machines
    and still fails when every pull copies the whole buffer again.
    """
    port = free_port()
    size = 64 * 1024 * 1024
    with spawn(["it_sink:whole_app", "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "0.5"],
               env=clean_env(), log=tmp_path / "server.log", ready=tcp_ready(port)):
        deadline = time.monotonic() + 2.0

        def in_time() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("reading a 64 MB body whole took more than 2 s")
            return left

        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(CHUNK)):
                sock.settimeout(in_time())
                sock.sendall(CHUNK)
            data = b""
            while not data.endswith(str(size).encode()):
                sock.settimeout(in_time())
                more = sock.recv(65536)
                assert more, data
                data += more
    assert data.startswith(b"HTTP/1.1 200 ")
