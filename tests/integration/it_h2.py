"""Helpers for test_it_http2: a raw HTTP/2 client on the ``h2`` library, the ASGI and WSGI apps it talks to,
and a small Chrome DevTools Protocol client for headless Chromium.

The raw client exists because the flow-control and reset tests need what no ordinary client exposes: a
stream whose received DATA is deliberately not acknowledged, the server's WINDOW_UPDATE frames as they
arrive, and RST_STREAM on demand. The apps record what they saw (client ports, bytes read, disconnects) on
the instance, so a test serving them in-process can look.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from websockets.exceptions import ConnectionClosed

Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]
CHUNK = 64 * 1024


def pattern(size: int) -> bytes:
    """``size`` bytes of a position-dependent pattern (a dropped or repeated chunk changes the digest)."""
    block = b"".join(b"%08d" % i for i in range(CHUNK // 8))
    whole, rest = divmod(size, CHUNK)
    return block * whole + block[:rest]


def digest(data: bytes) -> dict[str, object]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# -- apps ----------------------------------------------------------------------------------------------


class AsgiApp:
    """The ASGI app of the HTTP/2 tests; it records what it saw on the instance.

    /hello, /port (the client's port: one connection shows one port), /scope (scheme, http_version),
    /echo (the body back, streamed), /big?n=BYTES (streamed in 64 KiB pieces, with content-length),
    /trailers (a body, then ``x-checksum`` as a response trailer), /slow-read (reads the body slowly,
    counting in ``read_total`` before each pause), /wait-disconnect (reads the body, then waits in
    receive() until http.disconnect), anything else 404.
    """

    def __init__(self) -> None:
        self.read_total = 0
        self.active = 0
        self.max_active = 0
        self.waiting = threading.Event()
        self.disconnected = threading.Event()
        self.messages: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.route(path, query, scope, receive, send)
        finally:
            self.active -= 1

    async def route(self, path: str, query: dict[str, str], scope: MutableMapping[str, Any], receive: Receive,
                    send: Send) -> None:
        if path == "/hello":
            await respond(send, 200, b"hello")
        elif path == "/port":
            await asyncio.sleep(float(query.get("delay", "0")))
            await respond(send, 200, str(scope["client"][1]).encode())
        elif path == "/scope":
            facts = {"scheme": scope["scheme"], "http_version": scope["http_version"]}
            await respond(send, 200, json.dumps(facts).encode(), b"application/json")
        elif path == "/echo":
            body = await read_body(receive)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            for offset in range(0, len(body), CHUNK):
                await send({"type": "http.response.body", "body": body[offset:offset + CHUNK], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/big":
            data = pattern(int(query["n"]))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(data)).encode())]})
            for offset in range(0, len(data), CHUNK):
                await send({"type": "http.response.body", "body": data[offset:offset + CHUNK], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/trailers":
            body = b"body before trailers\n"
            await send({"type": "http.response.start", "status": 200, "trailers": True,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            await send({"type": "http.response.trailers", "more_trailers": False,
                        "headers": [(b"x-checksum", hashlib.sha256(body).hexdigest().encode())]})
        elif path == "/slow-read":
            await self.slow_read(float(query.get("first", "0")), receive, send)
        elif path == "/wait-disconnect":
            message: dict[str, Any] = {"type": "http.request", "more_body": True}
            while message["type"] == "http.request" and message.get("more_body", False):
                self.waiting.set()
                message = await receive()
                self.messages.append(message["type"])
            if message["type"] != "http.disconnect":
                message = await receive()
                self.messages.append(message["type"])
            if message["type"] == "http.disconnect":
                self.disconnected.set()
        else:
            await respond(send, 404, b"not found")

    async def slow_read(self, first: float, receive: Receive, send: Send) -> None:
        await asyncio.sleep(first)  # nothing read yet: the server must not open the window meanwhile
        h = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            self.read_total += len(chunk)  # before any await: the WINDOW_UPDATE for it leaves after this
            h.update(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
            await asyncio.sleep(0.02)
        await respond(send, 200, json.dumps({"size": size, "sha256": h.hexdigest()}).encode(), b"application/json")


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionResetError("client went away")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


class WsgiApp:
    """The WSGI app of the HTTP/2 tests: /hello, /port?delay=S, /scope, /echo, /big?n=BYTES, /slow-read (reads
    wsgi.input 16 KiB at a time with pauses, counting in ``read_total``), else 404."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.read_total = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        if path == "/hello":
            return plain(start_response, "200 OK", b"hello")
        if path == "/port":
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            time.sleep(float(query.get("delay", "0")))
            with self.lock:
                self.active -= 1
            return plain(start_response, "200 OK", str(environ["REMOTE_PORT"]).encode())
        if path == "/scope":
            facts = {"scheme": environ["wsgi.url_scheme"], "http_version": environ["SERVER_PROTOCOL"]}
            return plain(start_response, "200 OK", json.dumps(facts).encode())
        if path == "/echo":
            body = environ["wsgi.input"].read()
            return plain(start_response, "200 OK", body)
        if path == "/slow-read":
            time.sleep(float(query.get("first", "0")))
            h = hashlib.sha256()
            size = 0
            while chunk := environ["wsgi.input"].read(16384):
                self.read_total += len(chunk)
                h.update(chunk)
                size += len(chunk)
                time.sleep(0.005)
            return plain(start_response, "200 OK", json.dumps({"size": size, "sha256": h.hexdigest()}).encode())
        if path == "/big":
            size = int(query["n"])
            start_response("200 OK", [("Content-Length", str(size))])
            data = pattern(size)
            return (data[offset:offset + CHUNK] for offset in range(0, size, CHUNK))
        return plain(start_response, "404 Not Found", b"not found")


def plain(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# -- a raw HTTP/2 client ---------------------------------------------------------------------------------


@dataclass
class Stream:
    """What one stream received."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(self.headers[":status"])

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class RawH2:
    """A blocking HTTP/2 client on one socket; received DATA is acknowledged unless the stream is ``held``."""

    def __init__(self, port: int, *, window: int = 65535, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            SettingCodes.INITIAL_WINDOW_SIZE: window, SettingCodes.ENABLE_PUSH: 0})
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self.held: set[int] = set()
        self.window_updates: list[tuple[int, int]] = []  # (stream id, increment) from the server
        self.remote_settings: dict[int, int] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.flush()
        self.wait(lambda: bool(self.remote_settings), 5)

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, *, body: bytes | None = None, end: bool = True,
                headers: Iterable[tuple[str, str]] = ()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        fields = [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path), *headers]
        self.conn.send_headers(sid, fields, end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = True, on_stall: Callable[[], None] | None = None,
                  timeout: float = 10) -> None:
        """Send ``body`` as fast as the server's windows allow (``on_stall`` runs when they are shut)."""
        deadline = time.monotonic() + timeout
        offset = 0
        while offset < len(body):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                if on_stall is not None:
                    on_stall()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {sid}: window shut with {len(body) - offset} bytes unsent")
                self.pump(0.5)
                continue
            self.conn.send_data(sid, body[offset:offset + room])
            offset += room
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def reset(self, sid: int, code: int = ErrorCodes.CANCEL) -> None:
        self.conn.reset_stream(sid, code)
        self.flush()

    def grant(self, sid: int, increment: int) -> None:
        """Open stream ``sid``'s window (and the connection's) by ``increment`` and stop holding it."""
        self.held.discard(sid)
        self.conn.increment_flow_control_window(increment, stream_id=sid)
        self.conn.increment_flow_control_window(increment)
        self.flush()

    def pump(self, timeout: float) -> bool:
        """Read once (up to ``timeout``) and handle the events; False when the server closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        if not data:
            return False
        for event in self.conn.receive_data(data):
            self._handle(event)
        self.flush()
        return True

    def _handle(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        st = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and st is not None:
            st.headers.update((str(k), str(v)) for k, v in event.headers or ())
        elif isinstance(event, h2.events.DataReceived) and st is not None:
            st.data += event.data or b""
            if sid not in self.held and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived) and st is not None:
            st.trailers.update((str(k), str(v)) for k, v in event.headers or ())
        elif isinstance(event, h2.events.StreamEnded) and st is not None:
            st.ended = True
        elif isinstance(event, h2.events.StreamReset) and st is not None:
            st.reset = int(event.error_code or 0)
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_updates.append((event.stream_id or 0, event.delta or 0))
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event

    def wait(self, predicate: Callable[[], object], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or not self.pump(min(left, 0.2)):
                return bool(predicate())
        return True

    def idle(self, seconds: float) -> None:
        """Keep reading (and answering) for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.pump(max(0.01, min(0.1, end - time.monotonic()))):
            pass


# -- Chrome DevTools Protocol ---------------------------------------------------------------------------


class Cdp:
    """Commands and events over a DevTools WebSocket, on one page session (``flatten`` mode)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self.replies.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    self.events.append(message)

    async def call(self, method: str, timeout: float = 10, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = future
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"CDP {method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def open_page(self) -> None:
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        self.session = attached["sessionId"]

    async def navigate(self, url: str, timeout: float = 10) -> None:
        """Load ``url`` and wait for its load event (and for the page to be that URL)."""
        loads = len(self.seen("Page.loadEventFired"))
        await self.call("Page.navigate", url=url)
        await self.until(lambda: len(self.seen("Page.loadEventFired")) > loads, timeout)
        if await self.evaluate("location.href") != url:
            raise RuntimeError(f"the browser is at {await self.evaluate('location.href')}, not {url}")

    def seen(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.events if event.get("method") == method]

    async def until(self, predicate: Callable[[], object], timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError("the browser did not get there in time")
            await asyncio.sleep(0.05)

    async def evaluate(self, expression: str, timeout: float = 10) -> Any:
        result = await self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")
