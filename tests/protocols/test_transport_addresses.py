"""exchange.transport_addresses: the same answers as get_extra_info("peername"/"sockname"), on every loop.

It reads both names from a bare socket object made with the family given (the cheap path of every new
connection); these tests compare it with the transport's own answers over IPv4, IPv6, a Unix socket and TLS,
on uvloop and on asyncio's own loop, and check that the connection's descriptor is left open and working.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from typing import Any, cast

import pytest
import uvloop

from bascule.protocols.exchange import peer_address, transport_addresses

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"uvloop": uvloop.new_event_loop,
                                                             "asyncio": asyncio.new_event_loop}


class Probe(asyncio.Protocol):
    """Records what transport_addresses and get_extra_info say at accept, then echoes one read."""

    def __init__(self, seen: asyncio.Future[dict[str, Any]]) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        client, server, sock = transport_addresses(transport)
        self.seen.set_result({"client": client, "server": server, "sock": sock,
                              "peername": peer_address(transport.get_extra_info("peername")),
                              "sockname": peer_address(transport.get_extra_info("sockname"))})

    def data_received(self, data: bytes) -> None:
        cast(asyncio.Transport, self.transport).write(data)  # uvloop's transports are not subclasses


async def _accept_one(host: str | None, *, unix: str | None = None,
                      tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[dict[str, Any]] = loop.create_future()
    if unix is not None:
        server = await loop.create_unix_server(lambda: Probe(seen), unix)
        reader, writer = await asyncio.open_unix_connection(unix)
    else:
        server = await loop.create_server(lambda: Probe(seen), host, 0, ssl=tls[0] if tls else None)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(host, port, ssl=tls[1] if tls else None,
                                                       server_hostname="localhost" if tls else None)
    try:
        result = await asyncio.wait_for(seen, 5)
        writer.write(b"still open")  # the descriptor was only borrowed: the connection still works
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still open"
        result["local_client"] = peer_address(writer.get_extra_info("sockname"))
        return result
    finally:
        writer.close()
        server.close()


def _run(loop_name: str, coro: Any) -> dict[str, Any]:
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_inet_addresses_match_get_extra_info(loop_name: str, host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    seen = _run(loop_name, _accept_one(host))
    assert seen["client"] == seen["peername"] == seen["local_client"]
    assert seen["server"] == seen["sockname"]
    assert seen["server"][0] == host and seen["sock"] is not None


@pytest.mark.parametrize("loop_name", LOOPS)
def test_unix_socket_has_no_addresses(loop_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        seen = _run(loop_name, _accept_one(None, unix=os.path.join(tmp, "s.sock")))
    assert seen["client"] is None and seen["server"] is None
    assert seen["peername"] is None and seen["sockname"] is None


@pytest.mark.parametrize("loop_name", LOOPS)
def test_tls_transport(loop_name: str, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    seen = _run(loop_name, _accept_one("127.0.0.1", tls=tls_contexts))
    assert seen["client"] == seen["peername"] == seen["local_client"]
    assert seen["server"] == seen["sockname"]


def test_client_gone_before_accept_is_handled() -> None:
    class Gone(asyncio.BaseTransport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            if name == "socket":
                sock = socket.socket()  # never connected: getpeername fails as for a reset client
                self.sock = sock
                return sock
            return default

    transport = Gone()
    try:
        assert transport_addresses(transport)[:2] == (None, None)
        assert transport.sock.fileno() >= 0  # still the caller's
    finally:
        transport.sock.close()


@pytest.fixture
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client
