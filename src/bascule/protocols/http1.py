"""HTTP/1.1 over httptools (llhttp): the asyncio protocol of one connection and its exchanges.

Bytes come in through llhttp's callbacks, which build an :class:`H1Exchange` per request directly (no
intermediate event objects). Requests are dispatched after each ``feed_data`` returns, so a small request
arrives at the gateway with its body already complete. Responses are answered strictly in request order:
a pipelined request waits in ``queue`` (and reading pauses) until the one before it is finished.

Flow control both ways: reading pauses while an app has not consumed its body (bounded buffer), and
``drain()`` waits while the transport's write buffer is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import re
import select
import socket
from collections import deque
from typing import IO, Any, cast

import httptools

from bascule.context import ServerContext
from bascule.errors import AppProtocolError, ProtocolError
from bascule.protocols.exchange import Exchange, Headers

BODY_HIGH_WATER = 256 * 1024
MAX_URL = 8192
MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_STATUS_LINES: dict[int, bytes] = {}
_BAD_HEADER_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_log = logging.getLogger("bascule.error")


def status_line(status: int) -> bytes:
    """'HTTP/1.1 200 OK\\r\\n', cached per status code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[status] = line
    return line


def _content_length(value: bytes) -> int:
    if not value.isdigit():
        raise AppProtocolError(f"the app sent an invalid content-length header: {value!r}")
    return int(value)


