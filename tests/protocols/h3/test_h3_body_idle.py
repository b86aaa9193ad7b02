"""--timeout-body-idle on HTTP/3, per stream: a real QuicServer on loopback UDP, aioquic's client, the server's
own tick (twice a second) and a timeout of one second.

A stream whose app waits for body bytes that do not come is answered 408 (then STOP_SENDING ends the upload),
or reset with H3_REQUEST_CANCELLED once its response had started; its app sees http.disconnect. A slow upload
whose gaps are each under the timeout is not cut, and the connection's other streams go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from aioquic.h3.connection import ErrorCode
from h3_support import h3_client, h3_server, run, until

Scope = MutableMapping[str, Any]
TIMEOUT = 1.0


class Recorder:
    """Reads the whole body and answers with its length; /stream-first starts its response before reading.
    What receive() gave each path is kept in ``seen``."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        seen = self.seen.setdefault(path, [])
        if path == "/stream-first":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"working", "more_body": True})
        size = 0
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if path != "/stream-first":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % size})


def test_a_stalled_body_gets_408_while_a_slow_one_and_other_streams_go_on() -> None:
    app = Recorder()

    async def main() -> None:
        async with h3_server(app, timeout_body_idle=TIMEOUT) as srv, h3_client(srv.port) as client:
            stalled = client.start("/stalled", "POST", end=False)  # HEADERS, then nothing
            slow = client.start("/slow", "POST", end=False)
            for _ in range(10):  # 10 x 0.3 s: three times the timeout in all, never idle that long
                await asyncio.sleep(TIMEOUT * 0.3)
                client.send(slow, b"x")
            client.send(slow, b"", True)
            reply = await client.wait(stalled, 5)
            assert reply.status == 408 and reply.ended
            assert b"timeout_body_idle" in reply.body
            assert app.seen["/stalled"] == ["http.disconnect"]
            slow_reply = await client.wait(slow, 5)
            assert slow_reply.status == 200 and slow_reply.body == b"10" and slow_reply.reset is None
            assert (await client.request("/after", "POST", body=b"abc")).body == b"3"  # the connection goes on
            assert client.terminated is None
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_a_started_response_is_reset_with_request_cancelled() -> None:
    app = Recorder()

    async def main() -> None:
        async with h3_server(app, timeout_body_idle=TIMEOUT) as srv, h3_client(srv.port) as client:
            sid = client.start("/stream-first", "POST", end=False)
            await client.wait(sid, 5)
            reply = client.replies[sid]
            assert reply.status == 200 and reply.body == b"working"
            assert reply.reset == ErrorCode.H3_REQUEST_CANCELLED and not reply.ended
            assert app.seen["/stream-first"] == ["http.disconnect"]
            await until(lambda: srv.ctx.in_flight == 0)
            assert client.terminated is None
    run(main())
