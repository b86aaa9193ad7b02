"""The ASGI lifespan handshake the bare test apps share: startup and shutdown acknowledged, nothing else.

Not an app: it_h2_flood_app, it_h2_stream_app and it_ws_flood_app call :func:`acknowledge` for a lifespan
scope (the server imports them from this directory, so a plain import works).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def acknowledge(receive: Receive, send: Send) -> None:
    """Answer lifespan.startup and lifespan.shutdown; return after the shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
