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
_NOTED_REQUEST_HEADERS = frozenset((b"expect", b"te", b"host"))
_FRAMING_NAME_LENGTHS = frozenset((len(b"content-length"), len(b"transfer-encoding"), len(b"connection")))
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


def _reject_headers(headers: Headers) -> None:
    """Name the first header that would split the response (the slow path, only taken on error)."""
    for name, value in headers:
        if not name or _BAD_HEADER_NAME.search(name) or _BAD_HEADER_VALUE.search(value):
            raise AppProtocolError(f"the app sent a header that could split the response: {name!r}: {value!r}")
    raise AppProtocolError("the app sent headers with CR, LF or NUL in them")


def _content_length(value: bytes) -> int:
    if not value.isdigit():
        raise AppProtocolError(f"the app sent an invalid content-length header: {value!r}")
    return int(value)


class H1Exchange(Exchange):
    """One HTTP/1.1 request on a connection and the state of its response.

    No __slots__: most per-response state starts at a class-level default and is only written when it
    changes, which saves a couple of dozen attribute writes per request on the hot path.
    """

    root_path = ""
    start_time = 0.0
    disconnected = False
    response_started = False
    finished = False
    status = 0
    sent = 0
    writable_hook = None
    no_body = False
    counted = False
    te_trailers = False
    _body: list[bytes] | None = None
    _body_size = 0
    _body_done = False
    _body_waiter: asyncio.Future[None] | None = None
    _disconnect_waiter: asyncio.Future[None] | None = None
    _chunked = False
    _expected: int | None = None
    _trailers = False

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

    # -- request body, fed by the connection --------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        if self.finished:
            return  # the response is done; the rest of the body is read and dropped
        if self._body is None:
            self._body = []
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
        body = self._body
        if not body:
            return b""
        self._body = None
        self._body_size = 0
        return b"".join(body) if len(body) != 1 else body[0]

    async def receive_body(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started and not self._body_done and not self.disconnected:
                self.conn.write(_CONTINUE)
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            self.conn.resume_reading("body")
            await self._body_waiter
        body = self._body
        if not body:
            return b""
        self._body = None
        self._body_size = 0
        self.conn.resume_reading("body")
        return b"".join(body) if len(body) != 1 else body[0]

    # -- response -----------------------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        if self.response_started:
            raise AppProtocolError("the response was already started")
        line = _STATUS_LINES.get(status)
        if line is None:
            if type(status) is not int or not 100 <= status <= 999:
                raise AppProtocolError(f"invalid status code {status!r}")
            line = status_line(status)
        conn = self.conn
        content_length: int | None = None
        close = not self.keep_alive
        app: list[bytes] = []
        for name, value in headers:
            if len(name) in _FRAMING_NAME_LENGTHS:
                lname = name.lower()
                if lname == b"content-length":
                    content_length = _content_length(value)
                    continue  # written below, once, after the framing decision
                if lname == b"transfer-encoding":
                    continue  # framing is ours to choose
                if lname == b"connection":
                    close = close or b"close" in value.lower()
                    continue
            app += (name, b": ", value, b"\r\n")
        block = b"".join(app)
        lines = len(app) >> 2
        # One scan of the whole block instead of a regex per header: any CR, LF or NUL inside a name or
        # value shows up as an extra line ending (header injection / response splitting).
        if block.count(b"\n") != lines or block.count(b"\r") != lines or b"\0" in block:
            _reject_headers(headers)
        self.response_started = True
        self.status = status
        http10 = self.http_version == "1.0"
        if self.expect_continue and not self._body_done:
            close = True  # we never asked for the body, so the connection cannot carry another request
        if status < 200 or status == 204:
            self.no_body = True
            framing = b""  # RFC 9110 8.6: no Content-Length on 1xx and 204
        elif self.method == "HEAD" or status == 304:
            self.no_body = True
            if content_length is None and end and body and status != 304:
                content_length = len(body)  # the app sent GET's body: its length is GET's Content-Length
            framing = b"" if content_length is None else b"content-length: %d\r\n" % content_length
        elif content_length is not None:
            self._expected = content_length
            framing = b"content-length: %d\r\n" % content_length
        elif end and not trailers:
            self._expected = len(body)
            framing = b"content-length: %d\r\n" % len(body)
        elif not http10:
            self._chunked = True
            framing = b"transfer-encoding: chunked\r\n"
        else:
            close = True  # HTTP/1.0 without a length: the end of the body is the end of the connection
            framing = b""
        self._trailers = trailers and self._chunked  # announced; written only if the client sent TE: trailers
        if close or conn.ctx.shutting_down:
            self.keep_alive = False
            if not http10:
                framing += b"connection: close\r\n"
        elif http10:
            framing += b"connection: keep-alive\r\n"
        if self.disconnected:
            return
        head = [line, conn.ctx.fixed_headers, block, framing, b"\r\n"]
        if end and not trailers and self._expected == len(body) and not self.no_body:
            # the common case: a complete response, one write
            self.sent = len(body)
            head.append(body)
            conn.write(b"".join(head))
            self._finish()
            return
        self._emit(head, body, end)

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
        self._in_head = False
        self._hosts = 0
        self._expect_continue = False
        self._te_trailers = False
        self._parsing: H1Exchange | None = None
        self._latest: H1Exchange | None = None
        self._lingering = False
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
        if self._lingering:
            return  # closing after an unread body: what still arrives is dropped, never parsed
        try:
            self.parser.feed_data(data)
            if self._in_head:
                # A head still incomplete after this chunk: bound what it may grow to (the memory a
                # slow or hostile client can pin), counted per chunk rather than per header.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    raise httptools.HttpParserError("request head too large") from ProtocolError(
                        "request header fields too large", 431)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c) are not taken here: the request is served as plain HTTP and the
            # connection closes after it, since the parser stops at the upgrade and reads nothing further.
            self.pause_reading("upgrade")
            latest = self._latest
            if latest is not None:
                latest.keep_alive = False
                if latest.finished:
                    self.close()
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
        self._in_head = True
        self._hosts = 0
        self._expect_continue = False
        self._te_trailers = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            raise ProtocolError("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name in _NOTED_REQUEST_HEADERS:
            if name == b"host":
                self._hosts += 1
                return
            value = value.lower()
            if name == b"expect":
                self._expect_continue = value == b"100-continue"
            elif b"trailers" in value:
                self._te_trailers = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if len(self._headers) > MAX_HEADERS:
            raise ProtocolError("too many request header fields", 431)
        parser = self.parser
        http_version = parser.get_http_version()
        if http_version != "1.1" and http_version != "1.0":
            raise ProtocolError(f"HTTP/{http_version} is not served here (HTTP/1.0 and 1.1 are)", 505)
        if self._hosts != 1 and (http_version == "1.1" or self._hosts):
            raise ProtocolError("a request must carry exactly one Host header (RFC 9112 3.2)", 400)
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        url = self._url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        elif url == b"*":
            raw_path, query = url, b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise ProtocolError("invalid request target", 400) from None
            if not parsed.schema:
                raise ProtocolError("the request target must be a path or an absolute URL", 400)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        ex = H1Exchange(self, method, raw_path, query, self._headers, http_version,
                        parser.should_keep_alive(), self._expect_continue and http_version == "1.1")
        if self._te_trailers:
            ex.te_trailers = True
        if self.ctx.access_log:
            ex.start_time = self.loop.time()
        self._parsing = ex
        self._latest = ex
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
        self._lingering = True
        self.resume_reading("body")
        self.resume_reading("pipeline")
        self.loop.call_later(LINGER_SECONDS, self.close)

    def _bad_request(self, exc: Exception) -> None:
        origin = exc.__cause__ or exc.__context__  # our own ProtocolError, raised in a callback or above
        cause = origin if isinstance(origin, ProtocolError) else None
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
