"""Apps that stream without end, for tests/integration/test_it_h2_backpressure.py and test_it_h2_acks.py.

- ASGI ``app``: ``/stream`` sends 64 KiB ``http.response.body`` messages forever, awaiting nothing but
  ``send`` (so only the server's ``send`` can make it wait); any other path answers ``ok`` at once.
- WSGI ``wsgi_app`` (mounted at ``/wsgi``): ``/wsgi/stream`` yields 64 KiB pieces forever from a generator;
  any other path answers ``ok``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from it_lifespan import acknowledge

CHUNK = b"x" * (64 * 1024)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await acknowledge(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        while True:
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _forever() -> Iterator[bytes]:
    while True:
        yield CHUNK


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _forever()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
