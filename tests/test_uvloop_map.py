"""uvloop's descriptor -> transport map with plain weak references (bascule/uvloop_map.py), on the installed
uvloop: found and changed, and uvloop's refusal to poll a live transport's descriptor still in force."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import weakref
from typing import Any

import pytest

from bascule.server import new_event_loop
from bascule.uvloop_map import FdTransports, lighten

uvloop = pytest.importorskip("uvloop")


def the_map(loop: asyncio.AbstractEventLoop) -> Any:
    maps = [ref for ref in gc.get_referents(loop) if isinstance(ref, weakref.WeakValueDictionary)]
    assert len(maps) == 1
    return maps[0]


class Kept(asyncio.Protocol):
    """Keeps the server side's transport, and says when the connection ends."""

    def __init__(self, made: list[asyncio.BaseTransport], lost: asyncio.Event) -> None:
        self.made = made
        self.lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


async def accepted(made: list[asyncio.BaseTransport]) -> asyncio.BaseTransport:
    """The server side's transport of the connection just opened, once the loop has accepted it."""
    for _ in range(200):
        if made:
            return made.pop()
        await asyncio.sleep(0.01)
    raise AssertionError("the connection was not accepted within 2 s")


def test_the_server_loop_has_the_light_map() -> None:
    loop = new_event_loop()
    try:
        assert type(the_map(loop)) is FdTransports
        assert not lighten(loop)  # once is all: nothing left to change
    finally:
        loop.close()


def test_other_loops_are_left_alone() -> None:
    loop = asyncio.new_event_loop()
    try:
        before = {id(ref): type(ref) for ref in gc.get_referents(loop)}
        assert not lighten(loop)
        assert {id(ref): type(ref) for ref in gc.get_referents(loop)} == before
    finally:
        loop.close()


def test_a_plain_uvloop_map_is_a_weak_value_dictionary() -> None:
    """What lighten() looks for: if a uvloop release changes it, this says so (and lighten() leaves it)."""
    loop = uvloop.new_event_loop()
    try:
        assert type(the_map(loop)) is weakref.WeakValueDictionary
        assert lighten(loop)
        assert type(the_map(loop)) is FdTransports
    finally:
        loop.close()


def test_uvloop_still_refuses_a_live_transports_descriptor() -> None:
    """add_reader on an accepted connection's descriptor raises while its transport lives; once the transport is
    gone, the same descriptor number (now another socket's) is polled as any other, though its dead entry stays."""
    loop = new_event_loop()
    made: list[asyncio.BaseTransport] = []

    async def scenario() -> None:
        lost = asyncio.Event()
        server = await loop.create_server(lambda: Kept(made, lost), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        transport = await accepted(made)
        fd = transport.get_extra_info("socket").fileno()
        assert type(the_map(loop).data[fd]) is weakref.ref  # plain: no KeyedRef, no callback
        with pytest.raises(RuntimeError, match="used by transport"):
            loop.add_reader(fd, lambda: None)
        transport.close()
        await asyncio.wait_for(lost.wait(), 5)
        del transport
        gc.collect()
        assert fd in the_map(loop).data  # the dead entry stays (until a transport takes the number)
        with pytest.raises(KeyError):
            the_map(loop)[fd]
        a, b = socket.socketpair()  # the lowest free numbers: often the transport's old one
        if b.fileno() == fd:  # keep the number for a socket that can be read from
            a, b = b, a
        dup = a.fileno() != fd
        if dup:
            os.dup2(a.fileno(), fd)  # another socket at the same number
        try:
            readable = asyncio.Event()
            loop.add_reader(fd, readable.set)
            b.send(b"x")
            await asyncio.wait_for(readable.wait(), 5)
            loop.remove_reader(fd)
        finally:
            if dup:
                os.close(fd)
            a.close()
            b.close()
        client.close()
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_the_map_is_bounded_by_descriptor_numbers() -> None:
    """One entry per descriptor number used, however many connections came and went."""
    loop = new_event_loop()

    async def scenario() -> int:
        lost = asyncio.Event()
        made: list[asyncio.BaseTransport] = []
        server = await loop.create_server(lambda: Kept(made, lost), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(50):
            lost.clear()
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            (await accepted(made)).close()
            await asyncio.wait_for(lost.wait(), 5)
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return len(the_map(loop).data)

    try:
        entries = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert entries <= 8  # 50 connections, two sockets each, at a few reused numbers
