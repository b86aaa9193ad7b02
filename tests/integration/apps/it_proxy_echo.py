"""What an app sees behind a proxy (tests/integration/test_it_proxies.py): an ASGI ``app`` and a WSGI ``wsgi``
that answer with the fields a proxy may change, as JSON."""

from __future__ import annotations

import json
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    tls = scope.get("extensions", {}).get("tls")
    seen = {"client": scope["client"], "server": scope["server"], "scheme": scope["scheme"],
            "root_path": scope["root_path"], "host": dict(scope["headers"]).get(b"host", b"").decode(),
            "tls_version": None if tls is None else tls.get("tls_version"),
            "cipher_suite": None if tls is None else tls.get("cipher_suite")}
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT",
            "SCRIPT_NAME")
    body = json.dumps({key: environ.get(key) for key in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
