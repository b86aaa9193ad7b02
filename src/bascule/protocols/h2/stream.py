"""One HTTP/2 stream as the gateways see it: an :class:`~bascule.protocols.exchange.Exchange`.

Split from protocols/h2/connection.py, which owns the connection (frames, settings, flow-control windows): the
stream buffers its request body (bounded by the stream window it advertised, returned to the client as the
app reads), encodes its response head, checks declared lengths, and keeps the DATA its window could not
take yet, so a stream whose client reads slowly waits alone while the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import BufferedExchange, Headers, check_interim
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.headers import (
    CONTENT_LENGTH_PREFIX,
    RequestHead,
    content_length_field,
    encode_response_fields,
    encode_trailers,
    literal,
    status_field,
)
from bascule.protocols.h2.states import StreamState, local_open
from bascule.protocols.semantics import (
    bodiless,
    bodiless_length,
    expected_length,
    length_excess,
    log_length_error,
    one_write,
)

if TYPE_CHECKING:
    from bascule.protocols.h2.connection import H2Connection

_log = logging.getLogger("bascule.error")


class H2Stream(BufferedExchange):
    """One request/response on an HTTP/2 connection (class-level defaults: written only on change)."""

    conn: H2Connection
    http_version = "2"
    start_time = 0.0
    disconnected = False
    response_started = False
    finished = False  # the app's response is complete (or given up)
    status = 0
    sent = 0
    write_paused = False
    cancel_app: Callable[[], object] | None = None
    websocket = False  # an extended CONNECT stream carrying a WebSocket (protocols/h2/websocket.py)
    no_body = False
    # RFC 9113 5.1, moved by the connection as frames go both ways (protocols/h2/states.py has the table);
    # a stream exists from the client's HEADERS on
    state = StreamState.OPEN
    received = 0
    wire = "h2"
    tls: dict[str, Any] | None = None
    _drain_waiter: asyncio.Future[None] | None = None
    _expected: int | None = None
    _trailers = False
    unacked = 0  # body bytes the app has read and the client has not been given back as window (credit_stream)
    pending: deque[bytes] | None = None  # DATA payloads waiting for window
    pending_end = False
    pending_trailers: bytes | None = None

    def __init__(self, conn: H2Connection, stream_id: int, head: RequestHead) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.loop = conn.loop
        self.method = head.method
        self.raw_path = head.raw_path
        self.query_string = head.query
        self.headers = list(head.headers)
        self.content_length = head.content_length
        self.expect_continue = head.expect_continue
        self.scheme = conn.scheme
        self.client = conn.client
        self.server = conn.server
        self.send_window = conn.peer_initial_window
        self.recv_window = conn.local_initial_window
        if conn.tls is not None:
            self.tls = conn.tls
        if head.forwarded:
            conn.ctx.forwarded(self)  # before dispatch, and before an extended CONNECT's session copies them

    # -- request body, fed by the connection --------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self.finished:
            self.conn.credit_stream(self, len(data))  # nobody will read it: give the window back
            return
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        if self._body_waiter is not None:
            self._wake_body()

    def end_body(self) -> None:
        """END_STREAM received: the request body is complete."""
        self.state = StreamState.HALF_CLOSED_REMOTE if self.state is StreamState.OPEN else StreamState.CLOSED
        super().end_body()

    def _take(self) -> bytes:
        body = self._body
        if not body:
            return b""
        self._body = None
        data = b"".join(body) if len(body) != 1 else body[0]
        if not self._body_done:
            self.conn.credit_stream(self, len(data))
        return data

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        return self._take()

    async def receive_body(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started and not self._body_done and not self.disconnected:
                self.conn.send_headers(self, status_field(100), end_stream=False)
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            await self._body_waiter
        return self._take()

    # -- response -----------------------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        if self.response_started:
            raise AppProtocolError("the response was already started")
        field = status_field(status)
        parts, content_length = encode_response_fields(headers)
        if status < 200:
            if status == 101:
                raise AppProtocolError("101 Switching Protocols does not exist in HTTP/2")
            if not self.disconnected:
                self.conn.send_headers(self, field + b"".join(parts), end_stream=False)
            return
        self.response_started = True
        self.status = status
        if self.perf_start:  # an observer listens (the access log reads it): else no clock read
            self.head_time = perf_counter()
        if bodiless(self.method, status):
            self.no_body = True
            length = bodiless_length(status, content_length, end, body)
            if length != content_length:
                if content_length is not None:  # RFC 9110 8.6: none on 204
                    parts = [part for part in parts if part[:2] != CONTENT_LENGTH_PREFIX]
                if length is not None:
                    parts.append(content_length_field(length))
        else:
            self._expected = expected_length(content_length, end, trailers, body)
            if content_length is None and self._expected is not None:
                parts.append(content_length_field(len(body)))
        self._trailers = trailers
        if self.disconnected:
            return
        conn = self.conn
        block = field + conn.fixed_block() + b"".join(parts)
        if self.rid_header is not None:  # --request-id's echo: not indexed, and out of the per-field cache
            block += literal(self.rid_header, (self.rid or "").encode("ascii"))
        if one_write(end, trailers, self._expected, body, self.no_body):
            # the common case, a complete response: HEADERS and DATA in one write
            self.sent = len(body)
            conn.send_whole(self, block, body)
            self._finish()
            return
        if self.no_body:
            # END_STREAM only with the app's own end: until then the stream stays in the connection's table
            # (disconnects reach the app, its slot stays counted)
            conn.send_headers(self, block, end_stream=end and not trailers)
            if end and not trailers:
                self._finish()
            return
        self._emit(body, end, block)

    def send_informational(self, status: int, headers: Headers) -> None:
        """A HEADERS frame with the 1xx :status and the app's fields, without END_STREAM (RFC 9113 8.1),
        ahead of the final response's; the server's own fields are left to the final response."""
        if self.response_started or self.finished:
            raise AppProtocolError("an informational response after the response started")
        code = check_interim(status, headers)
        parts, _ = encode_response_fields(headers)
        if not self.disconnected:
            self.conn.send_headers(self, status_field(code) + b"".join(parts), end_stream=False)

    def _emit(self, data: bytes, end: bool, head: bytes | None = None) -> None:
        """Send ``data`` (after the HEADERS block ``head``, when starting); finish when ``end``."""
        no_body = self.no_body
        if data and not no_body:
            self.sent += len(data)
        last = end and not self._trailers
        if not no_body and self._expected is not None:
            excess = length_excess(self.sent, self._expected, last)
            if excess:
                log_length_error(self, self.sent, self._expected, "stream reset")
                if excess < 0:  # what was sent goes out; the client sees it cut short
                    if head is not None:
                        self.conn.send_headers(self, head, end_stream=False)
                    if data:
                        self.conn.send_data(self, data, False)
                self.abort()  # bytes past the declared length never do (nor the head they came with)
                return
        if head is not None:
            self.conn.send_headers(self, head, end_stream=False)
        if no_body:
            if last:
                self.conn.send_data(self, b"", True)  # no-op if the HEADERS already ended the stream
                self._finish()
            return
        if data or last:
            self.conn.send_data(self, data, last)
        if last:
            self._finish()

    def send_body(self, data: bytes, end: bool = False) -> None:
        if not self.response_started or self.finished:
            raise AppProtocolError("send_body() outside a started response")
        if not self.disconnected:
            self._emit(data, end)

    def send_trailers(self, trailers: Headers) -> None:
        if self.finished:
            return
        if not self.disconnected:
            if self.no_body:
                self.conn.send_data(self, b"", True)  # a response without content ends without trailers
            else:
                self.conn.send_trailers(self, encode_trailers(trailers))
        self._finish()

    def on_disconnect(self) -> None:
        """The client reset the stream or the connection is gone: the app sees http.disconnect."""
        self.disconnected = True
        self.pending = None
        self._wake_body()
        self._wake_disconnect()
        self.wake_drain()

    def wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.writable_hook is not None:
            self.writable_hook()

    def sending(self) -> bool:
        """In the middle of sending: waiting in drain, or a WSGI thread that pushes body items."""
        return self._drain_waiter is not None or self.writable_hook is not None

    async def drain(self) -> None:
        while self.write_paused and not self.disconnected:
            if self._drain_waiter is None:
                self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def abort(self) -> None:
        """Give up on the response: RST_STREAM (INTERNAL_ERROR); the connection and its other streams go on."""
        if local_open(self.state):
            self.conn.reset_stream(self, fr.INTERNAL_ERROR)
        if not self.finished:
            self.finished = True
            self.conn.response_done(self, aborted=True)
        self.on_disconnect()

    @property
    def can_sendfile(self) -> bool:
        return False

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        raise RuntimeError("sendfile is not available on an HTTP/2 stream")
