"""A plain ASGI WebSocket app with one behaviour per path, and a WSGI app to mount, for test_it_websocket."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "http":
        body = f"http {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"token")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        return
    if path == "/close-before-accept":
        await send({"type": "websocket.close", "code": 4003})
        return
    if path == "/raise-before":
        raise RuntimeError("refusing by accident")
    if path == "/return-before":
        return
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] and path == "/scope" else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": [(b"x-extra", b"yes")]})
    if path == "/scope":
        info = {key: scope[key] for key in ("type", "path", "root_path", "scheme", "http_version", "subprotocols")}
        info["raw_path"] = scope["raw_path"].decode()
        info["query_string"] = scope["query_string"].decode()
        info["asgi"] = scope["asgi"]
        info["extensions"] = sorted(scope["extensions"])
        info["header_names"] = sorted({name.decode() for name, _ in scope["headers"]})
        await send({"type": "websocket.send", "text": json.dumps(info)})
    elif path == "/raise-after":
        raise RuntimeError("broken after accept")
    elif path == "/server-close":
        await send({"type": "websocket.send", "text": "closing"})
        await send({"type": "websocket.close", "code": 4001, "reason": "bye now"})
    elif path == "/hold":
        message = await receive()
        marker = query.get("marker")
        if marker:
            Path(marker).write_text(json.dumps(message))
        return
    # /echo and anything else: echo until the client leaves, closing when asked to
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            continue
        await send({"type": "websocket.send", "text": text, "bytes": message.get("bytes")})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"wsgi {environ['REQUEST_METHOD']} {environ['PATH_INFO']} upgrade={environ.get('HTTP_UPGRADE')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
