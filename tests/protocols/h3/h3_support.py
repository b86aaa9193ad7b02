"""A real HTTP/3 server (QuicServer on 127.0.0.1 UDP, a real ServerContext and AppTable) and aioquic's client.

Not a test module: the HTTP/3 tests import it. Everything runs on one event loop per test (``run``): the
server and the client are both asyncio protocols, talking over loopback UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from fakes import Reply
from tls_certs import server_files

from bascule.config import Config
from bascule.context import ServerContext
from bascule.listen.accept import install_upgrades
from bascule.mounts import AppTable, resolve_mounts
from bascule.protocols.h3.endpoint import QuicServer
from bascule.server import new_event_loop

_CERTS: list[Any] = []


def certs() -> tuple[Path, Path, trustme.CA]:
    """One certificate for the whole run (issuing one costs ~50 ms), and its CA."""
    if not _CERTS:
        files = server_files(Path(tempfile.mkdtemp(prefix="bascule-h3-")))
        _CERTS.extend((files.cert, files.key, files.ca))
    return _CERTS[0], _CERTS[1], _CERTS[2]


CHAINS: list[list[bytes]] = []  # what the server passed to the tls-extension callable, per connection


def fake_tls(chain: list[bytes], cipher: int | None) -> dict[str, Any]:
    """What listen/quic.py's tls-extension callable gives, reduced to what the tests check."""
    CHAINS.append(chain)
    return {"server_cert": None, "client_cert_chain": [], "client_cert_name": None, "client_cert_error": None,
            "tls_version": 0x0304, "cipher_suite": cipher}


def run(coro: Awaitable[None], timeout: float = 30) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


@dataclass
class Served:
    quic: QuicServer
    ctx: ServerContext
    port: int
    table: AppTable


@contextlib.asynccontextmanager
async def h3_server(app: Any, *, retry: bool = False, session_tickets: bool = False, idle_timeout: float = 10.0,
                    configure: Callable[[QuicConfiguration], None] | None = None,
                    **options: Any) -> AsyncIterator[Served]:
    options.setdefault("access_log", False)
    config = Config(app="test:app", **options)
    table = AppTable(config, resolve_mounts(config, app))
    loop = asyncio.get_running_loop()
    ctx = ServerContext(config, loop, table.dispatch, access_log=False)
    if config.ws:
        ctx.websocket_route = table.websocket_route
    install_upgrades(ctx)
    table.start_threads()
    await table.startup()
    cert, key, _ = certs()
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["h3"], idle_timeout=idle_timeout,
                                      max_stream_data=config.h2_initial_window_size, max_data=4 << 20)
    configuration.load_cert_chain(cert, key)
    if configure is not None:
        configure(configuration)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    server = QuicServer(ctx, configuration, tls_extension=fake_tls, retry=retry, session_tickets=session_tickets)
    await server.start(sock)
    ctx.start()
    try:
        yield Served(server, ctx, server.address[1], table)
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 3)
        server.abort()
        ctx.stop()
        await table.shutdown(1.0, force=True)




class H3Client(QuicConnectionProtocol):
    """aioquic's client protocol with its HTTP/3 layer, collecting what each stream gets back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        # aioquic's client compares a response's content-length with its body even for HEAD and 304, whose
        # content-length describes the body GET would get (RFC 9110 8.6), and closes the connection: not here
        self.h3._check_content_length = lambda stream: None  # type: ignore[method-assign]
        self.replies: dict[int, Reply] = {}
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.control = b""  # the server's control stream, raw (GOAWAY is looked for in it)
        self.control_id: int | None = None
        self.terminated: qe.ConnectionTerminated | None = None
        self.deaf = False  # drop every datagram (a client that stopped reading)
        self.on_data: Callable[[int, bytes], None] | None = None

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self.deaf:
            super().datagram_received(data, addr)

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.ConnectionTerminated):
            self.terminated = event
            for sid in list(self.waiters):
                self._done(sid)
        if isinstance(event, qe.StreamDataReceived) and event.stream_id % 4 == 3:
            if self.control_id is None and event.data[:1] == b"\x00":
                self.control_id = event.stream_id
            if event.stream_id == self.control_id:
                self.control += event.data
        if isinstance(event, qe.StreamReset) and event.stream_id in self.replies:
            self.replies[event.stream_id].reset = event.error_code
            self._done(event.stream_id)
        for h3_event in self.h3.handle_event(event):
            reply = self.replies.get(getattr(h3_event, "stream_id", -1))
            if reply is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                status = int(dict(h3_event.headers).get(b":status", b"0"))
                if reply.status:
                    reply.trailers = h3_event.headers
                elif status < 200:
                    reply.informational.append(status)
                else:
                    reply.status = status
                    reply.headers = [(n, v) for n, v in h3_event.headers if not n.startswith(b":")]
            elif isinstance(h3_event, DataReceived):
                reply.body += h3_event.data
                if self.on_data is not None:
                    self.on_data(h3_event.stream_id, h3_event.data)
            if getattr(h3_event, "stream_ended", False):
                reply.ended = True
                self._done(h3_event.stream_id)

    def _done(self, sid: int) -> None:
        waiter = self.waiters.get(sid)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def goaway_ids(self) -> list[int]:
        """The stream ids of the GOAWAY frames on the server's control stream."""
        buf = Buffer(data=self.control[1:])
        found = []
        while not buf.eof():
            try:
                kind = buf.pull_uint_var()
                length = buf.pull_uint_var()
                payload = buf.pull_bytes(length)
            except Exception:
                break
            if kind == 0x7:
                found.append(Buffer(data=payload).pull_uint_var())
        return found

    def start(self, path: str = "/", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
              *, end: bool = True, extra_pseudo: list[tuple[bytes, bytes]] | None = None) -> int:
        sid = self._quic.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", b"127.0.0.1"),
                  (b":path", path.encode()), *(extra_pseudo or []), *(headers or [])]
        self.replies[sid] = Reply()
        self.waiters[sid] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(sid, fields, end_stream=end)
        self.transmit()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(sid, data, end)
        self.transmit()

    def reset(self, sid: int, code: int = 0x10C) -> None:
        """Cancel a request (RFC 9114 4.1.1): both directions."""
        self._quic.reset_stream(sid, code)
        self._quic.stop_stream(sid, code)
        self.transmit()

    async def wait(self, sid: int, timeout: float = 10) -> Reply:
        await asyncio.wait_for(asyncio.shield(self.waiters[sid]), timeout)
        return self.replies[sid]

    async def request(self, path: str = "/", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
                      body: bytes = b"", timeout: float = 10) -> Reply:
        sid = self.start(path, method, headers, end=not body)
        if body:
            self.send(sid, body, True)
        return await self.wait(sid, timeout)


@contextlib.asynccontextmanager
async def h3_client(port: int, *, max_stream_data: int | None = None,
                    configure: Callable[[QuicConfiguration], None] | None = None,
                    ticket_handler: Callable[[Any], None] | None = None,
                    wait_connected: bool = True) -> AsyncIterator[H3Client]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE,
                                      server_name="localhost")
    if configure is not None:
        configure(configuration)
    if max_stream_data is not None:
        configuration.max_stream_data = max_stream_data
    async with connect("127.0.0.1", port, configuration=configuration, create_protocol=H3Client,
                       session_ticket_handler=ticket_handler, wait_connected=wait_connected) as client:
        assert isinstance(client, H3Client)
        yield client


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)