class H1Exchange(Exchange):
    """One HTTP/1.1 request on a connection and the state of its response."""

    __slots__ = (
        "_body", "_body_done", "_body_size", "_body_waiter", "_chunked", "_disconnect_waiter", "_expected",
        "_trailers", "conn", "counted", "expect_continue", "finished", "keep_alive", "no_body", "sent", "te_trailers",
    )

    def __init__(self, conn: H1Connection, method: str, raw_path: bytes, query: bytes, headers: Headers,
                 http_version: str, keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.method = method
        self.raw_path = raw_path
        self.query_string = query
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.scheme = conn.scheme
        self.client = conn.client
        self.server = conn.server
        self.root_path = ""
        self.start_time = conn.loop.time()
        self.disconnected = False
        self.response_started = False
        self.finished = False
        self.status = 0
        self.sent = 0
        self.writable_hook = None
        self.no_body = False
        self.counted = False
        self.te_trailers = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_done = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._disconnect_waiter: asyncio.Future[None] | None = None
        self._chunked = False
        self._expected: int | None = None
        self._trailers = False

    # -- request body, fed by the connection --------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        if self.finished:
            return  # the response is done; the rest of the body is read and dropped
        self._body.append(data)
        self._body_size += len(data)
        if self._body_waiter is not None:
            self._wake_body()
        if self._body_size > BODY_HIGH_WATER:
            self.conn.pause_reading("body")

    def end_body(self) -> None:
        self._body_done = True
        if self._body_waiter is not None:
            self._wake_body()

    def _wake_body(self) -> None:
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def body_done(self) -> bool:
        return self._body_done and not self._body

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        data = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body.clear()
        self._body_size = 0
        return data

    async def receive_body(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started and not self._body_done and not self.disconnected:
                self.conn.write(_CONTINUE)
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            self.conn.resume_reading("body")
            await self._body_waiter
        if not self._body:
            return b""
        data = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body.clear()
        self._body_size = 0
        self.conn.resume_reading("body")
        return data

    # -- response -----------------------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        if self.response_started:
            raise AppProtocolError("the response was already started")
        if not 100 <= status <= 999:
            raise AppProtocolError(f"invalid status code {status!r}")
        parts = [status_line(status), self.conn.ctx.fixed_headers]
        content_length: int | None = None
        close = not self.keep_alive or self.conn.ctx.shutting_down
        for name, value in headers:
            n = len(name)
            if n == 14 and name.lower() == b"content-length":
                content_length = _content_length(value)
                continue  # written below, once, after the framing decision
            elif n == 17 and name.lower() == b"transfer-encoding":
                continue  # framing is ours to choose
            elif n == 10 and name.lower() == b"connection":
                if b"close" in value.lower():
                    close = True
                continue
            if _BAD_HEADER_NAME.search(name) or not name or _BAD_HEADER_VALUE.search(value):
                raise AppProtocolError(f"the app sent a header that could split the response: {name!r}: {value!r}")
            parts += (name, b": ", value, b"\r\n")
        self.response_started = True
        self.status = status
        if self.method == "HEAD" or status < 200 or status == 204 or status == 304:
            self.no_body = True
            if content_length is not None:
                parts.append(b"content-length: %d\r\n" % content_length)
        elif content_length is not None:
            self._expected = content_length
            parts.append(b"content-length: %d\r\n" % content_length)
        elif end and not trailers:
            self._expected = len(body)
            parts.append(b"content-length: %d\r\n" % len(body))
        elif self.http_version == "1.1":
            self._chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            close = True  # HTTP/1.0 without a length: the end of the body is the end of the connection
        self._trailers = trailers and self._chunked  # announced; written only if the client sent TE: trailers
        if close:
            self.keep_alive = False
            if self.http_version == "1.1":
                parts.append(b"connection: close\r\n")
        elif self.http_version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if not self.disconnected:
            self._emit(parts, body, end)

    def _emit(self, parts: list[bytes], data: bytes, end: bool) -> None:
        """Write ``parts`` plus ``data`` framed for this response, in one write; finish when ``end``."""
        if data and not self.no_body:
            if self._chunked:
                self.sent += len(data)
                parts += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                self.sent += len(data)
                if self._expected is not None and self.sent > self._expected:
                    _log.error("response body longer than its content-length (%d > %d) for %s %s; "
                               "connection closed", self.sent, self._expected, self.method, self._target())
                    self.abort()
                    return
                parts.append(data)
        if end and not self._trailers:
            if self._chunked:
                parts.append(b"0\r\n\r\n")
            elif self._expected is not None and self.sent < self._expected and not self.no_body:
                _log.error("response body shorter than its content-length (%d < %d) for %s %s; "
                           "connection closed", self.sent, self._expected, self.method, self._target())
                self.conn.write(b"".join(parts))
                self.abort()
                return
            self.conn.write(b"".join(parts) if len(parts) != 1 else parts[0])
            self._finish()
        elif parts:
            self.conn.write(b"".join(parts) if len(parts) != 1 else parts[0])

    def _target(self) -> str:
        return self.raw_path.decode("latin-1")

    def send_body(self, data: bytes, end: bool = False) -> None:
        if not self.response_started or self.finished:
            raise AppProtocolError("send_body() outside a started response")
        if not self.disconnected:
            self._emit([], data, end)

    def send_trailers(self, trailers: Headers) -> None:
        if self.finished or self.disconnected:
            return
        if self._trailers and self.te_trailers:
            parts = [b"0\r\n"]
            for name, value in trailers:
                if _BAD_HEADER_NAME.search(name) or _BAD_HEADER_VALUE.search(value):
                    raise AppProtocolError(f"invalid trailer {name!r}: {value!r}")
                parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            self.conn.write(b"".join(parts))
        elif self._chunked:
            self.conn.write(b"0\r\n\r\n")  # the client did not ask for trailers (RFC 9110 6.5.1)
        self._finish()

    def send_simple(self, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        self.send_head(status, [(b"content-type", content_type)], body, end=True)

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.conn.response_done(self)
            self._wake_disconnect()

    def _wake_disconnect(self) -> None:
        waiter, self._disconnect_waiter = self._disconnect_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_disconnect(self) -> None:
        self.disconnected = True
        self._wake_body()
        self._wake_disconnect()
        if self.writable_hook is not None:
            self.writable_hook()

    @property
    def write_paused(self) -> bool:
        return self.conn.write_paused

    async def drain(self) -> None:
        await self.conn.drain()

    async def wait_disconnect(self) -> None:
        if self.finished or self.disconnected:
            return
        if self._disconnect_waiter is None:
            self._disconnect_waiter = self.loop.create_future()
        await self._disconnect_waiter

    def abort(self) -> None:
        if self.finished and not self.disconnected and self.conn.active is not self:
            return  # already complete; the connection has moved on to the next request
        self.keep_alive = False
        if not self.finished:
            self.finished = True
            self.conn.response_done(self, aborted=True)
        self.conn.close()

    @property
    def can_sendfile(self) -> bool:
        return self.conn.sock_fd is not None and not self._chunked

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        fd = self.conn.sock_fd
        if fd is None:
            raise RuntimeError("sendfile is not available on this connection")
        asyncio.run_coroutine_threadsafe(self.conn.flush(), self.loop).result()
        sent = 0
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        while sent < count and not self.disconnected:
            try:
                n = os.sendfile(fd, file.fileno(), offset + sent, count - sent)
            except BlockingIOError:
                poller.poll(1000)
                continue
            except OSError:
                break
            if n == 0:
                break
            sent += n
        self.loop.call_soon_threadsafe(self._note_sent, sent)
        return sent

    def _note_sent(self, n: int) -> None:
        """Count bytes sent outside conn.write (sendfile) against the declared length."""
        self.sent += n


class H1Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests with llhttp and writes responses in order."""

    def __init__(self, ctx: ServerContext, scheme: str = "http") -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.scheme = scheme
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.sock_fd: int | None = None
        self.closed = False
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._paused_by: set[str] = set()
        self.idle_since: float | None = None
        # the request being parsed
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._expect_continue = False
        self._te_trailers = False
        self._parsing: H1Exchange | None = None
        # the request being answered, and those waiting behind it
        self.active: H1Exchange | None = None
        self.queue: deque[H1Exchange] = deque()
        self._to_dispatch: H1Exchange | None = None
        self._pending_error: tuple[int, bytes] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.client = _address(transport.get_extra_info("peername"))
        self.server = _address(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self.sock_fd = sock.fileno()
        self.idle_since = self.loop.time()
        self.ctx.connections.add(self)
        if self.ctx.shutting_down:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        for ex in (self.active, *self.queue):
            if ex is not None:
                self._release(ex)
                ex.on_disconnect()
        if self._parsing is not None and self._parsing is not self.active:
            self._parsing.on_disconnect()
        self.queue.clear()
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c) are not taken here: the request is served as plain HTTP and the
            # connection closes after it, since what follows is not HTTP/1.1 any more.
            if self._parsing is not None:
                self._parsing.keep_alive = False
            self.pause_reading("upgrade")
        except httptools.HttpParserError as exc:
            self._bad_request(exc)
        ex = self._to_dispatch
        if ex is not None:
            self._to_dispatch = None
            self._dispatch(ex)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # -- llhttp callbacks ---------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._expect_continue = False
        self._te_trailers = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            raise ProtocolError("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value)
        if len(self._headers) > MAX_HEADERS or self._head_bytes > MAX_HEAD_BYTES:
            raise ProtocolError("request header fields too large", 431)
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif name == b"te" and b"trailers" in value.lower():
            self._te_trailers = True

    def on_headers_complete(self) -> None:
        parser = self.parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        url = self._url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        elif url == b"*":
            raw_path, query = url, b""
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        http_version = parser.get_http_version()
        ex = H1Exchange(self, method, raw_path, query, self._headers, http_version,
                        parser.should_keep_alive(), self._expect_continue and http_version == "1.1")
        ex.te_trailers = self._te_trailers
        self._parsing = ex
        self.idle_since = None
        if self.active is None:
            self.active = ex
            self._to_dispatch = ex
        else:
            self.queue.append(ex)
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is not None:
            self._parsing = None
            ex.end_body()

    # -- dispatch and completion --------------------------------------------------------------------
    def _dispatch(self, ex: H1Exchange) -> None:
        ctx = self.ctx
        limit = ctx.limit_concurrency
        ctx.in_flight += 1
        ex.counted = True
        if limit is not None and ctx.in_flight > limit:
            ex.keep_alive = False
            ex.send_simple(503, b"Service Unavailable: the server is at its concurrency limit\n")
            return
        try:
            ctx.dispatch(ex)
        except Exception:
            _log.exception("could not dispatch %s %s", ex.method, ex.raw_path.decode("latin-1"))
            if not ex.response_started:
                ex.send_simple(500, b"Internal Server Error\n")
            else:
                ex.abort()

    def _release(self, ex: H1Exchange) -> None:
        if ex.counted:
            ex.counted = False
            self.ctx.in_flight -= 1

    def response_done(self, ex: H1Exchange, aborted: bool = False) -> None:
        """Called by the exchange once its response is complete: log it, then serve the next request."""
        self._release(ex)
        if self.ctx.access_log:
            self.ctx.log_access(ex, ex.sent)
        if ex is not self.active:
            return
        self.active = None
        if aborted or self.closed:
            return
        if not ex.keep_alive or self.ctx.shutting_down:
            self._close_after(ex)
            return
        if not ex._body_done:
            # The app answered without reading the whole body: we cannot find the next request reliably
            # without reading it, so close (after letting the client read our answer).
            self._close_after(ex)
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                self.resume_reading("pipeline")
            self._dispatch(nxt)
        elif self._pending_error is not None:
            self._send_error(*self._pending_error)
        else:
            self.idle_since = self.loop.time()
            self.resume_reading("pipeline")

    def _close_after(self, ex: H1Exchange) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if ex._body_done or not transport.can_write_eof():
            self.close()
            return
        # Lingering close: send FIN, keep reading (and dropping) for a moment, so the kernel does not
        # answer the client's unread upload with a RST that would destroy our response.
        transport.write_eof()
        self.resume_reading("body")
        self.resume_reading("pipeline")
        self.loop.call_later(LINGER_SECONDS, self.close)

    def _bad_request(self, exc: Exception) -> None:
        cause = exc.__context__ if isinstance(exc.__context__, ProtocolError) else None
        status = cause.status if cause is not None else 400
        reason = str(cause) if cause is not None else (str(exc) or "malformed request")
        _log.info("rejected a request from %s: %s (%d)", _fmt_addr(self.client), reason, status)
        self.pause_reading("error")
        body = f"{http.HTTPStatus(status).phrase}: {reason}\n".encode("latin-1", "replace")
        broken, self._parsing = self._parsing, None
        if broken is not None:
            if broken is self._to_dispatch:
                # its own bytes were bad and the app has not seen it yet: it never will
                self._to_dispatch = None
                self.active = None
            elif broken is self.active:
                # the app is reading a body that will never complete
                if not broken.response_started:
                    self._send_error(status, body)
                broken.on_disconnect()
                self.close()
                return
            elif broken in self.queue:
                self.queue.remove(broken)
        if self.active is None:
            self._send_error(status, body)
        else:
            self._pending_error = (status, body)

    def _send_error(self, status: int, body: bytes) -> None:
        head = b"".join((status_line(status), self.ctx.fixed_headers,
                         b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                         b"connection: close\r\n\r\n" % len(body)))
        self.write(head + body)
        self.close()

    # -- transport helpers --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self, reason: str) -> None:
        if not self._paused_by and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused_by.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._paused_by:
            self._paused_by.discard(reason)
            if not self._paused_by and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def flush(self) -> None:
        """Wait until everything written so far has left the transport's buffer (used before sendfile)."""
        transport = self.transport
        while transport is not None and not self.closed and transport.get_write_buffer_size():
            await asyncio.sleep(0.001)

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        for ex in (self.active, *self.queue):
            if ex is not None and ex.writable_hook is not None:
                ex.writable_hook()

    # -- server-driven ------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        idle = self.idle_since
        if idle is not None and self.active is None and now - idle > self.ctx.keep_alive_timeout:
            self.close()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the response in flight."""
        if self.active is None:
            self.close()
        else:
            self.active.keep_alive = False


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


def _fmt_addr(addr: tuple[str, int] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "unix socket"


def socket_family_label(sock: socket.socket) -> str:
    return {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}.get(sock.family, "Unix")
