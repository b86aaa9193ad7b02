"""HTTP/3 end to end: a real ``bascule`` process (alone, and with two workers) with --http3 and a test
certificate, queried with aioquic's client: GET, POST, streaming, the ASGI app and a WSGI mount side by side, a
WebSocket (RFC 9220), Alt-Svc over HTTPS (httpx), GOAWAY on a graceful stop while a stream finishes, a SIGHUP
reload that keeps serving (workers) or reloads the certificate (one process), HTTP/3 alone on a port the master
chose, and a UDP port in use as one start-up line."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived
from aioquic.tls import SessionTicket
from conftest import free_port
from cryptography.hazmat.primitives import serialization
from it_support import APPS, clean_env, log_lines_with, spawn, tcp_ready, wait_for
from tls_certs import ServerFiles, server_files

pytestmark = pytest.mark.timeout(90)

GOAWAY = 0x7
CONTROL_STREAM = 0x0


# -- a small HTTP/3 client on aioquic ----------------------------------------------------------------------------


class Response:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.chunks = 0
        self.done = asyncio.Event()
        self.aborted = False

    @property
    def text(self) -> str:
        return self.body.decode()


class H3Client(QuicConnectionProtocol):
    """aioquic's H3Connection, plus what it does not report: the server's GOAWAY (read off its control stream)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, Response] = {}
        self.goaway: int | None = None
        self.goaway_seen = asyncio.Event()
        self.terminated = asyncio.Event()
        self._uni: dict[int, bytearray] = {}
        self.authority = b"127.0.0.1"

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:  # server-initiated unidirectional
            self._read_control(event.stream_id, event.data)
        if isinstance(event, ConnectionTerminated):
            self.terminated.set()
            for response in self.responses.values():
                if not response.done.is_set():
                    response.aborted = True
                    response.done.set()
        for h3_event in self.h3.handle_event(event):
            response = self.responses.get(getattr(h3_event, "stream_id", -1))
            if response is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                if response.status is None:
                    fields = dict(h3_event.headers)
                    response.status = int(fields.pop(b":status"))
                    response.headers = fields
                if h3_event.stream_ended:
                    response.done.set()
            elif isinstance(h3_event, DataReceived):
                response.body += h3_event.data
                response.chunks += bool(h3_event.data)
                if h3_event.stream_ended:
                    response.done.set()

    def _read_control(self, stream_id: int, data: bytes) -> None:
        buffered = self._uni.setdefault(stream_id, bytearray())
        buffered += data
        buf = Buffer(data=bytes(buffered))
        try:
            if buf.pull_uint_var() != CONTROL_STREAM:
                return
            while not buf.eof():
                kind, size = buf.pull_uint_var(), buf.pull_uint_var()
                payload = buf.pull_bytes(size)
                if kind == GOAWAY:
                    self.goaway = Buffer(data=payload).pull_uint_var()
                    self.goaway_seen.set()
        except BufferReadError:
            pass

    def send(self, method: str, path: str, body: bytes = b"") -> Response:
        stream_id = self._quic.get_next_available_stream_id()
        response = self.responses[stream_id] = Response()
        headers = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", self.authority),
                   (b":path", path.encode())]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return response

    def websocket(self, path: str) -> tuple[int, Response]:
        """Open a WebSocket by extended CONNECT (RFC 9220); the stream stays open for frames."""
        stream_id = self._quic.get_next_available_stream_id()
        response = self.responses[stream_id] = Response()
        self.h3.send_headers(stream_id, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                                         (b":scheme", b"https"), (b":authority", self.authority),
                                         (b":path", path.encode()), (b"sec-websocket-version", b"13")])
        self.transmit()
        return stream_id, response

    def send_frame(self, stream_id: int, frame: bytes, end: bool = False) -> None:
        self.h3.send_data(stream_id, frame, end_stream=end)
        self.transmit()

    async def request(self, method: str, path: str, body: bytes = b"", timeout: float = 10) -> Response:
        response = self.send(method, path, body)
        await asyncio.wait_for(response.done.wait(), timeout)
        return response


