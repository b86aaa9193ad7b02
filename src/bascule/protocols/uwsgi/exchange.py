"""The one request of a uwsgi connection, through the Exchange seam: its body, and its HTTP/1.x response.

The request comes from CGI variables (bascule.cgi), the response goes out as an HTTP/1.1 status line and
header block (protocols/http1x.py), which nginx parses as it would an HTTP upstream's. The rules of what a
head says are HTTP's (protocols/semantics.py). Two things differ from HTTP/1.1: there is no chunked coding
(nginx's uwsgi module does not decode it), so a response without a declared length ends with the connection;
and there is nothing after the response, so no keep-alive, pipelining or ``100 Continue``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import BufferedExchange, Headers
from bascule.protocols.http1x import STATUS_LINES, header_block, status_line
from bascule.protocols.semantics import bodiless, bodiless_length, expected_length, length_excess, log_length_error
from bascule.protocols.sendfile import send_chunks, to_socket

if TYPE_CHECKING:
    from bascule.protocols.uwsgi.connection import UwsgiConnection

BODY_HIGH_WATER = 256 * 1024
PAUSE_BODY = 1  # why a uwsgi connection stops reading (Outbox.pause_reading): a body the app has not read yet
_log = logging.getLogger("bascule.error")


class UwsgiExchange(BufferedExchange):
    """One request on a uwsgi connection and the state of its response (class-level defaults, as H1Exchange)."""

    conn: UwsgiConnection
    start_time = 0.0
    disconnected = False
    response_started = False
    status = 0
    sent = 0
    write_paused = False
    cancel_app: Callable[[], object] | None = None
    _body_size = 0
    _expected: int | None = None
    _trailers = False

    def __init__(self, conn: UwsgiConnection, method: str, raw_path: bytes, query: bytes, headers: Headers,
                 http_version: str, scheme: str, client: tuple[str, int] | None,
                 server: tuple[str, int] | None) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.method = method
        self.raw_path = raw_path
        self.query_string = query
        self.headers = headers
        self.http_version = http_version
        self.scheme = scheme
        self.client = client
        self.server = server

    # -- request body, fed by the connection (its length was checked against the limit with the head) ------
    def feed_body(self, data: bytes) -> None:
        if self.finished or not data:
            return  # the response is done; the rest of the body is read and dropped
        if self._body is None:
            self._body = []
        self._body.append(data)
        self._body_size += len(data)
        if self._body_waiter is not None:
            self._wake_body()
        if self._body_size > BODY_HIGH_WATER:
            self.conn.outbox.pause_reading(PAUSE_BODY)

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        return self._take()

    async def receive_body(self) -> bytes:
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            self.conn.outbox.resume_reading(PAUSE_BODY)
            await self._body_waiter
        return self._take()

    def _take(self) -> bytes:
        body = self._body
        if not body:
            return b""
        self._body = None
        self._body_size = 0
        self.conn.outbox.resume_reading(PAUSE_BODY)
        return b"".join(body) if len(body) != 1 else body[0]

    # -- response -----------------------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        if self.response_started:
            raise AppProtocolError("the response was already started")
        line = STATUS_LINES.get(status)
        if line is None:
            if type(status) is not int or not 100 <= status <= 999:
                raise AppProtocolError(f"invalid status code {status!r}")
            line = status_line(status)
        block, content_length, _ = header_block(headers)  # "connection: close" goes without saying here
        self.response_started = True
        self.status = status
        self._trailers = trailers  # announced, never written: nginx's uwsgi module reads no trailers
        if status < 200 or bodiless(self.method, status):
            self.no_body = True
            content_length = bodiless_length(status, content_length, end, body)
        else:
            content_length = self._expected = expected_length(content_length, end, trailers, body)
        if self.disconnected:
            return
        framing = b"" if content_length is None else b"content-length: %d\r\n" % content_length
        self._emit([line, self.conn.ctx.fixed_headers, block, framing, b"\r\n"], body, end)

    def _emit(self, parts: list[bytes], data: bytes, end: bool) -> None:
        """Write ``parts`` plus ``data`` in one write, checked against the declared length; finish when ``end``."""
        if data and not self.no_body:
            self.sent += len(data)
            parts.append(data)
        last = end and not self._trailers
        if not self.no_body and self._expected is not None:
            excess = length_excess(self.sent, self._expected, last)
            if excess:
                log_length_error(self, self.sent, self._expected, "connection closed")
                if excess < 0:  # what was sent goes out; nginx sees it cut short
                    self.conn.outbox.write(b"".join(parts))
                self.abort()
                return
        if parts:
            self.conn.outbox.write(b"".join(parts) if len(parts) != 1 else parts[0])
        if last:
            self._finish()

    def send_body(self, data: bytes, end: bool = False) -> None:
        if not self.response_started or self.finished:
            raise AppProtocolError("send_body() outside a started response")
        if not self.disconnected:
            self._emit([], data, end)

    def send_trailers(self, trailers: Headers) -> None:
        if not self.finished and not self.disconnected:
            self._finish()  # dropped: no chunked coding to carry them

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def on_disconnect(self) -> None:
        self.disconnected = True
        self._wake_body()
        self._wake_disconnect()
        if self.writable_hook is not None:
            self.writable_hook()

    async def drain(self) -> None:
        await self.conn.outbox.drain()

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            self.conn.response_done(self, aborted=True)
        self.conn.close()

    @property
    def can_sendfile(self) -> bool:
        return False  # WSGI thread mode's blocking sendfile: its file_wrapper is iterated instead

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        raise RuntimeError("blocking sendfile is not offered over uwsgi (can_sendfile is False)")

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """os.sendfile once what is queued has left (a uwsgi socket is never TLS); pieces on an inherited
        socket the transport does not expose."""
        if not self.response_started or self.finished:
            raise AppProtocolError("send_file() outside a started response")
        if count <= 0 or self.no_body or self.disconnected:
            return
        conn = self.conn
        sock = conn.sock_fd
        if sock is None:
            await send_chunks(self, fd, offset, count)
            return
        if self._expected is not None and self.sent + count > self._expected:
            log_length_error(self, self.sent + count, self._expected, "connection closed")
            self.abort()
            return
        await conn.flush()
        if self.disconnected or self.finished:
            return
        sent = await to_socket(self, sock, fd, offset, count)
        self.sent += sent
        if sent < count and not self.disconnected and not self.finished:
            _log.error("file shorter than the %d bytes to send (%d sent) for %s %s; connection closed",
                       count, sent, self.method, self.raw_path.decode("latin-1"))
            self.abort()
