"""WebSocket end to end with the ``websockets`` client library: a plain ASGI app, FastAPI, Starlette.

Most tests serve apps/it_ws_app.py in-process (the ``serve`` fixture); shutdown is tested on a real
process with a real SIGTERM. Each test runs its own client event loop with asyncio.run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, free_port
from it_support import APPS, clean_env, spawn, tcp_ready
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

Serve = Callable[..., contextlib.AbstractContextManager[Running]]

if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))


@pytest.fixture
def ws_server(serve: Serve) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with ws_server(**options) as url:`` — it_ws_app served in-process; url is ws://host:port."""

    @contextlib.contextmanager
    def start(**options: Any) -> Iterator[str]:
        options.setdefault("app_dir", str(APPS))
        with serve("it_ws_app:app", **options) as srv:
            yield f"ws://{srv.host}:{srv.port}"

    return start


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def closed_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


def test_text_binary_fragmented_and_large(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> None:
        async with connect(url + "/echo", max_size=None) as ws:
            await ws.send("h\u00e9llo")
            assert await ws.recv() == "h\u00e9llo"
            await ws.send(b"\x00\xff" * 10)
            assert await ws.recv() == b"\x00\xff" * 10
            await ws.send(["fr", "ag", "mented \u2603"])  # one message in three frames
            assert await ws.recv() == "fragmented \u2603"
            await ws.send([b"a" * 70000, b"b" * 70000])
            assert await ws.recv() == b"a" * 70000 + b"b" * 70000
            big = bytes(range(256)) * 40960  # 10 MiB
            await ws.send(big)
            assert await ws.recv() == big
            for i in range(200):  # many in flight: more than --ws-max-queue, so reading pauses and resumes
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(200)] == [f"m{i}" for i in range(200)]

    with ws_server() as url:
        run(go(url))