@contextlib.asynccontextmanager
async def h3(port: int, files: ServerFiles, *, ticket: SessionTicket | None = None,
             on_ticket: Callable[[SessionTicket], None] | None = None,
             wait_connected: bool = True) -> AsyncIterator[H3Client]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost",
                                      session_ticket=ticket)
    configuration.load_verify_locations(cadata=files.ca.cert_pem.bytes())
    async with connect("127.0.0.1", port, configuration=configuration, create_protocol=H3Client,
                       session_ticket_handler=on_ticket, wait_connected=wait_connected) as client:
        assert isinstance(client, H3Client)
        client.authority = f"127.0.0.1:{port}".encode()
        yield client


async def h3_get(port: int, files: ServerFiles, path: str = "/", attempts: int = 3) -> Response:
    """One GET on a new connection, retried while the server (or a new worker) is still binding."""
    for attempt in range(attempts):
        try:
            async with asyncio.timeout(10):
                async with h3(port, files) as client:
                    return await client.request("GET", path)
        except (TimeoutError, ConnectionError):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# -- the server --------------------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path)


@contextlib.contextmanager
def bascule_h3(files: ServerFiles, log: Path, *flags: str, workers: int = 1) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                                                    int]]:
    port = free_port()
    args = ["it_h3_app:app", "--mount", "/wsgi=it_h3_app:wsgi", "--bind", f"127.0.0.1:{port}", "--http3",
            "--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key), "--workers", str(workers), *flags]
    with spawn(args, env=clean_env(), log=log, ready=tcp_ready(port)) as proc:
        yield proc, port


@pytest.mark.parametrize("workers", [1, 2])
def test_requests_over_http3(files: ServerFiles, tmp_path: Path, workers: int) -> None:
    log = tmp_path / "server.log"
    with bascule_h3(files, log, workers=workers) as (_, port):
        assert log_lines_with(log, f"serving on quic://127.0.0.1:{port}"), log.read_text()

        async def go() -> None:
            await h3_get(port, files)  # the workers are up
            async with h3(port, files) as client:
                hello = await client.request("GET", "/")
                assert (hello.status, hello.text) == (200, "hello from asgi")
                assert hello.headers[b"server"] == b"bascule"
                assert b"alt-svc" not in hello.headers or hello.headers[b"alt-svc"].startswith(b"h3=")
                scope = json.loads((await client.request("GET", "/scope")).body)
                assert scope == {"http_version": "3", "scheme": "https", "tls_version": 0x0304, "server_cert": True}
                payload = bytes(range(256)) * 400  # 100 KiB: past a stream window's first half
                echo = await client.request("POST", "/echo", payload)
                assert (echo.status, bytes(echo.body)) == (200, payload)
                stream = await client.request("GET", "/stream?n=8")
                assert stream.status == 200 and len(stream.body) == 8 * 1024 and stream.chunks >= 2
                wsgi = await client.request("POST", "/wsgi/path", b"x" * 5000)
                assert (wsgi.status, wsgi.text) == (200, "HTTP/3 https /path 5000")
                # streams side by side on one connection: ASGI and WSGI at once
                many = [client.send("GET", "/stream?n=3"), client.send("GET", "/wsgi/a"), client.send("GET", "/")]
                await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in many)), 10)
                assert [r.status for r in many] == [200, 200, 200]
                assert many[1].text == "HTTP/3 https /a 0"

        asyncio.run(go())


