"""Apps for tests/integration/test_it_http3.py: an ASGI app (the root) and a WSGI app (mounted at /wsgi).

ASGI routes: / (hello), /scope (the scope's http_version, scheme and tls extension as JSON), /echo (the request
body back), /stream (?n chunks of 1 KiB, 20 ms apart), /slow (?s seconds, then 'done'), /pid (the worker's pid).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qs


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _echo_websocket(scope, receive, send)
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-type", b"text/plain")]
    if path == "/scope":
        tls = scope.get("extensions", {}).get("tls")
        facts = {"http_version": scope["http_version"], "scheme": scope["scheme"],
                 "tls_version": tls and tls["tls_version"], "server_cert": bool(tls and tls["server_cert"])}
        await _whole(send, json.dumps(facts).encode(), [(b"content-type", b"application/json")])
    elif path == "/echo":
        await _whole(send, body, headers)
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(int(query.get("n", "5"))):
            await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * 1024, "more_body": True})
            await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        await asyncio.sleep(float(query.get("s", "1")))
        await _whole(send, b"done", headers)
    elif path == "/pid":
        await _whole(send, str(os.getpid()).encode(), headers)
    else:
        await _whole(send, b"hello from asgi", headers)


async def _echo_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then echo each text message as 'HTTP_VERSION:text' until the client closes."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": f"{scope['http_version']}:{message.get('text')}"})


async def _whole(send: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b""
    text = f"{environ['SERVER_PROTOCOL']} {environ['wsgi.url_scheme']} {environ['PATH_INFO']} {len(body)}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]
