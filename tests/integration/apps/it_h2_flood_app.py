"""An ASGI app that counts its invocations, for the HTTP/2 flood tests (tests/integration/test_it_h2_floods.py).

- ``/stats`` answers JSON: calls per path, app invocations running now and the most ever running at once
  (``/stats`` and ``/legit`` are not counted in ``active``/``peak``);
- ``/legit`` answers ``ok`` at once (the legitimate client's requests);
- ``/sleep?S`` sleeps S seconds (default 2) without reading the request, then answers ``ok`` - work that
  would pile up if reset streams were not bounded;
- ``/hold`` waits for the request body to end (or the client to go) before answering - a stream held open;
- any other path answers ``ok`` at once.
"""

from __future__ import annotations

import asyncio
import json

from it_lifespan import acknowledge

calls: dict[str, int] = {}
state = {"active": 0, "peak": 0}


async def _respond(send, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await acknowledge(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stats":
        await _respond(send, json.dumps({"calls": calls, **state}).encode(), b"application/json")
        return
    calls[path] = calls.get(path, 0) + 1
    if path == "/legit":
        await _respond(send, b"ok")
        return
    state["active"] += 1
    state["peak"] = max(state["peak"], state["active"])
    try:
        if path == "/sleep":
            await asyncio.sleep(float(scope["query_string"] or 2))
        elif path == "/hold":
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    break
        await _respond(send, b"ok")
    finally:
        state["active"] -= 1
