"""What an HTTP/1.1 connection makes at accept, kept to what a connection that is not pipelined needs.

- The pipeline queue: one empty deque shared by every connection until one of them has a request waiting; that
  one gets a deque of its own, and the shared one stays empty whatever happens next.
- The client's address: an IPv4 (host, port) pair from the transport is kept as it is; anything else (IPv6's
  4-tuple, a Unix socket) goes through peer_address as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.exchange import Exchange
from bascule.protocols.h1 import connection as h1_connection
from bascule.protocols.h1.connection import H1Connection

GET = b"GET /%d HTTP/1.1\r\nhost: a\r\n\r\n"


class Peer(FakeTransport):
    def __init__(self, peername: Any) -> None:
        super().__init__()
        self.peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connection(loop: asyncio.AbstractEventLoop, peername: Any = ("127.0.0.1", 5000)) -> H1Connection:
    served: list[Exchange] = []
    ctx = ServerContext(Config(app="x:y", access_log=False), loop, served.append, access_log=False)
    conn = H1Connection(ctx, local=("127.0.0.1", 8000))
    conn.connection_made(Peer(peername))
    return conn


def test_connections_share_one_empty_queue_until_a_request_waits(loop: asyncio.AbstractEventLoop) -> None:
    shared = h1_connection._NO_QUEUE
    quiet, pipelined = connection(loop), connection(loop)
    assert quiet.queue is shared and pipelined.queue is shared  # nothing made per connection
    quiet.data_received(GET % 1)  # one request at a time: no queue needed
    assert quiet.queue is shared and quiet.active is not None
    pipelined.data_received(GET % 1 + GET % 2 + GET % 3)  # two wait behind the first
    assert pipelined.queue is not shared and len(pipelined.queue) == 2
    assert not shared
    active = pipelined.active
    assert active is not None
    active.send_simple(200, b"ok")  # the next one is taken from the connection's own queue
    assert pipelined.active is not active and len(pipelined.queue) == 1
    pipelined.connection_lost(None)  # the rest are dropped
    quiet.connection_lost(None)
    assert not pipelined.queue and not shared and quiet.queue is shared


@pytest.mark.parametrize(("peername", "client"), [
    (("192.0.2.1", 40000), ("192.0.2.1", 40000)),
    (("2001:db8::1", 40000, 0, 0), ("2001:db8::1", 40000)),  # IPv6: flowinfo and scope id dropped
    ("/run/bascule.sock", None),  # a Unix socket: no address
    (None, None),
])
def test_the_client_address_from_the_transport(loop: asyncio.AbstractEventLoop, peername: Any,
                                              client: tuple[str, int] | None) -> None:
    conn = connection(loop, peername)
    assert conn.client == client
    if isinstance(peername, tuple) and len(peername) == 2:
        assert conn.client is peername  # kept as uvloop gave it: no new tuple per connection
