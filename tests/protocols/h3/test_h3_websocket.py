"""WebSockets over HTTP/3 (RFC 9220): an extended CONNECT stream carries the session, next to requests."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

from h3_support import h3_client, h3_server, run, until

Scope = dict[str, Any]
SCOPES: list[Scope] = []
DISCONNECTS: list[int] = []


def ws_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(data))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    if scope["type"] != "websocket":
        return
    SCOPES.append(scope)
    await receive()
    if scope["path"] == "/deny":
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            DISCONNECTS.append(message["code"])
            return
        await send({"type": "websocket.send", "text": "echo:" + message["text"]})


WS = [(b"sec-websocket-version", b"13")]
PROTOCOL = [(b":protocol", b"websocket")]


def test_websocket_over_extended_connect() -> None:
    SCOPES.clear()

    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            sid = client.start("/ws", "CONNECT", WS, end=False, extra_pseudo=PROTOCOL)
            await until(lambda: client.replies[sid].status != 0)
            assert client.replies[sid].status == 200
            client.send(sid, ws_frame("hi"))
            await until(lambda: len(client.replies[sid].body) >= 9)
            assert client.replies[sid].body == b"\x81\x07echo:hi"
            assert (await client.request("/plain")).body == b"plain"  # requests go on beside it
            client.send(sid, bytes((0x88, 0x82)) + b"\0\0\0\0" + struct.pack(">H", 1000))
            reply = await client.wait(sid)
            assert reply.body.endswith(b"\x88\x02\x03\xe8")  # our close, echoing 1000
            denied = client.start("/deny", "CONNECT", WS, end=False, extra_pseudo=PROTOCOL)
            assert (await client.wait(denied)).status == 403
    run(main())
    assert SCOPES[0]["http_version"] == "3" and SCOPES[0]["scheme"] == "wss"
    assert "tls" in SCOPES[0]["extensions"]


def test_websocket_disconnect_when_the_client_resets_the_stream() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            sid = client.start("/ws", "CONNECT", WS, end=False, extra_pseudo=PROTOCOL)
            await until(lambda: client.replies[sid].status == 200)
            DISCONNECTS.clear()
            client.reset(sid)
            await until(lambda: DISCONNECTS == [1006])
            assert (await client.request("/after")).body == b"plain"
    run(main())


def test_a_websocket_app_that_does_not_read_holds_the_clients_window() -> None:
    """Frames an app does not receive queue in the session up to --ws-max-queue; then its reading pauses and
    what arrives is held, which keeps the QUIC stream window shut: the client cannot push more."""
    release = asyncio.Event()
    received: list[int] = []

    async def sleepy(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(len(message["text"]))

    async def main() -> None:
        window = 64 * 1024
        async with h3_server(sleepy, h2_initial_window_size=window, ws_max_queue=4) as srv, \
                h3_client(srv.port) as client:
            sid = client.start("/ws", "CONNECT", WS, end=False, extra_pseudo=PROTOCOL)
            await until(lambda: client.replies[sid].status == 200)
            frame = ws_frame("m" * 100)
            for _ in range(5000):  # 530 KB if nothing held it back
                client.send(sid, frame)
            await asyncio.sleep(0.5)
            (conn,) = [c for c in srv.ctx.connections if hasattr(c, "quic")]
            quic_stream = conn.quic._streams[sid]
            assert quic_stream.receiver.highest_offset <= 3 * window  # what the client could send
            release.set()
            await until(lambda: len(received) == 5000, 20)
    run(main(), timeout=60)