def masked(opcode: int, payload: bytes) -> bytes:
    """A client's WebSocket frame (FIN, masked with a zero key), for payloads under 126 bytes."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def test_websocket_over_http3(files: ServerFiles, tmp_path: Path) -> None:
    with bascule_h3(files, tmp_path / "server.log") as (_, port):

        async def go() -> None:
            async with h3(port, files) as client:
                stream_id, opened = client.websocket("/chat")
                await asyncio.wait_for(_until(lambda: opened.status is not None), 10)
                assert opened.status == 200
                client.send_frame(stream_id, masked(0x1, b"hello"))
                await asyncio.wait_for(_until(lambda: len(opened.body) >= 9), 10)
                assert bytes(opened.body[:9]) == b"\x81\x073:hello"  # the scope's http_version is "3"
                assert (await client.request("GET", "/")).status == 200  # requests beside it on the connection
                client.send_frame(stream_id, masked(0x8, (1000).to_bytes(2, "big")))
                await asyncio.wait_for(opened.done.wait(), 10)
                assert bytes(opened.body[9:]).startswith(b"\x88\x02\x03\xe8")  # the close, echoed

        asyncio.run(go())


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def test_retry_validates_the_address_first(files: ServerFiles, tmp_path: Path) -> None:
    with bascule_h3(files, tmp_path / "server.log", "--http3-retry") as (_, port):

        async def go() -> None:
            async with h3(port, files) as client:
                assert (await client.request("GET", "/")).text == "hello from asgi"
                assert client._quic._retry_count == 1  # the server's Retry came first

        asyncio.run(go())


def test_alt_svc_over_https_points_at_the_udp_port(files: ServerFiles, tmp_path: Path) -> None:
    with bascule_h3(files, tmp_path / "server.log") as (_, port):
        context = files.client_context()
        with httpx.Client(verify=context, http2=True) as client:
            response = client.get(f"https://127.0.0.1:{port}/")
            assert response.http_version == "HTTP/2"
            assert response.headers["alt-svc"] == f'h3=":{port}"; ma=86400'
        with httpx.Client(verify=context) as client:
            assert client.get(f"https://127.0.0.1:{port}/wsgi/").headers["alt-svc"] == f'h3=":{port}"; ma=86400'
    with bascule_h3(files, tmp_path / "server2.log", "--http3-alt-svc-max-age", "0") as (_, port), \
            httpx.Client(verify=files.client_context()) as client:
        assert "alt-svc" not in client.get(f"https://127.0.0.1:{port}/").headers


def test_graceful_stop_sends_goaway_and_finishes_the_stream(files: ServerFiles, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with bascule_h3(files, log, "--timeout-graceful-shutdown", "10") as (proc, port):

        async def go() -> None:
            async with h3(port, files) as client:
                assert (await client.request("GET", "/")).status == 200
                slow = client.send("GET", "/slow?s=1.5")
                # the request is in the app once a request sent after it on the same connection is answered
                # (a fixed 0.3 s sleep was too short under load: the stop then found nothing in flight)
                assert (await client.request("GET", "/")).status == 200
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(client.goaway_seen.wait(), 5)
                await asyncio.wait_for(slow.done.wait(), 10)
                assert (slow.status, slow.text, slow.aborted) == (200, "done", False)
                await asyncio.wait_for(client.terminated.wait(), 10)  # then the server closes the connection

        asyncio.run(go())
        assert proc.wait(15) == 0, log.read_text()


def test_sigquit_closes_quic_connections_at_once(files: ServerFiles, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with bascule_h3(files, log) as (proc, port):

        async def go() -> None:
            async with h3(port, files) as client:
                slow = client.send("GET", "/slow?s=30")
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGQUIT)
                await asyncio.wait_for(client.terminated.wait(), 5)  # CONNECTION_CLOSE, not an idle timeout
                assert slow.aborted

        asyncio.run(go())
        assert proc.wait(10) == 0, log.read_text()
        assert "still open" not in log.read_text()


def test_sighup_replaces_the_workers_and_keeps_serving(files: ServerFiles, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with bascule_h3(files, log, workers=2) as (proc, port):

        async def pids(count: int) -> set[str]:
            return {(await h3_get(port, files, "/pid")).text for _ in range(count)}

        before = asyncio.run(pids(6))
        proc.send_signal(signal.SIGHUP)

        def replaced() -> bool:
            return not asyncio.run(pids(4)) & before

        assert wait_for(replaced, 30, interval=0.5), log.read_text()
        assert (asyncio.run(h3_get(port, files))).status == 200
        assert proc.poll() is None


def test_http3_alone_on_a_port_the_master_chose(files: ServerFiles, tmp_path: Path) -> None:
    """--bind quic://HOST:0 with workers: no TCP listener; the master's probe picks the port every worker binds."""
    log = tmp_path / "server.log"
    args = ["it_h3_app:app", "--bind", "quic://127.0.0.1:0", "--ssl-certfile", str(files.cert), "--ssl-keyfile",
            str(files.key), "--workers", "2"]
    with spawn(args, env=clean_env(), log=log, ready=lambda: "ready in" in log.read_text()):
        [line] = log_lines_with(log, "serving on quic://127.0.0.1:")
        port = int(line.split("quic://127.0.0.1:")[1].split()[0])
        assert "https://" not in log.read_text()

        async def go() -> set[str]:
            return {(await h3_get(port, files, "/pid")).text for _ in range(8)}

        assert len(asyncio.run(go())) >= 1
        assert wait_for(lambda: len(log_lines_with(log, "ready in", count=2, timeout=0)) == 2, 10)


