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
from collections import deque
from typing import Any, Final, cast

import httptools

from bascule.context import ServerContext
from bascule.errors import ProtocolError
from bascule.protocols.exchange import Headers, describe_peer, peer_address
from bascule.protocols.h1 import checks as h1_checks
from bascule.protocols.h1 import switching as h1_switching
from bascule.protocols.h1.exchange import (
    PAUSE_BODY,
    PAUSE_ERROR,
    PAUSE_PIPELINE,
    H1Exchange,
)
from bascule.protocols.h1.phases import Phase
from bascule.protocols.http1x import simple_response
from bascule.protocols.outbox import Outbox
from bascule.protocols.semantics import answer_timeout, body_over_limit
from bascule.protocols.sendfile import flush_transport, transport_fd
from bascule.protocols.thread_writer import FD_CEILING, ThreadWriter
from bascule.protocols.upgrades import HandOver
from bascule.tls import tls_extension

LINGER_SECONDS: Final = 2.0
COALESCE_LIMIT: Final = 256 * 1024  # queued bytes written at once, without waiting for the end of the pass (outbox.py)
JOIN_BELOW: Final = 16 * 1024  # pending pieces smaller than this in all are joined before writing

_METHODS: Final = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_PROXY_FIELDS: Final = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                           b"x-forwarded-prefix", b"forwarded"))
"""Fields a trusted proxy may set (trust.py): seeing one is what makes a request go through ctx.forwarded."""
_NOTED_REQUEST_HEADERS: Final = frozenset((b"expect", b"te", b"host", b"content-length",
                                           b"transfer-encoding")) | _PROXY_FIELDS
_FRAMING_HEADERS: Final = frozenset((b"content-length", b"transfer-encoding"))
# Final, all of these: compiled, a Final module name is a C static; any other is a dict lookup in the module's
# globals at each use (~130 instructions: per header for _NOTED_REQUEST_HEADERS, per connection for the two
# sizes the Outbox is made with; callgrind)
_NO_QUEUE: Final[deque[H1Exchange]] = deque()
"""``queue`` of a connection that has had no pipelined request: one empty deque shared by all, never
appended to (a deque per connection cost ~600 instructions to make, callgrind h1close; pipelining is rare).
The first pipelined request gives its connection a deque of its own."""
_log = logging.getLogger("bascule.error")


