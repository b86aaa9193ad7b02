"""Real-framework routes served by bascule and by uvicorn, compared answer for answer.

One app module (apps/it_real_apps.py: FastAPI, Starlette with sse-starlette, Litestar, Quart, Django async
views and Channels behind a plain ASGI prefix router) is started once per test module under each server,
``python -m bascule`` and ``python -m uvicorn``, each a subprocess. Every test asks both the same thing
and wants the same answer: status, headers and body, the body byte for byte. Only what may differ is left
out: ``server``, ``date``, and the framing fields (length or chunked, ``connection``) that are the
server's to write. uvicorn's answer is also checked on its own (200 and a marker), so a route broken on
both servers alike fails.

These are the routes that need what every ASGI server gives a call: a current asyncio Task from its first
instruction (sniffio, anyio, ``asyncio.timeout``, ``asyncio.TaskGroup``, threadpools, httpx), its own copy
of the context variables, and background work that runs after the response.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import clean_env, spawn, spawn_uvicorn, tcp_ready
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

APP = "it_real_apps:app"
TIMEOUT = 10.0
# what may differ between two servers: their names, the clock, and the connection-level fields that are the
# server's to write (bascule gives a length to a body that came in one message where uvicorn chunks it, and
# manages keep-alive itself where uvicorn passes an app's "connection: keep-alive" on); bodies are compared
# byte for byte
IGNORED_HEADERS = frozenset({"server", "date", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass(frozen=True)
class Servers:
    bascule: Server
    uvicorn: Server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    logs = tmp_path_factory.mktemp("real-apps")
    b_port, u_port = free_port(), free_port()
    bascule = Server("bascule", f"http://127.0.0.1:{b_port}", logs / "bascule.log")
    uvicorn = Server("uvicorn", f"http://127.0.0.1:{u_port}", logs / "uvicorn.log")
    with spawn([APP, "--port", str(b_port), "--workers", "1"], env=clean_env(), log=bascule.log,
               ready=tcp_ready(b_port)) as b_proc, \
         spawn_uvicorn(APP, u_port, log=uvicorn.log, extra=("--lifespan", "on", "--workers", "1")) as u_proc:
        yield Servers(bascule, uvicorn)
        assert b_proc.poll() is None, f"bascule died: {bascule.tail()}"
        assert u_proc.poll() is None, f"uvicorn died: {uvicorn.tail()}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def fetch(server: Server, path: str) -> Answer:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        r = client.get(path)
    headers = tuple(sorted((k.lower(), v) for k, v in r.headers.multi_items() if k.lower() not in IGNORED_HEADERS))
    return Answer(r.status_code, headers, r.content)


# path, and a piece of uvicorn's body that shows the route really did its work
HTTP_ROUTES = [
    ("/asgi/probe", b'"task": true, "sniffio": "asyncio"'),
    ("/fastapi/probe", b'"task":true,"sniffio":"asyncio"'),
    ("/fastapi/lifespan", b'"anyio_task_group":true'),
    ("/fastapi/sync-def", b'"worker_thread":true'),
    ("/fastapi/sync-dep", b'"deps":["plain","yield"]'),
    ("/fastapi/file", b"static file served"),
    ("/fastapi/static/hello.txt", b"static file served"),
    ("/fastapi/stream-sync", b"sync-0\nsync-1\nsync-2\n"),
    ("/fastapi/stream-async", b"async-0\nasync-1\nasync-2\n"),
    ("/fastapi/is-disconnected", b'"disconnected":false'),
    ("/fastapi/anyio-task-group", b'"done":[0,1,2],"to_thread":true'),
    ("/fastapi/asyncio-task-group", b'"squares":[0,1,4]'),
    ("/fastapi/asyncio-timeout", b'"fired":true'),
    ("/fastapi/httpx", b'"status":200,"body":{"plain":true}'),
    ("/starlette/middleware/hello", b"through BaseHTTPMiddleware"),
    ("/starlette/sse", b"event: tick\r\ndata: 2\r\n\r\n"),
    ("/litestar/sync", b'"worker_thread":true'),
    ("/litestar/stream", b"litestar-0\nlitestar-1\nlitestar-2\n"),
    ("/litestar/probe", b'"task":true,"sniffio":"asyncio"'),
    ("/quart/probe", b'"task":true'),
    ("/quart/stream", b"quart-0\nquart-1\nquart-2\n"),
    ("/django/async/", b'"task": true, "sniffio": "asyncio"'),
    ("/django/sync-to-async/", b'"worker_thread": true'),
    ("/django/sync/", b'"django": "sync"'),
    ("/django/stream/", b"django-0\ndjango-1\ndjango-2\n"),
    ("/channels/http", b'"task": true, "sniffio": "asyncio"'),
]


@pytest.mark.parametrize(("path", "marker"), HTTP_ROUTES, ids=[p.strip("/") for p, _ in HTTP_ROUTES])
def test_http_route_answers_as_on_uvicorn(servers: Servers, path: str, marker: bytes) -> None:
    expected = fetch(servers.uvicorn, path)
    assert expected.status == 200 and marker in expected.body, (expected, servers.uvicorn.tail())
    got = fetch(servers.bascule, path)
    assert got == expected, f"bascule log:\n{servers.bascule.tail()}"


def background_outcome(server: Server) -> tuple[Answer, list[object]]:
    """Schedule a sync and an async BackgroundTask, then read back (bounded) what they wrote."""
    token = uuid.uuid4().hex
    scheduled = fetch(server, f"/fastapi/background?token={token}")
    ran: list[object] = []
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        end = time.monotonic() + 5
        for _ in range(250):
            ran = client.get("/fastapi/background-log", params={"token": token}).json()["ran"]
            if len(ran) == 2 or time.monotonic() > end:
                break
            time.sleep(0.02)
    return scheduled, ran


def test_fastapi_background_tasks_run_as_on_uvicorn(servers: Servers) -> None:
    expected = background_outcome(servers.uvicorn)
    assert expected[0].status == 200 and expected[1] == ["async", "sync"], expected
    assert background_outcome(servers.bascule) == expected, f"bascule log:\n{servers.bascule.tail()}"


def contextvar_outcome(server: Server) -> list[bytes]:
    """Two requests on one keep-alive connection: each sets a context variable the next must not see."""
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        return [client.get("/fastapi/contextvar", params={"value": v}).content for v in ("first", "second")]


def test_context_variables_do_not_leak_between_requests_as_on_uvicorn(servers: Servers) -> None:
    expected = contextvar_outcome(servers.uvicorn)
    assert expected == [b'{"previous":"unset"}'] * 2
    assert contextvar_outcome(servers.bascule) == expected, f"bascule log:\n{servers.bascule.tail()}"


def ws_transcript(server: Server, path: str) -> list[object]:
    """Everything the client saw: the greeting after accept, two echoes, the close (or the failure)."""
    seen: list[object] = []
    url = server.url.replace("http://", "ws://") + path
    try:
        with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
            seen.append(ws.recv(timeout=TIMEOUT))
            for text in ("one", "two"):
                ws.send(text)
                seen.append(ws.recv(timeout=TIMEOUT))
    except (WebSocketException, OSError) as exc:
        seen.append(f"{type(exc).__name__}: {exc}")
    return seen


WS_ROUTES = [
    ("/fastapi/ws", '{"task":true,"sniffio":"asyncio"}'),
    ("/starlette/ws", '{"task": true, "sniffio": "asyncio"}'),
    ("/quart/ws", '"task": true'),
    ("/channels/ws", '{"task": true, "sniffio": "asyncio"}'),
    ("/channels/ws-sync", '{"worker_thread": true}'),
]


@pytest.mark.parametrize(("path", "greeting"), WS_ROUTES, ids=[p.strip("/") for p, _ in WS_ROUTES])
def test_websocket_route_answers_as_on_uvicorn(servers: Servers, path: str, greeting: str) -> None:
    expected = ws_transcript(servers.uvicorn, path)
    assert len(expected) == 3 and greeting in str(expected[0]) and expected[1:] == ["echo:one", "echo:two"], \
        (expected, servers.uvicorn.tail())
    assert ws_transcript(servers.bascule, path) == expected, f"bascule log:\n{servers.bascule.tail()}"