def test_sighup_alone_reloads_the_quic_certificate(files: ServerFiles, tmp_path: Path) -> None:
    new = server_files(tmp_path, files.ca, name="new")
    log = tmp_path / "server.log"
    with bascule_h3(files, log) as (proc, port):

        async def leaf() -> bytes:
            async with h3(port, files) as client:
                await client.request("GET", "/")
                certificate = client._quic.tls._peer_certificate
                assert certificate is not None
                return certificate.public_bytes(serialization.Encoding.PEM)

        assert asyncio.run(leaf()).decode() == files.leaf_pem
        files.cert.write_bytes(new.cert.read_bytes())
        files.key.write_bytes(new.key.read_bytes())
        proc.send_signal(signal.SIGHUP)
        assert log_lines_with(log, "reloaded the TLS certificate"), log.read_text()
        assert asyncio.run(leaf()).decode() == new.leaf_pem


def test_0rtt_resumes_and_answers_early_data(files: ServerFiles, tmp_path: Path) -> None:
    with bascule_h3(files, tmp_path / "server.log", "--http3-0rtt") as (_, port):

        async def go() -> None:
            tickets: list[SessionTicket] = []
            async with h3(port, files, on_ticket=tickets.append) as client:
                assert (await client.request("GET", "/")).status == 200
                await asyncio.wait_for(_until(lambda: bool(tickets)), 5)
            async with h3(port, files, ticket=tickets[0], wait_connected=False) as client:
                early = await client.request("GET", "/")  # sent before the handshake is done: 0-RTT
                assert (early.status, early.text) == (200, "hello from asgi")
                assert client._quic.tls.session_resumed and client._quic.tls.early_data_accepted
            async with h3(port, files, ticket=tickets[0], wait_connected=False) as client:  # the ticket again
                again = await client.request("GET", "/")
                assert again.status == 200 and not client._quic.tls.session_resumed  # single use: a full handshake

        asyncio.run(go())


def test_a_draining_worker_leaves_the_port_while_a_tcp_request_runs(files: ServerFiles, tmp_path: Path) -> None:
    """After SIGHUP the old worker finishes a long HTTPS request, but its UDP socket (with no QUIC connection
    left) leaves the SO_REUSEPORT group at once: new QUIC clients all reach the new worker meanwhile."""
    log = tmp_path / "server.log"
    with bascule_h3(files, log, "--max-requests", "1000") as (proc, port):  # a master, one worker
        old = asyncio.run(h3_get(port, files, "/pid")).text
        with concurrent.futures.ThreadPoolExecutor(1) as pool, \
                httpx.Client(verify=files.client_context(), timeout=30) as https:
            slow = pool.submit(https.get, f"https://127.0.0.1:{port}/slow?s=6")
            time.sleep(0.5)  # the request is in the old worker's app
            proc.send_signal(signal.SIGHUP)
            assert log_lines_with(log, "ready in", count=2, timeout=15), log.read_text()

            async def new_clients() -> list[str]:
                answers = []
                for _ in range(8):  # each a new flow, hashed afresh; one attempt of 3 s each
                    async with asyncio.timeout(3), h3(port, files) as client:
                        answers.append((await client.request("GET", "/pid")).text)
                return answers

            answers = asyncio.run(new_clients())
            assert old not in answers
            assert not slow.done()  # the old worker is still draining its TCP request
            assert slow.result().text == "done"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_udp_port_in_use_is_one_line(files: ServerFiles, workers: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bascule", "it_h3_app:app", "--bind", f"quic://127.0.0.1:{port}",
             "--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key), "--workers", workers],
            cwd=APPS, env=clean_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 4, result.stderr  # a StartupError
    lines = [line for line in result.stderr.splitlines() if "cannot bind UDP" in line]
    assert len(lines) == 1 and f"127.0.0.1:{port} for HTTP/3" in lines[0], result.stderr


def test_http3_without_a_certificate_is_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "bascule", "it_h3_app:app", "--http3"], cwd=APPS, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("bascule: http3 needs TLS (QUIC is always encrypted): add --ssl-certfile (and "
                                     "--ssl-keyfile)")
