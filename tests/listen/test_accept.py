"""Tests for the front door (bascule.listen.accept): which protocol each connection gets, over real loopback
sockets with raw bytes (ALPN h2, ALPN http/1.1, no ALPN, the cleartext HTTP/2 preface, cleartext HTTP/1.1,
HTTP/2 off), the TLS-after-accept path of listeners with a pre-TLS step (``proxy_protocol``: the client sends
a PROXY header first), the handshake deadline, and the sniffer stepping out of the transport's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import serve_in_thread
from tls_certs import ServerFiles, server_files

from bascule.config import Config
from bascule.context import ServerContext
from bascule.listen.accept import (
    ChooseByALPN,
    FrontDoor,
    Preamble,
    adopt_proxy_header,
    fixed_local_address,
    h2_from_preface,
    install_upgrades,
)
from bascule.listen.listeners import BoundListener, Listener, bind_tcp
from bascule.listen.proxy_protocol import parse
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h2.connection import H2Connection
from bascule.protocols.upgrades import HandOver
from bascule.server import Server, new_event_loop

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def version_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the HTTP version the request came over."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = scope["http_version"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serving(*, proxy_protocol: bool = False, **options: Any) -> Iterator[tuple[str, int]]:
    """A server in a thread on one TCP listener whose spec the test chooses; yields its address."""
    config = Config(app="test:app", port=0, access_log=False, **options)
    sock = bind_tcp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    spec = Listener("tcp", ("127.0.0.1", port), tls=config.tls_enabled, proxy_protocol=proxy_protocol)
    server = Server(config, version_app, announce=False)
    loop = new_event_loop()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve([BoundListener(spec, sock)]))
        except BaseException as exc:
            failure.append(exc)
            server.started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    end = time.monotonic() + 15
    while not server.started.is_set() and not failure and time.monotonic() < end:
        time.sleep(0.01)
    if failure:
        raise failure[0]
    try:
        yield "127.0.0.1", port
    finally:
        server.request_exit()
        thread.join(30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ServerFiles:
    return server_files(Path(tmp_path_factory.mktemp("certs")))


def tls_options(files: ServerFiles) -> dict[str, Any]:
    return {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return out
        if not data:
            return out
        out += data


def http11(sock: socket.socket) -> bytes:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    return read_until_closed(sock)


def http2(sock: socket.socket) -> tuple[bytes, bytes]:
    """(the first bytes the server wrote, the response body) of one GET over HTTP/2."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")],
                        end_stream=True)
    sock.sendall(client.data_to_send())
    sock.settimeout(5)
    first = b""
    body = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        first = first or data
        for event in client.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
            if isinstance(event, h2.events.StreamEnded):
                return first, body
        sock.sendall(client.data_to_send())
    return first, body


PROXY_V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n"


def connect(host: str, port: int, proxy_protocol: bool = False) -> socket.socket:
    """A client connection; on a listener that requires it, opened with a PROXY v1 header as HAProxy would."""
    sock = socket.create_connection((host, port), timeout=5)
    if proxy_protocol:
        sock.sendall(PROXY_V1)
    return sock


def tls_client(files: ServerFiles, port: int, alpn: list[str] | None, proxy_protocol: bool = False) -> ssl.SSLSocket:
    context = files.client_context()
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context.wrap_socket(connect("127.0.0.1", port, proxy_protocol), server_hostname="127.0.0.1")


# -- cleartext ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("proxy_protocol", [False, True])
def test_cleartext_http11_is_served_by_http11(proxy_protocol: bool) -> None:
    with serving(proxy_protocol=proxy_protocol) as (host, port), connect(host, port, proxy_protocol) as sock:
        out = http11(sock)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n1.1")


@pytest.mark.parametrize("proxy_protocol", [False, True])
def test_cleartext_preface_is_served_by_http2(proxy_protocol: bool) -> None:
    with serving(proxy_protocol=proxy_protocol) as (host, port), connect(host, port, proxy_protocol) as sock:
        first, body = http2(sock)
    assert first[3] == 0x4 and body == b"2"  # the server's SETTINGS frame first, then an HTTP/2 response


def test_cleartext_preface_with_http2_off_is_an_http11_error() -> None:
    with serving(http2=False) as (host, port), socket.create_connection((host, port)) as sock:
        sock.sendall(PREFACE)
        out = read_until_closed(sock)
    assert out.startswith(b"HTTP/1.1 400 ")


# -- TLS ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("proxy_protocol", [False, True], ids=["ssl=", "start_tls"])
@pytest.mark.parametrize(("alpn", "expected"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"),
                                                (None, None)], ids=["alpn-h2", "alpn-http1.1", "no-alpn"])
def test_tls_chooses_by_alpn(certs: ServerFiles, proxy_protocol: bool, alpn: list[str] | None,
                             expected: str | None) -> None:
    with serving(proxy_protocol=proxy_protocol, **tls_options(certs)) as (_, port), \
            tls_client(certs, port, alpn, proxy_protocol) as sock:
        assert sock.selected_alpn_protocol() == expected
        if expected == "h2":
            first, body = http2(sock)
            assert first[3] == 0x4 and body == b"2"
        else:
            out = http11(sock)
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"1.1")


