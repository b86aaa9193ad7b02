"""A Starlette app with a plain route and a streaming response, for test_it_frameworks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello from starlette {request.url.path}")


async def numbers(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "5"))

    async def generate() -> AsyncIterator[str]:
        for i in range(count):
            yield f"{i}\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(generate(), media_type="text/plain")


app = Starlette(routes=[Route("/", home), Route("/numbers", numbers)])
