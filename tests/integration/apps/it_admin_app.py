"""An ASGI app for the admin-listener and scale-out tests.

GET / -> "NAME PID" (NAME from $IT_NAME); GET /sleep?s=N -> awaits N s first; a WebSocket at /ws echoes.
Lifespan startup waits $IT_STARTUP_DELAY seconds (so a test can see /readyz before it is done).
``ready`` is the --readiness-check: false while the file $IT_NOT_READY exists.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import parse_qs


def ready():
    flag = os.environ.get("IT_NOT_READY")
    return not (flag and os.path.exists(flag))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ.get("IT_STARTUP_DELAY", "0")))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    if scope["path"] == "/sleep":
        await asyncio.sleep(float(query.get("s", ["0"])[0]))
    body = f"{os.environ.get('IT_NAME', 'app')} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
