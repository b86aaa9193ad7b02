"""Apps that report what they learn about the connection, for test_it_tls: scheme and the ASGI ``tls`` extension.

The ASGI app answers every HTTP request with a JSON object of its scope's scheme, http_version and
extensions["tls"] (absent: null); a WebSocket to it is accepted, sends the same facts as its first message,
then echoes. The WSGI app answers with wsgi.url_scheme and HTTPS from its environ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]


def _facts(scope: MutableMapping[str, Any]) -> str:
    return json.dumps({"scheme": scope["scheme"], "http_version": scope["http_version"],
                       "tls": scope["extensions"].get("tls")})


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": _facts(scope).encode()})
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": _facts(scope)})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps({"url_scheme": environ["wsgi.url_scheme"], "https": environ.get("HTTPS")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
