"""An ASGI app for the process-model tests: says which process and which code version answered.

GET /pid -> this worker's pid; GET /version -> VERSION; GET /sleep?s=N -> awaits N s; GET /block?s=N ->
blocks the event loop with time.sleep (a stuck worker); GET /env?name=X -> os.environ.get(X) or "-".
Lifespan startup fails when $IT_FAIL_STARTUP is set.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import parse_qs

VERSION = "one"


async def _reply(send, body):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def block_the_loop(seconds):
    time.sleep(seconds)  # a blocking call in async code: the worker's event loop is stuck here


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("IT_FAIL_STARTUP"):
                    await send({"type": "lifespan.startup.failed", "message": "no database here"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope["query_string"].decode())
    path = scope["path"]
    if path == "/pid":
        await _reply(send, str(os.getpid()).encode())
    elif path == "/version":
        await _reply(send, VERSION.encode())
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        await _reply(send, b"slept")
    elif path == "/block":
        block_the_loop(float(query.get("s", ["1"])[0]))
        await _reply(send, b"unblocked")
    elif path == "/env":
        await _reply(send, os.environ.get(query.get("name", ["-"])[0], "-").encode())
    else:
        await _reply(send, b"hello")
