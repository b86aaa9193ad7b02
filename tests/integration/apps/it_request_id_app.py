"""Apps for the JSON access-log and request-id tests: each answers with the request id it was given.

ASGI ``app``: GET /id -> JSON {"extension": scope extension id, "header": X-Request-ID as received};
GET /stream -> the head, then 0.3 s later the body (time to first byte well under the duration).
WSGI ``wsgi``: GET /id -> JSON {"environ": environ["bascule.request_id"], "header": HTTP_X_REQUEST_ID}.
"""

from __future__ import annotations

import asyncio
import json


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"last"})
        return
    ext = scope["extensions"].get("bascule.request_id")
    seen = {"extension": ext["id"] if ext else None,
            "header": dict(scope["headers"]).get(b"x-request-id", b"").decode() or None}
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    seen = {"environ": environ.get("bascule.request_id"), "header": environ.get("HTTP_X_REQUEST_ID")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]
