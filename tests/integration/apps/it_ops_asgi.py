"""A plain ASGI app for the operations tests: slow requests, scope echo, a lifespan that leaves a marker.

GET /hello -> "hello"; GET /sleep?s=SECONDS -> sleeps, then "slept"; GET /scope -> JSON of root_path/path;
POST /echo -> JSON of the body's length and sha256. Lifespan shutdown writes "shutdown" to $IT_MARKER.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from urllib.parse import parse_qs


async def _reply(send, status, body, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker = os.environ.get("IT_MARKER")
            if marker:
                with open(marker, "w") as fh:
                    fh.write("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"].removeprefix(scope["root_path"])
    query = parse_qs(scope["query_string"].decode())
    if path == "/sleep":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        await _reply(send, 200, b"slept")
    elif path == "/scope":
        body = json.dumps({"root_path": scope["root_path"], "path": scope["path"]}).encode()
        await _reply(send, 200, body, b"application/json")
    elif path == "/echo":
        digest, size, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        await _reply(send, 200, json.dumps({"size": size, "sha256": digest.hexdigest()}).encode(),
                     b"application/json")
    else:
        await _reply(send, 200, b"hello")
