"""A Starlette app with a plain route, a streaming response and a WebSocket, for the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello from starlette {request.url.path}")


async def numbers(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "5"))

    async def generate() -> AsyncIterator[str]:
        for i in range(count):
            yield f"{i}\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(generate(), media_type="text/plain")


async def ws_upper(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="upper" if "upper" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text.upper())
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[Route("/", home), Route("/numbers", numbers), WebSocketRoute("/ws", ws_upper)])
