"""The abuse list of issue 17 that test_h3_endpoint.py does not already cover: a rapid reset flood,
unidirectional streams (their limit, and unknown types whose data must not pile up), large unknown frames on
a request stream. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aioquic.buffer import encode_uint_var
from h3_support import Reply, h3_client, h3_server, run, until

from bascule.protocols.h3.connection import H3Conn

Scope = dict[str, Any]
GREASE = 0x1F * 7 + 0x21  # a reserved type (RFC 9114 6.2.3, 7.2.8): to be ignored by the receiver


async def ok(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def waits(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive())["type"] != "http.disconnect":
        pass


def the_conn(ctx: Any) -> H3Conn:
    conns = [c for c in ctx.connections if isinstance(c, H3Conn)]
    assert len(conns) == 1
    return conns[0]


def test_a_rapid_reset_flood_stays_within_the_stream_limit() -> None:
    """Requests opened and cancelled at once, for a second (CVE-2023-44487): the apps running at once never
    exceed MAX_STREAMS (a cancelled stream's slot waits for its app), the server leaves nothing behind, and the
    connection either still serves or was closed for excessive load (H3_EXCESSIVE_LOAD, the reset budget)."""
    running = peak = 0

    async def counting(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal running, peak
        if scope["type"] != "http":
            return
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.05)  # an app that does not look at disconnects for a while
        finally:
            running -= 1

    async def main() -> None:
        async with h3_server(counting, h2_max_concurrent_streams=10) as srv, h3_client(srv.port) as client:
            opened = 0
            loop = asyncio.get_running_loop()
            end = loop.time() + 1
            for _ in range(1000):  # bounded: up to 1000 rounds, 1 s
                if client.terminated is not None or loop.time() > end:
                    break
                quic = client._quic
                while quic.get_next_available_stream_id() // 4 < quic._remote_max_streams_bidi:
                    client.reset(client.start("/"))  # only within the client's credit: it waits for MAX_STREAMS
                    opened += 1
                await asyncio.sleep(0.002)
            assert opened > 20 and peak <= 10, (opened, peak)
            await until(lambda: srv.ctx.in_flight == 0 and running == 0)
            if client.terminated is None:
                await asyncio.sleep(0.6)  # a tick: held slots come back
                assert (await client.request()).status in (200, 500)
                conn = the_conn(srv.ctx)
                assert not conn.streams and not conn.slots.orphans
            else:
                assert client.terminated.error_code == 0x107, client.terminated
    run(main())


def test_unidirectional_streams_are_few_and_unknown_ones_are_discarded() -> None:
    """A client gets 8 unidirectional streams (HTTP/3 needs 3); what it sends on one of a type the server does
    not know is dropped as it arrives (nothing held), so its window keeps opening and nothing piles up."""

    async def main() -> None:
        async with h3_server(ok, h2_initial_window_size=64 * 1024) as srv, h3_client(srv.port) as client:
            assert (await client.request()).status == 200
            quic = client._quic
            assert quic._remote_max_streams_uni == 8
            sid = quic.get_next_available_stream_id(is_unidirectional=True)
            quic.send_stream_data(sid, encode_uint_var(GREASE))
            chunk = b"\0" * 16384
            for _ in range(64):  # 1 MiB through a 64 KiB window: only if the server keeps consuming
                quic.send_stream_data(sid, chunk)
            client.transmit()
            await until(lambda: quic._streams[sid].sender._buffer == b"" or False, 10)  # all sent and acknowledged
            conn = the_conn(srv.ctx)
            assert conn.h3 is not None
            h3_stream = conn.h3._stream.get(sid)
            assert h3_stream is None or len(h3_stream.buffer) == 0
            assert (await client.request()).status == 200
    run(main())


def test_a_large_unknown_frame_before_the_headers_is_not_buffered() -> None:
    """A reserved frame type of 1 MiB ahead of a request's HEADERS (allowed, RFC 9114 9): skipped as it
    arrives, through a 64 KiB window, then the request is served."""

    async def main() -> None:
        async with h3_server(ok, h2_initial_window_size=64 * 1024) as srv, h3_client(srv.port) as client:
            quic = client._quic
            sid = quic.get_next_available_stream_id()
            size = 1 << 20
            quic.send_stream_data(sid, encode_uint_var(GREASE) + encode_uint_var(size))
            chunk = b"\0" * 16384
            for _ in range(size // len(chunk)):
                quic.send_stream_data(sid, chunk)
            client.transmit()
            await until(lambda: quic._streams[sid].sender._buffer == b"" or False, 10)
            conn = the_conn(srv.ctx)
            assert conn.h3 is not None
            assert len(conn.h3._stream[sid].buffer) < 64 * 1024
            client.replies[sid] = Reply()
            client.waiters[sid] = asyncio.get_running_loop().create_future()
            client.h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"127.0.0.1"),
                                         (b":path", b"/")], end_stream=True)
            client.transmit()
            assert (await client.wait(sid)).status == 200
    run(main())
