"""Real-framework routes, one app for test_it_real_apps: the same module is served by bascule and uvicorn.

A plain ASGI router sends each request by its first path segment to FastAPI, Starlette, Litestar, Quart,
Django (configured here, in code) or Channels; every framework declares its routes with the full path, so
no scope is rewritten and both servers hand every app the identical scope. The lifespan goes to the FastAPI
app, whose lifespan records what it saw (a current task, sniffio, an anyio task group) for
``/fastapi/lifespan`` to report: a lifespan failure shows as that route's body, never as a server that
does not start.

Most routes need what every real server gives an ASGI call: a current asyncio Task from its first
instruction (sniffio, anyio, ``asyncio.timeout`` and ``asyncio.TaskGroup`` ask for it), with its own copy of
the context variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import sniffio
from asgiref.sync import sync_to_async
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from channels.routing import URLRouter
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from fastapi import BackgroundTasks, Depends, FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from litestar import Litestar, get
from litestar.response import Stream
from quart import Quart, websocket
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

STATIC = Path(__file__).resolve().parent / "it_real_static"


def probe() -> dict[str, object]:
    """What an async library sees here: a current Task, and which library sniffio detects."""
    found: dict[str, object] = {"task": asyncio.current_task() is not None}
    try:
        found["sniffio"] = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError as exc:
        found["sniffio"] = f"error: {exc}"
    return found


def in_worker_thread() -> bool:
    return threading.current_thread() is not threading.main_thread()


def numbered(prefix: str, count: int = 3) -> Iterator[str]:
    """A plain (sync) iterator of lines: what frameworks iterate in a worker thread."""
    for i in range(count):
        yield f"{prefix}-{i}\n"


# -- FastAPI -------------------------------------------------------------------------------------------

LIFESPAN: dict[str, object] = {}
BACKGROUND: dict[str, list[str]] = {}
REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    try:
        LIFESPAN.update(probe())
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0)
        LIFESPAN["anyio_task_group"] = True
    except Exception as exc:  # reported by /fastapi/lifespan, so the servers start either way
        LIFESPAN["error"] = f"{type(exc).__name__}: {exc}"
    yield


fastapi_app = FastAPI(lifespan=lifespan)
fastapi_app.mount("/fastapi/static", StaticFiles(directory=STATIC), name="static")


@fastapi_app.get("/fastapi/plain")
async def fastapi_plain() -> dict[str, object]:
    return {"plain": True}


@fastapi_app.get("/fastapi/probe")
async def fastapi_probe() -> dict[str, object]:
    return probe()


@fastapi_app.get("/fastapi/lifespan")
async def fastapi_lifespan() -> dict[str, object]:
    return LIFESPAN


@fastapi_app.get("/fastapi/sync-def")
def fastapi_sync_def() -> dict[str, object]:
    return {"def": True, "worker_thread": in_worker_thread()}


def dep_plain() -> str:
    return "plain"


def dep_yield() -> Iterator[str]:
    yield "yield"


@fastapi_app.get("/fastapi/sync-dep")
async def fastapi_sync_dep(a: str = Depends(dep_plain), b: str = Depends(dep_yield)) -> dict[str, object]:
    return {"deps": [a, b]}


@fastapi_app.get("/fastapi/file")
async def fastapi_file() -> FileResponse:
    return FileResponse(STATIC / "hello.txt")


@fastapi_app.get("/fastapi/stream-sync")
async def fastapi_stream_sync() -> StreamingResponse:
    return StreamingResponse(numbered("sync"), media_type="text/plain")


@fastapi_app.get("/fastapi/stream-async")
async def fastapi_stream_async() -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for line in numbered("async"):
            await asyncio.sleep(0)
            yield line
    return StreamingResponse(lines(), media_type="text/plain")


@fastapi_app.get("/fastapi/is-disconnected")
async def fastapi_is_disconnected(request: Request) -> dict[str, object]:
    return {"disconnected": await request.is_disconnected()}


@fastapi_app.get("/fastapi/anyio-task-group")
async def fastapi_anyio_task_group() -> dict[str, object]:
    done: list[int] = []

    async def work(i: int) -> None:
        await anyio.sleep(0)
        done.append(i)

    async with anyio.create_task_group() as group:
        for i in range(3):
            group.start_soon(work, i)
    thread = await anyio.to_thread.run_sync(in_worker_thread)
    return {"done": sorted(done), "to_thread": thread}


@fastapi_app.get("/fastapi/asyncio-task-group")
async def fastapi_asyncio_task_group() -> dict[str, object]:
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i * i

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(work(i)) for i in range(3)]
    return {"squares": [t.result() for t in tasks]}


@fastapi_app.get("/fastapi/asyncio-timeout")
async def fastapi_asyncio_timeout() -> dict[str, object]:
    async with asyncio.timeout(10):
        await asyncio.sleep(0)
    try:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(10)
        fired = False
    except TimeoutError:
        fired = True
    return {"fired": fired}


@fastapi_app.get("/fastapi/httpx")
async def fastapi_httpx(request: Request) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=str(request.base_url), timeout=5) as client:
        inner = await client.get("/fastapi/plain")
    return {"status": inner.status_code, "body": inner.json()}


def background_sync(token: str) -> None:
    BACKGROUND.setdefault(token, []).append("sync")


async def background_async(token: str) -> None:
    await asyncio.sleep(0)
    BACKGROUND.setdefault(token, []).append("async")


@fastapi_app.get("/fastapi/background")
async def fastapi_background(token: str, tasks: BackgroundTasks) -> dict[str, object]:
    tasks.add_task(background_sync, token)
    tasks.add_task(background_async, token)
    return {"scheduled": 2}


@fastapi_app.get("/fastapi/background-log")
async def fastapi_background_log(token: str) -> dict[str, object]:
    return {"ran": sorted(BACKGROUND.get(token, []))}


@fastapi_app.get("/fastapi/contextvar")
async def fastapi_contextvar(value: str) -> dict[str, object]:
    previous = REQUEST_VAR.get()
    REQUEST_VAR.set(value)
    return {"previous": previous}


@fastapi_app.websocket("/fastapi/ws")
async def fastapi_ws(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json(probe())
    for _ in range(2):
        with anyio.fail_after(10):
            text = await ws.receive_text()
        await ws.send_text(f"echo:{text}")
    await ws.close(1000)


# -- Starlette -----------------------------------------------------------------------------------------


class AddHeader(BaseHTTPMiddleware):
    async def dispatch(self, request: StarletteRequest, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-middleware"] = "ran"
        return response


async def starlette_hello(_request: StarletteRequest) -> Response:
    return PlainTextResponse("through BaseHTTPMiddleware")


async def starlette_sse(_request: StarletteRequest) -> Response:
    async def events() -> AsyncIterator[dict[str, str]]:
        for i in range(3):
            yield {"event": "tick", "data": str(i)}
    return EventSourceResponse(events(), ping=60)


async def starlette_ws(ws: StarletteWebSocket) -> None:
    await ws.accept()
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 0)
    await ws.send_text(json.dumps(probe()))
    for _ in range(2):
        with anyio.fail_after(10):
            text = await ws.receive_text()
        await ws.send_text(f"echo:{text}")
    await ws.close(1000)


starlette_app = Starlette(routes=[
    Mount("/starlette/middleware", app=Starlette(routes=[Route("/hello", starlette_hello)],
                                                 middleware=[Middleware(AddHeader)])),
    Route("/starlette/sse", starlette_sse),
    WebSocketRoute("/starlette/ws", starlette_ws),
])


# -- Litestar ------------------------------------------------------------------------------------------


@get("/litestar/sync", sync_to_thread=True)
def litestar_sync() -> dict[str, object]:
    return {"litestar": "sync", "worker_thread": in_worker_thread()}


@get("/litestar/stream", sync_to_thread=False)
def litestar_stream() -> Stream:
    return Stream(numbered("litestar"), media_type="text/plain")


@get("/litestar/probe")
async def litestar_probe() -> dict[str, object]:
    return probe()


litestar_app = Litestar([litestar_sync, litestar_stream, litestar_probe])


# -- Quart ---------------------------------------------------------------------------------------------

quart_app = Quart(__name__)


@quart_app.route("/quart/probe")
async def quart_probe() -> dict[str, object]:
    return probe()


@quart_app.route("/quart/stream")
async def quart_stream() -> tuple[AsyncIterator[bytes], int, dict[str, str]]:
    async def lines() -> AsyncIterator[bytes]:
        for line in numbered("quart"):
            await asyncio.sleep(0)
            yield line.encode()
    return lines(), 200, {"content-type": "text/plain"}


@quart_app.websocket("/quart/ws")
async def quart_ws() -> None:
    await websocket.accept()
    await websocket.send(json.dumps(probe()))
    for _ in range(2):
        text = await asyncio.wait_for(websocket.receive(), 10)
        await websocket.send(f"echo:{text!s}")


# -- Django (async views), configured in code; the URLconf is this module ------------------------------

settings.configure(
    SECRET_KEY="integration-tests-only-not-secret",
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    DATABASES={},
    USE_TZ=True,
)
django_app = get_asgi_application()


async def django_async(_request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return JsonResponse(probe())


async def django_sync_to_async(_request: HttpRequest) -> HttpResponse:
    return JsonResponse({"worker_thread": await sync_to_async(in_worker_thread)()})


def django_sync(_request: HttpRequest) -> HttpResponse:
    return JsonResponse({"django": "sync"})


async def django_stream(_request: HttpRequest) -> HttpResponse:
    async def rows() -> AsyncIterator[str]:
        for line in numbered("django"):
            await asyncio.sleep(0)
            yield line
    return StreamingHttpResponse(rows(), content_type="text/plain")


# -- Channels ------------------------------------------------------------------------------------------


class ChannelsHttp(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, json.dumps(probe()).encode(),
                                 headers=[(b"content-type", b"application/json")])


class ChannelsAsyncEcho(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=json.dumps(probe()))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")


class ChannelsSyncEcho(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        self.send(text_data=json.dumps({"worker_thread": in_worker_thread()}))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=f"echo:{text_data}")


urlpatterns = [
    path("django/async/", django_async),
    path("django/sync-to-async/", django_sync_to_async),
    path("django/sync/", django_sync),
    path("django/stream/", django_stream),
]

channels_app = URLRouter([
    path("channels/http", ChannelsHttp.as_asgi()),
    path("channels/ws", ChannelsAsyncEcho.as_asgi()),
    path("channels/ws-sync", ChannelsSyncEcho.as_asgi()),
])


# -- The router both servers serve ---------------------------------------------------------------------


async def asgi_probe(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI route: the bare facts, with no framework in between."""
    body = json.dumps(probe()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


MOUNTS: dict[str, Any] = {  # ASGI apps, each framework with its own typing of the three arguments
    "asgi": asgi_probe,
    "fastapi": fastapi_app,
    "starlette": starlette_app,
    "litestar": litestar_app,
    "quart": quart_app,
    "django": django_app,
    "channels": channels_app,
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await fastapi_app(scope, receive, send)
        return
    target = MOUNTS.get(scope["path"].split("/", 2)[1])
    if target is not None:
        await target(scope, receive, send)
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"no such mount"})
    else:
        await send({"type": "websocket.close", "code": 1000})