@pytest.mark.parametrize("proxy_protocol", [False, True], ids=["ssl=", "start_tls"])
def test_tls_with_http2_off_offers_only_http11(certs: ServerFiles, proxy_protocol: bool) -> None:
    with serving(proxy_protocol=proxy_protocol, http2=False, **tls_options(certs)) as (_, port), \
            tls_client(certs, port, ["h2", "http/1.1"], proxy_protocol) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        out = http11(sock)
    assert out.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("proxy_protocol", [False, True], ids=["ssl=", "start_tls"])
def test_the_tls_handshake_has_the_head_deadline(certs: ServerFiles, proxy_protocol: bool) -> None:
    with serving(proxy_protocol=proxy_protocol, timeout_request_head=1.0, **tls_options(certs)) as (host, port), \
            connect(host, port, proxy_protocol) as sock:
        start = time.monotonic()
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
        out = read_until_closed(sock, timeout=10)
        elapsed = time.monotonic() - start
    assert out == b"" and 0.9 < elapsed < 5


def test_start_tls_takes_a_client_hello_sent_in_pieces(certs: ServerFiles) -> None:
    """Bytes that arrive before start_tls has the transport are handed to TLS, not lost."""
    with serving(proxy_protocol=True, **tls_options(certs)) as (_, port):
        for _ in range(5):
            with tls_client(certs, port, ["h2", "http/1.1"], True) as sock:
                assert http2(sock)[1] == b"2"


