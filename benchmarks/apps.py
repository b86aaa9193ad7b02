"""The benchmark apps: one ASGI and one WSGI app that answer the same routes with the same bytes.

Every server in benchmarks/run.py serves one of these two callables, so a difference in the numbers is a
difference in the servers. The apps do as little as an app can: bodies are built once at import, and
each route answers with the same status, headers and body whichever interface serves it.

Routes (anything else answers like ``/``):

- ``GET /``        13-byte ``text/plain`` body (``Hello, world!``)
- ``GET /json``    ~1 KiB ``application/json`` body (precomputed bytes)
- ``GET /big``     64 KiB ``application/octet-stream`` body
- ``POST /echo``   the request body, read in full, sent back with its length
- ``GET /stream``  16 chunks of 1 KiB with no content-length, so HTTP/1.1 servers send it chunked

The ASGI app also completes the lifespan protocol, and answers ``http.disconnect`` by returning.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

__all__ = ["BIG", "CHUNK", "CHUNKS", "JSON", "TEXT", "asgi_app", "wsgi_app"]

TEXT = b"Hello, world!"
JSON = json.dumps(
    {
        "id": 1,
        "name": "bascule",
        "tags": ["wsgi", "asgi", "http/1.1", "benchmark"],
        "items": [{"n": i, "label": f"item-{i:03d}", "ok": i % 2 == 0} for i in range(24)],
    },
    separators=(",", ":"),
).encode()
BIG = b"x" * (64 * 1024)
CHUNK = b"s" * 1024
CHUNKS = 16

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
StartResponse = Callable[..., Any]

_TEXT_PLAIN = b"text/plain"
_ROUTES: dict[str, tuple[bytes, bytes]] = {
    "/": (_TEXT_PLAIN, TEXT),
    "/json": (b"application/json", JSON),
    "/big": (b"application/octet-stream", BIG),
}


def _head(content_type: bytes, length: int | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode("ascii")))
    return headers


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _ws_echo(receive: Receive, send: Send) -> None:
    """WebSocket at any path: accept, then echo every message (benchmarks/websocket.py)."""
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI 3 app serving the benchmark routes."""
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind == "websocket":
        await _ws_echo(receive, send)
        return
    if kind != "http":
        return
    path = scope["path"]
    if path == "/echo":
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200,
                    "headers": _head(b"application/octet-stream", len(body))})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": _head(_TEXT_PLAIN, None)})
        for _ in range(CHUNKS):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    content_type, body = _ROUTES.get(path, (_TEXT_PLAIN, TEXT))
    await send({"type": "http.response.start", "status": 200, "headers": _head(content_type, len(body))})
    await send({"type": "http.response.body", "body": body})


def _stream() -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield CHUNK


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """WSGI (PEP 3333) app serving the benchmark routes."""
    path = environ.get("PATH_INFO", "/")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream()
    content_type, body = _ROUTES.get(path, (_TEXT_PLAIN, TEXT))
    start_response("200 OK", [("Content-Type", content_type.decode("ascii")),
                              ("Content-Length", str(len(body)))])
    return [body]