class H1Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests with llhttp and writes responses in order."""

    tls: dict[str, Any] | None = None  # the ASGI tls extension's dict, set in connection_made over TLS
    proxy_header: Any = None  # the PROXY protocol header (listen/), whose endpoints replaced the socket's
    writer: ThreadWriter | None = None  # the socket for WSGI pool threads (open_writer), closed with the connection

    def __init__(self, ctx: ServerContext, scheme: str = "http", *, local: tuple[str, int] | None = None) -> None:
        """``local``: the listener's one local address, when all its connections share it (else read from
        the transport at connection_made)."""
        self.ctx = ctx
        self.loop = ctx.loop
        self.scheme = scheme
        self.parser = h1_checks.new_parser(self)  # strict llhttp, BWS before a chunk extension allowed
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = local
        self.sock_fd: int | None = None  # see socket_fd()
        self._fd_known = False
        self.phase = Phase.IDLE  # what is being read (protocols/h1/phases.py: the table of its transitions)
        self.closed = False  # phase is CLOSED or SWITCHED: a plain bool, read on every flush
        # queued bytes, drain waiters, pause reasons (PAUSE_*); its transport is ours until self.closed
        self.outbox = Outbox(ctx.loop, COALESCE_LIMIT, JOIN_BELOW, end_of_pass=ctx.end_of_pass)
        self.idle_since: float | None = None
        # the request being parsed
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._hosts = 0
        self._expect_continue = False
        self._te_trailers = False
        self._framing = False  # a Content-Length or Transfer-Encoding field was seen: check it
        self._forwarded = False  # a proxy field was seen (_PROXY_FIELDS): ctx.forwarded decides
        self._head_since = 0.0  # when the head in progress began (meaningful while _head_bytes > 0)
        self._body_mark: tuple[H1Exchange | None, int, float] = (None, 0, 0.0)  # body-idle watch
        self._app_mark: tuple[H1Exchange | None, float] = (None, 0.0)  # --timeout-request watch
        self._max_url = ctx.limit_request_line
        self._max_head = ctx.limit_request_header_size
        # a read longer than this may hold a head over a size limit: the heads completed within it are measured
        self._measure_above = min(ctx.limit_request_header_size, ctx.limit_request_field_size)
        self._measuring = False  # inside such a read
        self._read_at_idle: bytes | None = None  # a read that began between requests, until a head ends in it
        self._max_headers = ctx.limit_request_headers
        self._requests_left = ctx.limit_requests_per_connection or 0  # counts down; 0: no limit
        self._latest: H1Exchange | None = None  # the last request whose head was read: its body is read in BODY
        # the request being answered, and those waiting behind it
        self.active: H1Exchange | None = None
        self.queue: deque[H1Exchange] = _NO_QUEUE  # read-only until a request waits (on_headers_complete)
        self._to_dispatch: H1Exchange | None = None
        self._dispatching = False  # inside _dispatch: a completion queues the next request instead
        self._next: H1Exchange | None = None
        self._pending_error: tuple[int, bytes] | None = None
        self._early = b""  # the first reads of a connection opening with "PRI *" (an HTTP/2 preface)
        self._raw_left = 0  # in UPGRADE_BODY: body bytes of a not-taken upgrade request still to read

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.outbox.transport = cast(asyncio.Transport, transport)  # uvloop's: not subclasses
        # uvloop's TCP transport read both names at accept and converts them here with no system call
        peer: Any = transport.get_extra_info("peername")
        same: Any = peer  # not narrowed by the test below: compiled, a narrowed tuple is unboxed and boxed anew
        if type(peer) is tuple and len(peer) == 2 and type(peer[0]) is str and type(peer[1]) is int:
            self.client = same  # IPv4, (host, port) already: kept as it is (peer_address makes a new one)
        else:
            self.client = peer_address(peer)  # IPv6's 4-tuple, a Unix socket's path, None
        if self.server is None:  # not known from the listener (listen/accept.py: fixed_local_address)
            self.server = peer_address(transport.get_extra_info("sockname"))
        # No TLS listener, no TLS transport: uvloop's get_extra_info("sslcontext") on a TCP transport goes
        # through super() and costs ~1,600 instructions per connection to say None (callgrind h1close).
        if self.ctx.ssl_context is not None and transport.get_extra_info("sslcontext") is not None:
            # TLS: the handshake is done; its facts are gathered once for every request of the connection
            self.scheme = "https"
            self.tls = tls_extension(transport.get_extra_info("ssl_object"), self.ctx.server_cert_pem)
            self._fd_known = True  # no sendfile through TLS: sock_fd stays None
        self.idle_since = self.loop.time()
        ctx = self.ctx
        limit = ctx.limit_connections
        if limit is not None and len(ctx.connections) >= limit:
            _log.info("refused a connection from %s: --limit-connections %d reached", describe_peer(self.client), limit)
            self.phase = Phase.STOPPED
            self._send_error(503, b"Service Unavailable: too many connections\n")
            return
        ctx.connections.add(self)
        if ctx.shutting_down:
            self.close()

    def socket_fd(self) -> int | None:
        """The socket's descriptor, for sendfile: plain connections only (None over TLS, or where the
        transport exposes no socket).

        Looked up on first use, not at connection_made (sendfile.transport_fd says why). Safe from a WSGI
        pool thread too (the lookup runs under the GIL and only reads the transport).
        """
        if not self._fd_known:
            self._fd_known = True
            if not self.closed:
                self.sock_fd = transport_fd(self.transport)
        return self.sock_fd

    def open_writer(self) -> ThreadWriter | None:
        """The socket's :class:`ThreadWriter` (made on first use, on the loop): None over TLS, once closed, or
        when descriptors run short (thread_writer.FD_CEILING)."""
        writer = self.writer
        transport = self.transport
        if writer is None and not self.closed and transport is not None:
            fd = self.socket_fd()
            if fd is not None and fd < FD_CEILING:
                try:
                    writer = self.writer = ThreadWriter(fd, transport.get_write_buffer_size)
                except OSError:  # out of descriptors after all: this response goes through the loop
                    return None
        return writer

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self.closed = True
        self.outbox.detach()
        if self.writer is not None:
            self.writer.close()
        self.ctx.connections.discard(self)
        # the active exchange, then the queued ones; not `(self.active, *self.queue)`: compiled, that copies
        # the deque through a list into a tuple (~1,300 instructions per connection, callgrind h1close)
        active = self.active
        if active is not None:
            if active.thread_wrote_all:  # a pool thread wrote it whole (a write still in progress counts as lost)
                active.finish_thread_send(b"")  # and the client got it: complete, not dropped
            self.ctx.request_finished(active, dropped=True)
            active.on_disconnect()
        for ex in tuple(self.queue) if self.queue else ():  # a copy: a disconnect may reach the queue
            self.ctx.request_finished(ex, dropped=True)
            ex.on_disconnect()
        latest = self._latest
        if latest is not None and not latest._body_done and latest is not self.active:
            latest.on_disconnect()  # answered before its body was all read (lingering): its app may still read
        self.queue.clear()
        self._wake_drain()
        # The exchanges refer to this connection and the parser holds its bound callbacks: with this side's
        # references dropped no cycle is left, so reference counting frees a closed connection (and its last
        # exchange and Task) at once. Left to the cyclic collector, every new connection cost ~22k
        # instructions of collection (benchmarks/callgrind.py h1close). Nothing parses after this.
        self.active = self._latest = None
        self.parser = h1_checks.SPENT_PARSER

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is Phase.LINGERING:
            return  # closing after an unread body: what still arrives is dropped, never parsed
        if phase is Phase.UPGRADE_BODY:
            h1_switching.feed_raw(self, data)
            return
        # its first line is the request line of the first head completed in it (h1_checks.request_line_version)
        self._read_at_idle = data if phase is Phase.IDLE else None
        try:
            try:
                if len(data) > self._measure_above:
                    self._feed_measured(data)
                else:
                    self.parser.feed_data(data)
            finally:
                self._read_at_idle = None  # never kept past this read (up to uvloop's 256 KiB)
            if self.phase is Phase.HEAD:
                # A head still incomplete after this chunk: bound what it may grow to (the memory a
                # slow or hostile client can pin), counted per chunk rather than per header, and start
                # its deadline (--timeout-request-head, checked by on_tick).
                if self._head_bytes:
                    self._head_bytes += len(data)
                else:  # it began in this chunk, perhaps behind many complete pipelined requests
                    self._head_since = self.loop.time()
                    self._head_bytes = 1 + h1_checks.partial_head_size(data, self._url, self._headers)
                if self._url == b"*" and self._latest is None:
                    self._early += data  # perhaps an HTTP/2 preface over several reads (switching.h2_preface)
                if self._head_bytes > self._max_head:
                    raise ProtocolError(f"request header fields too large (over --limit-request-header-size, "
                                        f"{self._max_head} bytes)", 431)
            elif self._headers:
                # fields collected while no head is open: a chunked body's trailer section, still open
                ctx = self.ctx
                h1_checks.check_trailers(self._headers, ctx.limit_request_headers, ctx.limit_request_field_size)
        except httptools.HttpParserUpgrade as upgrade:
            if not h1_switching.on_upgrade(self, data[upgrade.args[0]:]):
                return  # the transport was taken (WebSocket, HTTP/2), or the request refused
        except (httptools.HttpParserError, ProtocolError) as exc:
            if self._latest is None and str(exc).startswith("Pause on PRI") and h1_switching.h2_preface(self, data):
                return  # llhttp stopped at the HTTP/2 preface's "PRI * HTTP/2.0": the connection is HTTP/2's now
            refusal: Exception = exc
            if isinstance(exc, httptools.HttpParserInvalidMethodError) and len(data) <= h1_checks.REPLAY_LIMIT:
                method = h1_checks.unknown_method(data)
                if method is not None:  # a token llhttp does not know, not garbage (RFC 9110 9.1)
                    refusal = ProtocolError(f"method {method[:40].decode('ascii')!r} is not implemented here", 501)
            self._bad_request(refusal)
            del refusal  # exc's traceback holds this frame: kept, the pair would wait for the cyclic collector
        ex = self._to_dispatch
        if ex is not None:
            self._to_dispatch = None
            self._dispatch(ex)

    def _feed_measured(self, data: bytes) -> None:
        """Feed a read long enough to hold a head or a field over a size limit: every head completed within
        it takes the slow path of on_headers_complete and is measured (a shorter read cannot hold either, and
        a head spanning reads is measured anyway), not only the first one."""
        self._framing = self._measuring = True
        try:
            self.parser.feed_data(data)
        finally:
            self._measuring = False

    def _dispatch(self, ex: H1Exchange | None) -> None:
        """Serve ``ex``, then each pipelined request its completion made next, one after the other.

        A request that completes inside its own dispatch (an app that never suspends) must not start the
        next one on top of its stack: response_done leaves it in ``_next`` and this loop takes it, so the
        stack stays flat however deep the pipeline.
        """
        self._dispatching = True
        try:
            while ex is not None:
                self.ctx.serve(ex)
                ex, self._next = self._next, None
        finally:
            self._dispatching = False

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.outbox.write_paused = True
        if self.active is not None:
            self.active.write_paused = True

    def resume_writing(self) -> None:
        self.outbox.write_paused = False
        if self.active is not None:
            self.active.write_paused = False
        self._wake_drain()

    # -- llhttp callbacks ---------------------------------------------------------------------------
    # No on_message_begin: httptools only calls the callbacks a protocol defines, so the per-request
    # state is reset at the end of on_headers_complete instead, saving one Python call per request.

    def on_url(self, url: bytes) -> None:
        self.phase = Phase.HEAD
        self._url += url
        if len(self._url) > self._max_url:
            raise ProtocolError("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name in _NOTED_REQUEST_HEADERS:
            if name == b"host":
                self._hosts += 1
                return
            if name in _FRAMING_HEADERS:
                self._framing = True
                return
            if name in _PROXY_FIELDS:
                self._forwarded = True
                return
            value = value.lower()
            if name == b"expect":
                self._expect_continue = value == b"100-continue"
            elif b"trailers" in value:
                self._te_trailers = True

    def on_headers_complete(self) -> None:
        if self._head_bytes:  # the head spanned several chunks: measure it whole (slow path below)
            self._head_bytes = 0
            self._framing = True
        if len(self._headers) > self._max_headers:
            raise ProtocolError("too many request header fields", 431)
        parser = self.parser
        raw_method = parser.get_method()
        url = self._url
        read = self._read_at_idle
        if read is not None:
            self._read_at_idle = None  # a later head in the same read is not at its start
            http_version = h1_checks.request_line_version(read, raw_method, url) or parser.get_http_version()
        else:
            http_version = parser.get_http_version()
        if http_version != "1.1" and http_version != "1.0":
            raise ProtocolError(f"HTTP/{http_version} is not served here (HTTP/1.0 and 1.1 are)", 505)
        if self._hosts != 1 and (http_version == "1.1" or self._hosts):
            raise ProtocolError("a request must carry exactly one Host header (RFC 9112 3.2)", 400)
        method = _METHODS.get(raw_method) or h1_checks.other_method(raw_method)
        # 35 is "#": an int, since `bytes in bytes` first tries the needle as an int and raises and clears a
        # TypeError inside CPython 3.11 (~1,000 instructions a request, callgrind)
        if url[:1] == b"/" and 35 not in url:
            raw_path, _, query = url.partition(b"?")
        elif url == b"*" or 35 in url:
            h1_checks.check_target(raw_method, url)
            raw_path, query = url, b""
        else:
            try:
                parsed: Any = httptools.parse_url(url)  # Any: its path and query may be None (stubs say bytes)
            except httptools.HttpParserInvalidURLError:
                raise ProtocolError("invalid request target", 400) from None
            if not parsed.schema:
                raise ProtocolError("the request target must be a path or an absolute URL", 400)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        if self._framing:
            self._framing = self._measuring  # within a long read, the next head is measured too
            ctx = self.ctx
            h1_checks.check_head_size(url, self._headers, ctx.limit_request_header_size, ctx.limit_request_field_size)
            length = h1_checks.check_framing(self._headers, http_version)
            limit = self.ctx.limit_request_body
            if length is not None and limit is not None and length > limit:
                raise ProtocolError(body_over_limit(limit, length), 413)
        ex = H1Exchange(self, method, raw_path, query, self._headers, http_version,
                        parser.should_keep_alive(), self._expect_continue and http_version == "1.1")
        if self._requests_left:
            self._requests_left -= 1
            if self._requests_left == 0:
                self._requests_left = -1  # stays non-zero: the connection closes after this request
                ex.keep_alive = False  # --limit-requests-per-connection reached
        if self._te_trailers:
            ex.te_trailers = True
        if self._forwarded:
            self._forwarded = False
            self.ctx.forwarded(ex)  # before dispatch and before a WebSocket upgrade copies its fields
        ex.start_time = self.loop.time()
        self._url = b""
        self._headers = []
        self._hosts = 0
        self._expect_continue = False
        self._te_trailers = False
        self.phase = Phase.BODY  # only now: a head refused above stays HEAD, and _bad_request sees no body
        self._latest = ex
        active = self.active
        if (active is not None and active.thread_wrote_all and active.keep_alive and not self.queue
                and not self.ctx.shutting_down):
            # A WSGI pool thread wrote the response before whole (the client read it: here is its next
            # request), and its completion is still on its way to the loop (LoopOutbox): complete it now, and
            # this request goes ahead as if it came after. Queued behind it instead, it paused reading and
            # waited for that completion (75% of requests, wrk, 64 connections); the completion that comes
            # later finds the response finished. Only where response_done then keeps the connection and
            # dispatches nothing (the thread wrote a keep-alive response with its body all read; no request
            # queued, which response_done would dispatch here, inside the parser's callback): with keep_alive
            # cleared (a 504 after the claim), a server shutting down, or requests queued, this one queues.
            active.finish_thread_send(b"")
        self.idle_since = None
        if self.active is None:
            self.active = ex
            self._to_dispatch = ex
            if self.outbox.write_paused:
                ex.write_paused = True
        else:
            if self.queue is _NO_QUEUE:
                self.queue = deque()
            self.queue.append(ex)
            self.outbox.pause_reading(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._latest  # llhttp calls this in BODY only
        if ex is not None:
            ex.feed_body(body)

    def on_message_complete(self) -> None:
        if self._headers:
            self._end_trailers()
        if self.phase is Phase.BODY:
            self.phase = Phase.IDLE
            ex = self._latest
            if ex is not None:
                ex.end_body()

    def _end_trailers(self) -> None:
        """A chunked body's trailer section is complete: check it, then drop it (never the next head's).

        Even the fields check_trailers permits go no further: neither ASGI (no request-trailers message) nor
        WSGI can hand request trailers to an app, and HTTP/2 drops them likewise.
        """
        trailers = self._headers
        self._headers = []
        self._hosts = 0
        self._expect_continue = False
        self._te_trailers = False
        self._forwarded = False  # a proxy field in a trailer is dropped with it
        self._framing = self._measuring
        ctx = self.ctx
        h1_checks.check_trailers(trailers, ctx.limit_request_headers, ctx.limit_request_field_size)
        ex = self._latest
        if self.phase is Phase.BODY and ex is not None and not self.parser.should_keep_alive():
            # "Connection: close" as a trailer: dropped like the others, but llhttp reads nothing after it
            # ("Data after Connection: close"), so this response closes the connection rather than the
            # next request getting a 400
            ex.keep_alive = False

    # -- switching protocols (switching.py: detach, and the upgrades taken or not) ----------------------
    def hand_over(self) -> HandOver:
        """What the protocol taking this connection over must know of it (the scheme, TLS facts, and the endpoints
        a PROXY header gave): passed along explicitly, so it never reads this object."""
        return HandOver(self.scheme, self.tls, self.client, self.server, self.proxy_header)

    # -- dispatch and completion --------------------------------------------------------------------
    def response_done(self, ex: H1Exchange, aborted: bool = False) -> None:
        """Called by the exchange once its response is complete: report it, then serve the next request."""
        self.ctx.request_finished(ex)
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
        outbox = self.outbox
        outbox.resume_reading(PAUSE_BODY)  # a body the app left unread may have filled the buffer: it is dropped now
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            nxt.write_paused = outbox.write_paused
            if not self.queue:
                outbox.resume_reading(PAUSE_PIPELINE)
            if self._dispatching:
                self._next = nxt
            else:
                self._dispatch(nxt)
        elif self._pending_error is not None:
            self._send_error(*self._pending_error)
        else:
            self.idle_since = self.loop.time()
            outbox.resume_reading(PAUSE_PIPELINE)

    def _close_after(self, ex: H1Exchange) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if ex._body_done or not transport.can_write_eof():
            self.close()
            return
        self._linger(transport)

    def _linger(self, transport: asyncio.Transport) -> None:
        """Lingering close: send FIN, keep reading (and dropping) for a moment, so the kernel does not
        answer the client's unread upload with a RST that would destroy our response."""
        outbox = self.outbox
        outbox.flush()
        transport.write_eof()
        self.phase = Phase.LINGERING
        outbox.resume_reading(PAUSE_BODY)
        outbox.resume_reading(PAUSE_PIPELINE)
        outbox.resume_reading(PAUSE_ERROR)
        self.loop.call_later(LINGER_SECONDS, self.close)

    def _bad_request(self, exc: Exception) -> None:
        origin = exc if isinstance(exc, ProtocolError) else exc.__cause__ or exc.__context__  # ours, if any
        cause = origin if isinstance(origin, ProtocolError) else None
        status = cause.status if cause is not None else 400
        reason = str(cause) if cause is not None else (str(exc) or "malformed request")
        _log.info("rejected a request from %s: %s (%d)", describe_peer(self.client), reason, status)
        self.outbox.pause_reading(PAUSE_ERROR)
        body = f"{http.HTTPStatus(status).phrase}: {reason}\n".encode("latin-1", "replace")
        broken = self._latest if self.phase is Phase.BODY else None
        self.phase = Phase.STOPPED
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
        self.outbox.write(simple_response(status, self.ctx.fixed_headers, body))
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing() and transport.can_write_eof():
            self._linger(transport)  # the client may still be sending (an upload over the limit): no RST
        else:
            self.close()

    # -- transport helpers --------------------------------------------------------------------------
    def close(self) -> None:
        self.outbox.flush()  # what was already sent by the app goes out before the FIN
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def flush(self) -> None:
        """Wait until everything written so far has left the transport's buffer (used before sendfile)."""
        await flush_transport(self.outbox, self.transport)

    async def writer_after_flush(self) -> ThreadWriter | None:
        """For a pool thread's sendfile: the connection's ThreadWriter (opened here, on the loop), once
        everything written so far has left the transport's buffer."""
        writer = self.open_writer()
        await flush_transport(self.outbox, self.transport)
        return writer

    def _wake_drain(self) -> None:
        self.outbox.wake_drain()
        active = self.active
        if active is not None and active.writable_hook is not None:
            active.writable_hook()
        for ex in tuple(self.queue) if self.queue else ():
            if ex.writable_hook is not None:
                ex.writable_hook()

    # -- server-driven ------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        """Twice a second: keep-alive idle, head deadline, body idle, app deadline (no per-request timers)."""
        phase = self.phase
        if phase is Phase.LINGERING or phase is Phase.CLOSED or phase is Phase.SWITCHED:
            return  # already answered and on its way out, or no longer ours
        ctx = self.ctx
        active = self.active
        if phase is Phase.HEAD:
            if self._head_bytes and now - self._head_since > ctx.timeout_request_head:
                self._bad_request(ProtocolError("request head not complete within timeout_request_head", 408))
                return
        elif active is None:
            idle = self.idle_since
            if idle is not None and now - idle > ctx.keep_alive_timeout:
                self.close()
            return
        parsing = self._latest if phase is Phase.BODY else None
        if parsing is not None:
            mark_ex, mark_n, mark_t = self._body_mark
            if mark_ex is not parsing or mark_n != parsing.received or self.outbox.paused_by:
                self._body_mark = (parsing, parsing.received, now)  # progress, or not the client's turn
            elif now - mark_t > ctx.timeout_body_idle:
                self._bad_request(ProtocolError("no request body bytes within timeout_body_idle", 408))
                return
        if ctx.timeout_request is not None and active is not None:
            if self._app_mark[0] is not active:
                self._app_mark = (active, now)
            elif now - self._app_mark[1] > ctx.timeout_request:
                self._app_timed_out(active, ctx.timeout_request)

    def _app_timed_out(self, ex: H1Exchange, timeout: float) -> None:
        # the 504, if it can still be answered, closes the connection. First, before answer_timeout looks at
        # response_started: a WSGI pool thread's claim (H1Exchange.send_from_thread) tests keep_alive
        ex.keep_alive = False
        answer_timeout(ex, timeout, "connection closed")
        ex.on_disconnect()  # the app's later sends are dropped (a WSGI result is discarded) and logged
        if ex.cancel_app is not None:
            ex.cancel_app()
        self.close()