# -- the factories, without a server ---------------------------------------------------------
class Transport(asyncio.Transport):
    """Records the protocol the front door sets."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.out = b""

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += bytes(data)

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture
def ctx() -> Iterator[ServerContext]:
    loop = asyncio.new_event_loop()
    yield ServerContext(Config(app="x:y", access_log=False), loop, lambda ex: None, access_log=False)
    loop.close()


def test_the_factory_is_the_cheapest_way_through(ctx: ServerContext) -> None:
    def made(listener: Listener, context: ServerContext = ctx) -> type:
        return type(FrontDoor(context, listener).protocol_factory()())

    plain, tls = Listener("tcp", ("", 1)), Listener("tcp", ("", 1), tls=True)
    assert made(plain) is H1Connection  # HTTP/2 on: HTTP/1.1 itself hands a preface over (nothing sniffs)
    assert made(Listener("tcp", ("", 1), proxy_protocol=True)) is Preamble
    ctx.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert made(tls) is ChooseByALPN
    assert FrontDoor(ctx, tls).ssl_context is ctx.ssl_context
    assert FrontDoor(ctx, tls).ssl_handshake_timeout == ctx.timeout_request_head
    pre_tls = FrontDoor(ctx, Listener("tcp", ("", 1), tls=True, proxy_protocol=True))
    assert pre_tls.ssl_context is None and pre_tls.ssl_handshake_timeout is None  # TLS comes after accept
    # ... with the server's one context (which SIGHUP reloads in place) and the head deadline
    assert pre_tls.tls_context is ctx.ssl_context and pre_tls.handshake_timeout == ctx.timeout_request_head
    ctx.http2 = False
    assert made(plain) is H1Connection and made(tls) is H1Connection


@pytest.mark.parametrize(("first_read", "chosen"), [
    (b"GET / HTTP/1.1\r\n", H1Connection),
    (PREFACE, H2Connection),
    (PREFACE[:18], H1Connection),  # the part HTTP/1.1 reads as a head: llhttp stops at the "SM" after it
    (PREFACE[:10], H1Connection),  # a preface in pieces: HTTP/1.1 hands it over when it completes
    (b"P", H1Connection),
])
def test_a_cleartext_connection_is_http11_until_a_first_read_opens_with_the_preface(
        ctx: ServerContext, first_read: bytes, chosen: type) -> None:
    """HTTP/2 on, cleartext: the factory makes HTTP/1.1 itself (counted from accept, as the limit, the idle
    timeout and a graceful stop need), and a prior-knowledge preface in the first read, whole or in pieces,
    still reaches HTTP/2 with the bytes that came with it."""
    install_upgrades(ctx)  # as the server does: the preface's way from HTTP/1.1 to HTTP/2
    h1 = FrontDoor(ctx, Listener("tcp", ("", 1))).protocol_factory()()
    assert isinstance(h1, H1Connection)
    transport = Transport()
    transport.protocol = h1
    h1.connection_made(transport)
    assert h1 in ctx.connections
    h1.data_received(first_read)
    assert type(transport.protocol) is chosen
    if chosen is H2Connection:
        assert h1 not in ctx.connections and transport.protocol in ctx.connections
    if PREFACE.startswith(first_read) and first_read != PREFACE:
        h1.data_received(PREFACE[len(first_read):])  # the rest: HTTP/2 now, the whole preface read
        h2 = transport.protocol
        assert isinstance(h2, H2Connection) and h1 not in ctx.connections and h2 in ctx.connections


def test_a_refused_connection_stays_refused_whatever_it_sends(ctx: ServerContext) -> None:
    install_upgrades(ctx)
    ctx.limit_connections = 0
    h1 = FrontDoor(ctx, Listener("tcp", ("", 1))).protocol_factory()()
    assert isinstance(h1, H1Connection)
    transport = Transport()
    transport.protocol = h1
    h1.connection_made(transport)
    assert transport.out.startswith(b"HTTP/1.1 503 ")
    h1.data_received(PREFACE)
    assert transport.protocol is h1


def test_pipelined_pause_survives_the_proxy_header_hand_over() -> None:
    """Requests pipelined in the same segment as the PROXY header: HTTP/1.1 pauses reading while the first is
    answered (PAUSE_PIPELINE); the front door must not resume the transport behind its back."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/wait":
            await asyncio.sleep(1.0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve_in_thread(app, bind=("proxy+127.0.0.1:0",), port=8000) as srv, \
            socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(PROXY_V1 + b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        ctx = srv.server.ctx
        conns = [c for c in ctx.connections if isinstance(c, H1Connection)]
        assert len(conns) == 1
        conn = conns[0]
        assert conn.outbox.paused_by  # the pipeline is paused...
        assert conn.transport is not None and not conn.transport.is_reading()  # ...and so is the socket


def test_http11_hands_over_what_it_knows_and_http2_takes_it_without_reading_http11(ctx: ServerContext) -> None:
    """The HTTP/2 hand-over (a preface in pieces here) gets the PROXY header's facts passed explicitly: the
    transport's protocol is never asked (this fake's is unset, and its socket has no addresses)."""
    found = parse(PROXY_V1)
    assert found is not None
    header = found[0]
    h1 = H1Connection(ctx)
    h1.connection_made(Transport())
    adopt_proxy_header(h1, header)
    given = h1.hand_over()
    assert given == HandOver("http", None, ("192.0.2.1", 40000), ("198.51.100.2", 443), header)
    transport = Transport()
    h2_from_preface(ctx, transport, given, b"PRI", PREFACE[3:])
    h2 = transport.protocol
    assert isinstance(h2, H2Connection)
    assert (h2.client, h2.server, h2.scheme, h2.tls) == (("192.0.2.1", 40000), ("198.51.100.2", 443), "http", None)
    assert h2.proxy_header is header
    plain = Transport()  # without a header the socket's endpoints are read, as on any connection
    h2_from_preface(ctx, plain, HandOver("http", None, ("192.0.2.7", 1), ("192.0.2.8", 2), None), b"", PREFACE)
    assert isinstance(plain.protocol, H2Connection) and plain.protocol.client is None


# -- the local address a listener's connections share ---------------------------------------------------


@pytest.mark.parametrize(("family", "host", "fixed"), [
    (socket.AF_INET, "127.0.0.1", True), (socket.AF_INET, "0.0.0.0", False),  # a wildcard, on purpose
    (socket.AF_INET6, "::1", True), (socket.AF_INET6, "::", False),
    (socket.AF_INET6, "::ffff:127.0.0.1", True),
    (socket.AF_INET6, "::ffff:0.0.0.0", False),  # IPv4's wildcard on a dual-stack socket: every v4 address
])
def test_fixed_local_address_only_for_one_ip(family: socket.AddressFamily, host: str, fixed: bool) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            pytest.skip(f"cannot bind {host}")
        port = sock.getsockname()[1]
        assert fixed_local_address(sock) == ((host, port) if fixed else None)


def test_fixed_local_address_none_for_a_unix_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "s.sock"))
        assert fixed_local_address(sock) is None


def test_connections_of_a_one_ip_listener_get_its_address_without_asking(ctx: ServerContext) -> None:
    door = FrontDoor(ctx, Listener("tcp", ("127.0.0.1", 1)), ("127.0.0.1", 8123))
    h1 = door.protocol_factory()()
    assert isinstance(h1, H1Connection) and h1.server == ("127.0.0.1", 8123)
    ctx.http2 = False
    h1 = door.protocol_factory()()
    assert isinstance(h1, H1Connection) and h1.server == ("127.0.0.1", 8123)


async def _local_address_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = repr((scope["server"], scope["client"][0])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # the wildcard case, on purpose
@pytest.mark.parametrize("http2", [True, False])
def test_the_scope_server_is_the_connections_local_address(host: str, http2: bool) -> None:
    """Bound to one IP, scope["server"] is that IP (taken from the listener); bound to the wildcard, it is the
    address the connection actually came in on, never 0.0.0.0."""
    with serve_in_thread(_local_address_app, host=host, http2=http2) as srv:
        port = srv.port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := c.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(repr((["127.0.0.1", port], "127.0.0.1")).encode()) or \
        answer.endswith(repr((("127.0.0.1", port), "127.0.0.1")).encode()), answer
