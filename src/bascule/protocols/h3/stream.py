"""One HTTP/3 request stream as the gateways see it: an :class:`~bascule.protocols.exchange.Exchange`.

Modelled on protocols/h2/stream.py; what differs is what QUIC does for us. The request body is buffered here
and the stream's receive window follows the app's reading (protocols/h3/quic.py: ``held`` is this buffer).
Response bytes go to aioquic's stream send buffer at once: QUIC flow control and congestion control decide
when they leave, and aioquic keeps them until they are acknowledged, without a bound of its own. So a stream
whose unacknowledged bytes are over :data:`SEND_BUFFER` is paused (``write_paused``; the gateways wait in
drain()) until acknowledgements bring it under half of that: a client that reads slowly costs the server at
most that much per stream.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import IO, TYPE_CHECKING

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import BufferedExchange, Headers, check_interim
from bascule.protocols.h3.headers import RequestHead, response_fields, status_field
from bascule.protocols.semantics import (
    bodiless,
    bodiless_length,
    expected_length,
    length_excess,
    log_length_error,
    one_write,
)

if TYPE_CHECKING:
    from bascule.protocols.h3.connection import H3Conn

SEND_BUFFER = 256 * 1024  # unacknowledged response bytes a stream may have before it is paused


class H3Stream(BufferedExchange):
    """One request/response on an HTTP/3 connection.

    Not compiled, while its bases are in the compiled build: their attributes live in the compiled object's
    slots, which compiled code (the gateways, the context) reads directly. So none of them may get a
    class-level value here (a class attribute would shadow the slot for Python code, and a write would then
    land in the instance dict where compiled code never looks): those without a default in the base are set
    in __init__. Class-level defaults below are this class's own attributes only.
    """

    conn: H3Conn
    websocket = False
    held = 0  # body bytes buffered here that the app has not read (they hold the stream's window shut)
    request_ended = False  # the client's side is complete (FIN), or it reset it
    local_ended = False  # our side is complete (FIN sent, or reset)
    _drain_waiter: asyncio.Future[None] | None = None
    _expected: int | None = None
    _trailers = False

    def __init__(self, conn: H3Conn, stream_id: int, head: RequestHead) -> None:
        self.http_version = "3"
        self.wire = "h3"
        self.scheme = "https"
        self.start_time = 0.0
        self.disconnected = False
        self.response_started = False
        self.status = 0
        self.sent = 0
        self.write_paused = False
        self.cancel_app = None
        self.conn = conn
        self.stream_id = stream_id
        self.loop = conn.loop
        self.method = head.method
        self.raw_path = head.raw_path
        self.query_string = head.query
        self.headers = head.headers
        self.content_length = head.content_length
        self.expect_continue = head.expect_continue
        self.client = conn.client
        self.server = conn.server
        if conn.tls is not None:
            self.tls = conn.tls
        if head.forwarded:
            conn.ctx.forwarded(self)

    # -- request body, fed by the connection --------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self.finished or self.disconnected:
            return  # nobody will read it: not held, so the window stays open (the connection stops reading)
        self.held += len(data)
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        if self._body_waiter is not None:
            self._wake_body()

    def _take(self) -> bytes:
        body = self._body
        if not body:
            return b""
        self._body = None
        data = b"".join(body) if len(body) != 1 else body[0]
        self.held = 0
        if not self._body_done:
            self.conn.credit(self)
        return data

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        return self._take()

    async def receive_body(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started and not self._body_done and not self.disconnected:
                self.conn.send_headers(self, [status_field(100)], False)
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
        fields, content_length = response_fields(headers)
        if status < 200:
            if status == 101:
                raise AppProtocolError("101 Switching Protocols does not exist in HTTP/3")
            if not self.disconnected:
                self.conn.send_headers(self, [field, *fields], False)
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
                    fields = [f for f in fields if f[0] != b"content-length"]
                if length is not None:
                    fields.append((b"content-length", b"%d" % length))
        else:
            self._expected = expected_length(content_length, end, trailers, body)
            if content_length is None and self._expected is not None:
                fields.append((b"content-length", b"%d" % len(body)))
        self._trailers = trailers
        if self.disconnected:
            return
        conn = self.conn
        block = [field, *conn.fixed_fields(), *fields]
        if self.rid_header is not None:  # --request-id's echo
            block.append((self.rid_header, (self.rid or "").encode("ascii")))
        if one_write(end, trailers, self._expected, body, self.no_body):
            self.sent = len(body)
            if body:
                conn.send_headers(self, block, False)
                conn.send_data(self, body, True)
            else:
                conn.send_headers(self, block, True)
            self._finish()
            return
        if self.no_body:
            conn.send_headers(self, block, end and not trailers)
            if end and not trailers:
                self._finish()
            return
        self._emit(body, end, block)

    def send_informational(self, status: int, headers: Headers) -> None:
        """A HEADERS frame with the 1xx :status and the app's fields ahead of the final response's (RFC 9114
        4.1); the server's own fields are left to the final response."""
        if self.response_started or self.finished:
            raise AppProtocolError("an informational response after the response started")
        code = check_interim(status, headers)
        fields, _ = response_fields(headers)
        if not self.disconnected:
            self.conn.send_headers(self, [status_field(code), *fields], False)

    def _emit(self, data: bytes, end: bool, head: Headers | None = None) -> None:
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
                        self.conn.send_headers(self, head, False)
                    if data:
                        self.conn.send_data(self, data, False)
                self.abort()
                return
        if head is not None:
            self.conn.send_headers(self, head, False)
        if no_body:
            if last:
                self.conn.send_data(self, b"", True)
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
                self.conn.send_data(self, b"", True)
            else:
                fields, _ = response_fields(trailers)
                self.conn.send_headers(self, fields, True)
        self._finish()

    def on_disconnect(self) -> None:
        """The client reset the stream or the connection is gone: the app sees http.disconnect."""
        self.disconnected = True
        self.held = 0
        self._wake_body()
        self._wake_disconnect()
        self.wake_drain()

    def wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.writable_hook is not None:
            self.writable_hook()

    async def drain(self) -> None:
        while self.write_paused and not self.disconnected:
            if self._drain_waiter is None:
                self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def abort(self) -> None:
        """Give up on the response: RESET_STREAM (H3_INTERNAL_ERROR); the connection and its other streams
        go on."""
        self.conn.reset(self)
        if not self.finished:
            self.finished = True
            self.conn.response_done(self, aborted=True)
        self.on_disconnect()

    @property
    def can_sendfile(self) -> bool:
        return False

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        raise RuntimeError("sendfile is not available on an HTTP/3 stream")
