"""One HTTP/1.1 request and its response: body buffering, response framing, declared-length checks.

Split from protocols/h1/connection.py, which owns the connection (parsing, ordering, flow control): an
:class:`H1Exchange` is what the gateways see of one request on that connection, through the
:class:`~bascule.protocols.exchange.Exchange` seam.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
from collections.abc import Callable
from time import perf_counter
from typing import IO, TYPE_CHECKING, Final

from bascule.errors import AppProtocolError, ProtocolError
from bascule.protocols.exchange import BufferedExchange, Headers, check_interim
from bascule.protocols.fields import field_block
from bascule.protocols.http1x import (
    CONTINUE,
    LAST_CHUNK,
    STATUS_LINES,
    chunk_size,
    header_block,
    status_line,
    trailer_section,
)
from bascule.protocols.semantics import (
    bodiless,
    bodiless_length,
    body_over_limit,
    expected_length,
    length_excess,
    log_length_error,
    one_write,
)
from bascule.protocols.sendfile import file_after_queue, send_chunks
from bascule.protocols.thread_writer import ROOM, ThreadWriter

if TYPE_CHECKING:
    from bascule.protocols.h1.connection import H1Connection

BODY_HIGH_WATER = 256 * 1024
# Why an HTTP/1.1 connection stops reading (Outbox.pause_reading): it resumes when none is left.
PAUSE_BODY = 1  # a request body buffered past BODY_HIGH_WATER, not read by the app yet
PAUSE_PIPELINE = 2  # a request waits behind the one being answered
PAUSE_UPGRADE = 4  # an upgrade not taken: nothing after its request is read (the connection closes)
PAUSE_ERROR = 8  # a bad request was answered: nothing more is read

THREAD_WRITE_BELOW: Final = 32 * 1024
"""A WSGI pool thread writes a body (the head not counted) itself (send_from_thread) only if it is shorter than
this; a longer one goes to the loop, as in loop mode. A long write holds the pool thread in the kernel with the
GIL released (64 KiB over loopback: ~15 us), and the loop, woken meanwhile by the next requests, takes the core
and the GIL: the two then pass both back and forth. Measured (compiled, wrk, 64 connections, ``GET /big``,
64 KiB, server on one core, 6 interleaved pairs): 0.27 -> 0.11 context switches and 0.28 -> 0.14 futex calls per
request, 32.6k -> 37.2k req/s on average, 5 pairs of 6 faster. (Tried twice before, when the thread's write
still took a lock and its completion queued the next request: noise on the compiled build, slower on the
interpreted one; docs/benchmarks.md.) Short bodies, the common case, keep the thread's write: the loop then
only completes them."""

_log = logging.getLogger("bascule.error")


class H1Exchange(BufferedExchange):
    """One HTTP/1.1 request on a connection and the state of its response.

    No __slots__: most per-response state starts at a class-level default and is only written when it
    changes, which saves a couple of dozen attribute writes per request on the hot path.
    """

    conn: H1Connection
    start_time = 0.0
    disconnected = False
    response_started = False
    status = 0
    sent = 0
    write_paused = False
    no_body = False
    te_trailers = False
    _body_size = 0
    received = 0  # body bytes received so far, for --limit-request-body and the body-idle watch
    cancel_app: Callable[[], object] | None = None  # set by a gateway whose app runs as a task
    _chunked = False
    _expected: int | None = None
    _trailers = False
    thread_wrote_all = False  # send_from_thread wrote the whole response (connection_lost then completes it)

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
        if conn.tls is not None:
            self.tls = conn.tls

    # -- request body, fed by the connection --------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        self.received += len(data)
        limit = self.conn.ctx.limit_request_body
        if limit is not None and self.received > limit:
            # only a chunked body can get here (a declared length was checked with the head); raised in
            # llhttp's callback, so the connection answers 413 itself if nothing was answered yet, and
            # the app sees a disconnect
            raise ProtocolError(body_over_limit(limit), 413)
        if self.finished:
            return  # the response is done; the rest of the body is read and dropped
        if self._body is None:
            self._body = []
        self._body.append(data)
        self._body_size += len(data)
        if self._body_waiter is not None:
            self._wake_body()
        if self._body_size > BODY_HIGH_WATER:
            self.conn.outbox.pause_reading(PAUSE_BODY)

    def body_follows(self) -> None:
        """llhttp ended this message at an Upgrade it does not follow, before the declared body: the body
        is still to come, read by the connection (UPGRADE_BODY in protocols/h1/phases.py), then end_body."""
        self._body_done = False

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        body = self._body
        if not body:
            return b""
        self._body = None
        self._body_size = 0
        self.conn.outbox.resume_reading(PAUSE_BODY)  # the buffer may have paused reading: it is empty now
        return b"".join(body) if len(body) != 1 else body[0]

    async def receive_body(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started and not self._body_done and not self.disconnected:
                self.conn.outbox.write(CONTINUE)
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            self.conn.outbox.resume_reading(PAUSE_BODY)
            await self._body_waiter
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
        block, content_length, close = header_block(headers)
        self.response_started = True
        head = self._head(status, line, block, content_length, close, body, end, trailers)
        if head is None:
            return
        if one_write(end, trailers, self._expected, body, self.no_body):
            # the common case: a complete response, one write
            self.sent = len(body)
            outbox = self.conn.outbox
            if len(body) < 16384:
                head.append(body)
                outbox.write(b"".join(head))
            else:  # not copied into the head: queued as its own buffer
                outbox.write(b"".join(head))
                outbox.write(body)
            self._complete()
            return
        self._emit(head, body, end)

    def _head(self, status: int, line: bytes, block: bytes, content_length: int | None, close: bool, body: bytes,
              end: bool, trailers: bool) -> list[bytes] | None:
        """The head's pieces (status line, server fields, the app's block, framing, blank line), with this
        response's framing state set; None if the client is gone (nothing to write)."""
        conn = self.conn
        close = close or not self.keep_alive
        self.status = status
        if self.perf_start:  # an observer listens (the access log reads it): else no clock read
            self.head_time = perf_counter()
        http10 = self.http_version == "1.0"
        if self.expect_continue and not self._body_done:
            close = True  # we never asked for the body, so the connection cannot carry another request
        if status < 200 or bodiless(self.method, status):
            self.no_body = True
            content_length = bodiless_length(status, content_length, end, body)
            framing = b"" if content_length is None else b"content-length: %d\r\n" % content_length
        elif (expected := expected_length(content_length, end, trailers, body)) is not None:
            self._expected = expected
            framing = b"content-length: %d\r\n" % expected
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
            return None
        if self.rid_header is None:
            return [line, conn.ctx.fixed_headers, block, framing, b"\r\n"]
        # --request-id's echo: a server field, out of the app's cached block, in the one join of the caller
        return [line, conn.ctx.fixed_headers, self.rid_header, b": ", (self.rid or "").encode("ascii"), b"\r\n",
                block, framing, b"\r\n"]

    def _complete(self) -> None:
        """A response written whole is finished: the connection moves on, ``http.disconnect`` waiters wake."""
        self.finished = True
        self.conn.response_done(self)
        if self._disconnect_waiter is not None:
            self._wake_disconnect()

    # -- a WSGI pool thread's response, written by the thread (protocols/thread_writer.py says why) ----------
    def prepare_thread_send(self) -> bool:
        """The connection's ThreadWriter, opened on the loop for a keep-alive request (a last request's
        response goes through the loop, which closes the connection after it: no descriptor to duplicate)."""
        return self.keep_alive and self.conn.open_writer() is not None

    def send_from_thread(self, status: int, headers: Headers, body: bytes) -> bytes | None:
        """Write a complete keep-alive response from the WSGI thread (see Exchange.send_from_thread).

        Taken only when it goes out exactly as send_head would write it whole (a status of 200 or more with a body
        shorter than THREAD_WRITE_BELOW, its length declared right or not at all, the connection kept) and nothing
        else can be on its way to the client: this is the connection's active request, its body is all read, and
        neither the outbox nor uvloop holds bytes of an earlier response. Anything else is left to the loop.

        The claim: the checks that the loop could change (response started, client gone, another request
        active, keep-alive) are made and ``response_started`` set with no call between them, so the GIL cannot
        pass to the loop in between (compiled, or interpreted: CPython hands the GIL over only at calls and
        backward jumps). A loop that then times the request out (504) or loses the client finds the response
        started and gives it up, as for any response begun; finish_thread_send then does nothing. The 504's own
        check-then-send is not atomic (it logs in between): it clears keep_alive first, which this claim tests,
        so one of the two always sees the other. A connection lost after the claim closes the writer: a write
        not started yet then takes nothing (ThreadWriter.send), one in progress completes; either way the loss
        was counted (connection_lost) and finish_thread_send does nothing.
        """
        conn = self.conn
        writer = conn.writer
        line = STATUS_LINES.get(status)
        if (writer is None or len(body) >= THREAD_WRITE_BELOW or line is None or not self._body_done
                or self.expect_continue or status < 200
                or bodiless(self.method, status)):  # (a 1xx as the final status: the loop drops its body too)
            return None
        try:
            block, content_length, close = header_block(headers)
        except AppProtocolError:
            return None  # refused on the loop, as any other response's fields: a 500
        if close or (content_length is not None and content_length != len(body)):
            return None
        if writer.fd < 0 or conn.transport is None or conn.outbox.pending or writer.buffered():
            return None
        # the claim; keep_alive here, not with the checks above: the loop's 504 (H1Connection._app_timed_out)
        # clears it before it looks at response_started, so either this claim sees it cleared or the loop the claim
        if self.response_started or self.disconnected or conn.active is not self or not self.keep_alive:
            return None
        self.response_started = True
        head = self._head(status, line, block, content_length, close, body, True, False)
        if head is None:  # the client went away meanwhile: finish_thread_send will find it gone
            return b""
        self.sent = len(body)
        if len(body) < 16384:
            head.append(body)
            rest = writer.send(b"".join(head))
        else:
            rest = writer.send(b"".join(head), body)
        if not rest:
            self.thread_wrote_all = True  # the client has it all: a close seen before the completion is no drop
        return rest

    def finish_thread_send(self, rest: bytes) -> None:
        """On the loop: queue what the socket did not take (nothing else was written since), then complete.
        Nothing to do if the client went away meanwhile (its loss was counted) or the response was given up."""
        if self.disconnected or self.finished:
            return
        if rest:
            self.conn.outbox.write(rest)
        self._complete()

    def send_informational(self, status: int, headers: Headers) -> None:
        """``HTTP/1.1 103 Early Hints`` and the app's fields, queued ahead of the final head; nothing for an
        HTTP/1.0 request (no 1xx there) or a client already gone. The server's own fields (date, server,
        --header) are left to the final response."""
        if self.response_started or self.finished:
            raise AppProtocolError("an informational response after the response started")
        code = check_interim(status, headers)
        if self.http_version == "1.0" or self.disconnected:
            return
        self.conn.outbox.write(b"".join((status_line(code), field_block(headers, "informational header"),
                                         b"\r\n")))

    def _emit(self, parts: list[bytes], data: bytes, end: bool) -> None:
        """Write ``parts`` plus ``data`` framed for this response, in one write; finish when ``end``."""
        no_body = self.no_body
        if data and not no_body:
            self.sent += len(data)
            if self._chunked:
                parts += (chunk_size(len(data)), data, b"\r\n")
            else:
                parts.append(data)
        last = end and not self._trailers
        if not no_body and self._expected is not None:
            excess = length_excess(self.sent, self._expected, last)
            if excess:
                log_length_error(self, self.sent, self._expected, "connection closed")
                if excess < 0:  # what was sent goes out; the client sees it cut short
                    self.conn.outbox.write(b"".join(parts))
                self.abort()  # bytes past the declared length never do (nor the head they came with)
                return
        if last:
            if self._chunked:
                parts.append(LAST_CHUNK)
            self.conn.outbox.write(b"".join(parts) if len(parts) != 1 else parts[0])
            self._finish()
        elif parts:
            self.conn.outbox.write(b"".join(parts) if len(parts) != 1 else parts[0])

    def refuse(self, status: int, body: bytes) -> None:
        self.keep_alive = False  # a client turned away for load should come back on a new connection
        self.send_simple(status, body)

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def send_body(self, data: bytes, end: bool = False) -> None:
        if not self.response_started or self.finished:
            raise AppProtocolError("send_body() outside a started response")
        if not self.disconnected:
            self._emit([], data, end)

    def send_trailers(self, trailers: Headers) -> None:
        if self.finished or self.disconnected:
            return
        if self._trailers and self.te_trailers:
            self.conn.outbox.write(trailer_section(trailers))
        elif self._chunked:
            self.conn.outbox.write(LAST_CHUNK)  # the client did not ask for trailers (RFC 9110 6.5.1)
        self._finish()

    def on_disconnect(self) -> None:
        self.disconnected = True
        self._wake_body()
        self._wake_disconnect()
        if self.writable_hook is not None:
            self.writable_hook()

    async def drain(self) -> None:
        await self.conn.outbox.drain()

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
        return not self._chunked and self.conn.socket_fd() is not None

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        """On a WSGI pool thread: each ``os.sendfile`` goes to the connection's ThreadWriter, which the
        connection closes as it lets go of the socket (a piece in progress then closes it as it returns). So no
        piece is sent once the connection is gone, when the socket's number may already be another client's (a
        check of ``disconnected`` before the call could not promise that: the loop may run between the check
        and the call). Without a writer (past thread_writer.FD_CEILING) the socket's own number is used, as
        before, between such checks."""
        fd = self.conn.socket_fd()
        if fd is None:
            raise RuntimeError("sendfile is not available on this connection")
        writer = asyncio.run_coroutine_threadsafe(self.conn.writer_after_flush(), self.loop).result()
        if writer is not None:
            sent = self._sendfile_to(writer, file, offset, count)
        else:
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

    def _sendfile_to(self, writer: ThreadWriter, file: IO[bytes], offset: int, count: int) -> int:
        """os.sendfile pieces to ``writer``, waiting for room between them."""
        sent = 0
        poller: select.poll | None = None
        while sent < count and not self.disconnected:
            n = writer.sendfile(file.fileno(), offset + sent, count - sent)
            if n == ROOM:
                if poller is None:
                    fd = writer.fd
                    if fd < 0:
                        break
                    poller = select.poll()  # the duplicate's number: once closed, it only wakes this sooner
                    poller.register(fd, select.POLLOUT)
                poller.poll(1000)
                continue
            if n <= 0:  # the end of the file, an error, or the connection let go of its socket
                break
            sent += n
        return sent

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """os.sendfile on a cleartext connection, once what is queued before it has left; over TLS, pieces
        read and sent under flow control (the default). A chunked response gets one chunk around it."""
        if not self.response_started or self.finished:
            raise AppProtocolError("send_file() outside a started response")
        if count <= 0 or self.no_body or self.disconnected:
            return
        conn = self.conn
        sock = conn.socket_fd()
        if sock is None:
            await send_chunks(self, fd, offset, count)
            return
        if not self._chunked and self._expected is not None and self.sent + count > self._expected:
            log_length_error(self, self.sent + count, self._expected, "connection closed")
            self.abort()
            return
        if self._chunked:
            conn.outbox.write(chunk_size(count))
        if await file_after_queue(self, conn.outbox, conn.transport, sock, fd, offset, count) and self._chunked:
            conn.outbox.write(b"\r\n")

    def _note_sent(self, n: int) -> None:
        """Count bytes sent outside the outbox (sendfile) against the declared length."""
        self.sent += n