def test_too_large_message_closes_1009(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> None:
        async with connect(url + "/echo", max_size=None) as ws:
            await ws.send(b"x" * 2048)
            assert await closed_code(ws) == (1009, ws.close_reason)

    with ws_server(ws_max_size=1024) as url:
        run(go(url))


def test_compression_is_negotiated_and_window_bits_honoured(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> tuple[str, str]:
        async with connect(url + "/echo") as ws:
            await ws.send("compress me " * 1000)
            assert await ws.recv() == "compress me " * 1000
            default = ws.response.headers.get("sec-websocket-extensions", "")
        factory = ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9)
        async with connect(url + "/echo", extensions=[factory], compression=None) as ws:
            await ws.send("again " * 1000)
            assert await ws.recv() == "again " * 1000
            narrow = ws.response.headers.get("sec-websocket-extensions", "")
        return default, narrow

    with ws_server() as url:
        default, narrow = run(go(url))
    assert default.startswith("permessage-deflate")
    assert "server_max_window_bits=10" in narrow and "client_max_window_bits=9" in narrow


def test_compression_can_be_turned_off(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> str | None:
        async with connect(url + "/echo") as ws:
            await ws.send("plain")
            assert await ws.recv() == "plain"
            return ws.response.headers.get("sec-websocket-extensions")

    with ws_server(ws_per_message_deflate=False) as url:
        assert run(go(url)) is None


def test_scope_subprotocol_and_accept_headers(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> tuple[dict[str, Any], str | None, str | None]:
        async with connect(url + "/scope?x=1", subprotocols=["v2.chat", "v1.chat"]) as ws:  # type: ignore[list-item]
            info = json.loads(await ws.recv())
            return info, ws.subprotocol, ws.response.headers.get("x-extra")

    with ws_server() as url:
        info, subprotocol, extra = run(go(url))
    assert subprotocol == "v2.chat" and extra == "yes"
    assert info["type"] == "websocket" and info["scheme"] == "ws" and info["http_version"] == "1.1"
    assert info["path"] == "/scope" and info["raw_path"] == "/scope" and info["query_string"] == "x=1"
    assert info["subprotocols"] == ["v2.chat", "v1.chat"]
    assert info["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert info["extensions"] == ["websocket.http.response"]
    assert {"sec-websocket-key", "upgrade", "host"} <= set(info["header_names"])


@pytest.mark.parametrize(("request_code", "reason"), [(1000, "done"), (4321, "custom \u00e9"), (1001, "")])
def test_app_closes_with_the_code_and_reason_asked(ws_server: Callable[..., Any], request_code: int,
                                                    reason: str) -> None:
    async def go(url: str) -> tuple[int | None, str | None]:
        async with connect(url + "/echo") as ws:
            await ws.send(f"close {request_code} {reason}")
            return await closed_code(ws)

    with ws_server() as url:
        assert run(go(url)) == (request_code, reason)


def test_server_close_and_client_close_codes(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> None:
        async with connect(url + "/server-close") as ws:
            assert await ws.recv() == "closing"
            assert await closed_code(ws) == (4001, "bye now")
        async with connect(url + "/echo") as ws:
            await ws.close(4002, "client leaves")
            assert ws.close_code == 4002  # echoed by the server

    with ws_server() as url:
        run(go(url))


@pytest.mark.parametrize(("path", "status"), [("/close-before-accept", 403), ("/raise-before", 500),
                                               ("/return-before", 500)])
def test_refused_before_accept(ws_server: Callable[..., Any], path: str, status: int) -> None:
    async def go(url: str) -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + path):
                pass
        return info.value.response.status_code

    with ws_server() as url:
        assert run(go(url)) == status


def test_denial_with_a_full_http_response(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> Any:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + "/deny"):
                pass
        return info.value.response

    with ws_server() as url:
        response = run(go(url))
    assert response.status_code == 401
    assert response.headers["x-why"] == "token"
    assert response.body == b"no entry"


def test_app_error_after_accept_closes_1011(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> tuple[int | None, str | None]:
        async with connect(url + "/raise-after") as ws:
            return await closed_code(ws)

    with ws_server() as url:
        code, _ = run(go(url))
    assert code == 1011


def test_keepalive_pings_are_answered_by_a_real_client(ws_server: Callable[..., Any]) -> None:
    async def go(url: str) -> None:
        async with connect(url + "/echo", ping_interval=None) as ws:
            await asyncio.sleep(2.0)  # several server pings, each answered by the client's protocol
            await ws.send("alive")
            assert await ws.recv() == "alive"

    with ws_server(ws_ping_interval=0.3, ws_ping_timeout=0.5) as url:
        run(go(url))


def test_graceful_stop_closes_1001_and_the_app_gets_disconnect(serve: Serve, tmp_path: Path) -> None:
    marker = tmp_path / "disconnect.json"

    async def go(url: str, srv: Running) -> tuple[int | None, str | None]:
        async with connect(f"{url}/hold?marker={marker}") as ws:
            assert srv.server is not None
            srv.server.request_exit()
            return await closed_code(ws)

    with serve("it_ws_app:app", app_dir=str(APPS)) as srv:
        start = time.monotonic()
        code, _ = run(go(f"ws://{srv.host}:{srv.port}", srv))
    assert code == 1001
    assert time.monotonic() - start < 5
    message = json.loads(marker.read_text())
    assert message["type"] == "websocket.disconnect" and message["code"] == 1001


def test_sigterm_closes_open_websockets_1001(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "disconnect.json"

    async def go() -> tuple[int | None, str | None]:
        async with connect(f"ws://127.0.0.1:{port}/hold?marker={marker}") as ws:
            proc.send_signal(signal.SIGTERM)
            return await closed_code(ws)

    with spawn(["it_ws_app:app", "--port", str(port)], env=clean_env(), log=tmp_path / "log",
               ready=tcp_ready(port)) as proc:
        start = time.monotonic()
        code, reason = run(go())
        assert proc.wait(10) == 0
    assert (code, reason) == (1001, "server shutting down")
    assert time.monotonic() - start < 5
    assert json.loads(marker.read_text())["code"] == 1001


def test_websocket_upgrade_to_a_wsgi_mount_is_a_plain_get(serve: Serve) -> None:
    with serve("it_ws_app:app", app_dir=str(APPS), mount=("/wsgi=it_ws_app:wsgi_app",)) as srv:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        response = httpx.get(f"{srv.url}/wsgi/here", headers=headers)
        assert response.status_code == 200
        assert response.text == "wsgi GET /here upgrade=websocket"

        async def go() -> str:
            async with connect(f"ws://{srv.host}:{srv.port}/echo") as ws:  # the ASGI root still upgrades
                await ws.send("asgi")
                return str(await ws.recv())

        assert run(go()) == "asgi"


# --- frameworks -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def framework(tmp_path: Path, app: str) -> Iterator[int]:
    port = free_port()
    with spawn([app, "--port", str(port)], env=clean_env(), log=tmp_path / "log", ready=tcp_ready(port)) as proc:
        yield port
        assert proc.poll() is None, (tmp_path / "log").read_text()


def test_fastapi_websocket_endpoint(tmp_path: Path) -> None:
    async def go(port: int) -> Any:
        async with connect(f"ws://127.0.0.1:{port}/ws/lobby") as ws:
            await ws.send(json.dumps({"n": 1}))
            return json.loads(await ws.recv())

    with framework(tmp_path, "it_fastapi_app:app") as port:
        assert run(go(port)) == {"room": "lobby", "echo": {"n": 1}, "greeting": "set by lifespan startup"}


def test_starlette_websocket_endpoint(tmp_path: Path) -> None:
    async def go(port: int) -> tuple[str, str | None]:
        async with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["upper"]) as ws:  # type: ignore[list-item]
            await ws.send("shout")
            return str(await ws.recv()), ws.subprotocol

    with framework(tmp_path, "it_starlette_app:app") as port:
        assert run(go(port)) == ("SHOUT", "upper")


def test_demo_echo_page_and_socket(serve: Serve) -> None:
    with serve("bascule.demo:asgi_app") as srv:
        page = httpx.get(f"{srv.url}/ws-echo")
        assert page.status_code == 200 and b'new WebSocket(' in page.content

        async def go() -> str:
            async with connect(f"ws://{srv.host}:{srv.port}/ws") as ws:
                await ws.send("from the demo")
                return str(await ws.recv())

        assert run(go()) == "from the demo"


def test_send_waits_for_a_client_that_does_not_read(serve: Serve) -> None:
    sent: list[int] = []
    chunk = b"z" * (1024 * 1024)

    async def flood(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(100):  # 100 MiB if nothing pushed back
            await send({"type": "websocket.send", "bytes": chunk})
            sent.append(i)
        await send({"type": "websocket.close"})

    with serve(flood) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        time.sleep(1.0)  # not reading: the server's transport fills and send() must wait
        stalled_at = len(sent)
        received = 0
        sock.settimeout(10)
        while received < 100 * len(chunk):  # then everything arrives once the client reads
            data = sock.recv(1 << 20)
            assert data, f"closed after {received} bytes"
            received += len(data)
        sock.close()
    assert stalled_at < 30, f"the app sent {stalled_at} MiB to a client that read nothing"
