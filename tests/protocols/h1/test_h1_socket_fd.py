"""H1Connection.socket_fd(): the descriptor sendfile writes to, looked up on first use rather than at accept
(protocols/h1/connection.py). It may be asked first from a WSGI pool thread (can_sendfile), and after the
connection has closed, when the descriptor number may already belong to another socket."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

import uvloop

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.h1.connection import H1Connection


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


def test_socket_fd_on_first_use_from_a_pool_thread_and_none_once_closed() -> None:
    loop = uvloop.new_event_loop()
    ctx = ServerContext(Config(app="x:y", access_log=False), loop, lambda ex: None, access_log=False)
    conns: list[H1Connection] = []

    def factory() -> H1Connection:
        conn = H1Connection(ctx)
        conns.append(conn)
        return conn

    async def main() -> None:
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(conns) == 1 and conns[0].transport is not None)
        conn = conns[0]
        assert conn.sock_fd is None  # not looked up at accept
        fd = await loop.run_in_executor(None, conn.socket_fd)  # first asked from another thread
        assert fd is not None and conn.socket_fd() == fd
        with socket.socket(fileno=os.dup(fd)) as same:  # the connection's own socket
            assert same.getpeername() == writer.get_extra_info("sockname")
        writer.close()
        # a connection closed before anything asked: no descriptor (its number may be reused by then)
        _, writer2 = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(conns) == 2 and conns[1].transport is not None)
        writer2.close()
        await _until(lambda: conns[1].closed)
        assert await loop.run_in_executor(None, conns[1].socket_fd) is None
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
