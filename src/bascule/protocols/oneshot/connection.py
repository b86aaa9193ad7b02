"""uwsgi and SCGI over a socket (``--bind uwsgi://...``, ``scgi://...``): one connection, one request.

nginx's ``uwsgi_pass`` and ``scgi_pass`` open a connection per request, write one block of CGI variables
(a uwsgi packet, protocols/uwsgi_wire.py, or an SCGI netstring, protocols/scgi_wire.py; turned into a request
by bascule.cgi) and the body, exactly ``CONTENT_LENGTH`` bytes, then read the response until the connection
closes. The two wires differ only in that block's encoding and in the response's first line (uwsgi: an
HTTP/1.x status line; SCGI: a CGI ``Status:`` header): a :class:`Dialect` each. So this protocol has one
phase after another and never loops: head, body (streamed to the app, reading paused while it is not read),
response (protocols/oneshot/exchange.py), close. The options apply as over HTTP: --limit-request-body (413),
--timeout-request-head (for the variable block), --timeout-body-idle, --timeout-request, --limit-connections
and --limit-concurrency; --timeout-keep-alive has nothing to apply to.

What the web server says of its own client (``REMOTE_ADDR``/``REMOTE_PORT``, ``HTTPS``/``UWSGI_SCHEME``, the
server name and port, ``SCRIPT_NAME``, its other variables) is believed only from a trusted peer:
``ctx.trusted_proxies`` (--forwarded-allow-ips, by default loopback and Unix-socket peers); see
protocols/cgi_exchange.take_proxy_facts. Anyone else gets the socket's own endpoints and ``http``, as an
HTTP client's X-Forwarded-* headers would. Bytes that are not a request we can serve (an HTTP client on this
port, a bad block, variables that describe no request) get one log line and the connection closed; no app
is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from bascule.cgi import CGIRequest, FixedLengthBody, request_from_vars
from bascule.context import ServerContext
from bascule.errors import BasculeError
from bascule.protocols.cgi_exchange import cgi_simple_response, take_proxy_facts
from bascule.protocols.exchange import describe_peer, peer_address
from bascule.protocols.http1x import simple_response
from bascule.protocols.oneshot.exchange import PAUSE_BODY, OneshotExchange
from bascule.protocols.outbox import Outbox
from bascule.protocols.scgi_wire import ScgiReader
from bascule.protocols.semantics import answer_timeout, body_over_limit
from bascule.protocols.sendfile import transport_fd
from bascule.protocols.uwsgi_wire import UwsgiReader

LINGER_SECONDS = 2.0
JOIN_BELOW = 16 * 1024  # queued pieces smaller than this in all are joined before writing (outbox.py)

_log = logging.getLogger("bascule.error")


class Head(Protocol):
    """A parsed variable block (uwsgi_wire.UwsgiHead, scgi_wire.ScgiHead)."""

    pairs: list[tuple[bytes, bytes]]


class HeadReader(Protocol):
    """Buffers the first bytes until the variable block is complete (uwsgi_wire's and scgi_wire's readers):
    ``feed`` returns None, then the head, with the first body bytes in ``leftover``; it raises a
    BasculeError subclass (one log line's worth) for bytes that are not a head."""

    leftover: bytes

    def feed(self, data: bytes) -> Head | None: ...


class Dialect:
    """What tells uwsgi and SCGI apart: the variable block's reader, and the response's first line."""

    __slots__ = ("cgi_status", "name", "reader", "simple")

    def __init__(self, name: str, reader: Callable[[], HeadReader], cgi_status: bool,
                 simple: Callable[[int, bytes, bytes], bytes]) -> None:
        self.name = name
        self.reader = reader
        self.cgi_status = cgi_status
        """The response starts with ``Status: 200 OK`` (a CGI response) rather than an HTTP/1.x status line."""
        self.simple = simple
        """(status, the server's fixed header lines, body) -> a complete response of the server's own."""


UWSGI = Dialect("uwsgi", UwsgiReader, False, simple_response)
SCGI = Dialect("SCGI", ScgiReader, True, cgi_simple_response)


class OneshotConnection(asyncio.Protocol):
    """One uwsgi or SCGI connection: a block of variables, a body, one response, then close."""

    def __init__(self, ctx: ServerContext, dialect: Dialect) -> None:
        self.ctx = ctx
        self.dialect = dialect
        self.loop = ctx.loop
        self.outbox = Outbox(ctx.loop, join_below=JOIN_BELOW, end_of_pass=ctx.end_of_pass)
        self.reader: HeadReader | None = dialect.reader()  # until the variable block is complete
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.sock_fd: int | None = None
        self.exchange: OneshotExchange | None = None
        self.body = FixedLengthBody(0)
        self.closed = False
        self.lingering = False  # answered before the body was all read: the rest is dropped, then close
        self._since = 0.0  # when the connection came; then when the body last made progress
        self._mark = -1  # body bytes remaining at the last tick (the body-idle watch)

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.outbox.transport = cast(asyncio.Transport, transport)
        self.peer = peer_address(transport.get_extra_info("peername"))
        # the socket's own address and descriptor are asked for when needed (each is a system call on uvloop,
        # on a connection that carries one request): the address when the web server names no server, the
        # descriptor for a sendfile
        self._since = self.loop.time()
        ctx = self.ctx
        limit = ctx.limit_connections
        if limit is not None and len(ctx.connections) >= limit:
            _log.info("refused a connection from %s: --limit-connections %d reached", describe_peer(self.peer), limit)
            self._answer_and_close(503, b"Service Unavailable: too many connections\n")
            return
        ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            if reader is None:
                self._feed_body(data)
                return
            head = reader.feed(data)
            if head is not None:
                self.reader = None
                self._start(request_from_vars(head.pairs), reader.leftover)
        except BasculeError as exc:  # UwsgiError, ScgiError, CGIError: not a request we can serve
            self._reject(str(exc))

    def eof_received(self) -> bool | None:
        # A peer may half-close once its request is sent (nginx does not): the response can still go out.
        return True if self.exchange is not None and self.body.done else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.outbox.detach()
        self.ctx.connections.discard(self)
        ex = self.exchange
        if ex is not None:
            self.ctx.request_finished(ex, dropped=True)  # nothing if it was complete
            ex.on_disconnect()
        self.outbox.wake_drain()

    def pause_writing(self) -> None:
        self.outbox.write_paused = True
        if self.exchange is not None:
            self.exchange.write_paused = True

    def resume_writing(self) -> None:
        self.outbox.write_paused = False
        ex = self.exchange
        if ex is not None:
            ex.write_paused = False
        self.outbox.wake_drain()
        if ex is not None and ex.writable_hook is not None:
            ex.writable_hook()

    # -- the request ----------------------------------------------------------------------------------
    def _start(self, req: CGIRequest, leftover: bytes) -> None:
        ctx = self.ctx
        length = req.content_length or 0  # an empty or absent CONTENT_LENGTH is no body
        limit = ctx.limit_request_body
        self.body = FixedLengthBody(length)
        if limit is not None and length > limit:
            reason = body_over_limit(limit, length)
            _log.info("rejected a request from %s: %s (413)", describe_peer(self.peer), reason)
            self.body.feed(leftover)  # counted, so the close after the answer waits for no more than is due
            self._answer_and_close(413, f"Payload Too Large: {reason}\n".encode())
            return
        ex = self.exchange = OneshotExchange(self, req.method, req.raw_path, req.query_string, req.headers,
                                             req.http_version, "http", self.peer, None)
        if ctx.trusted_proxies.trusts_peer(self.peer[0] if self.peer is not None else None):
            take_proxy_facts(ex, req)
        if ex.server is None and self.transport is not None:
            ex.server = self.server = peer_address(self.transport.get_extra_info("sockname"))
        ex.write_paused = self.outbox.write_paused
        ex.start_time = self._since = self.loop.time()
        if leftover:
            self._feed_body(leftover)
        elif not length:
            ex.end_body()
        ctx.serve(ex)

    def _feed_body(self, data: bytes) -> None:
        if self.lingering:  # answered already: the rest of the body is dropped, whatever its length
            self.body.remaining = max(0, self.body.remaining - len(data))
            if self.body.done:
                self.close()
            return
        body = self.body.feed(data)  # CGIError for bytes past the declared length
        ex = self.exchange
        if ex is not None:
            ex.received += len(body)
            ex.feed_body(body)
            if self.body.done:
                ex.end_body()

    def _reject(self, reason: str) -> None:
        """Bytes that are not a request we can serve: one log line, the connection closed, no app called
        (one already running sees a disconnect)."""
        _log.info("closed a %s connection from %s: %s", self.dialect.name, describe_peer(self.peer), reason)
        ex = self.exchange
        if ex is not None:
            ex.on_disconnect()
        self.force_close()

    def _answer_and_close(self, status: int, body: bytes) -> None:
        """A response of the server's own, no app involved (over a limit), then close as after any response."""
        self.outbox.write(self.dialect.simple(status, self.ctx.fixed_base, body))
        self._close_after()

    # -- completion -------------------------------------------------------------------------------------
    def response_done(self, ex: OneshotExchange, aborted: bool = False) -> None:
        """The exchange's response is complete (or given up, and ``abort`` closes): report it, then close."""
        self.ctx.request_finished(ex)
        if not aborted:
            self._close_after()

    def _close_after(self) -> None:
        """Close once the response has left. A body not read to its end is read and dropped first (for at
        most LINGER_SECONDS, after a FIN that ends the response), lest the kernel answer the bytes still
        coming with a reset that destroys the response before the proxy has read it."""
        transport = self.transport
        if transport is None or self.closed or self.lingering:
            return
        if self.body.done or transport.is_closing() or not transport.can_write_eof():
            self.close()
            return
        self.lingering = True
        self.outbox.flush()
        transport.write_eof()
        self.outbox.resume_reading(PAUSE_BODY)
        self.loop.call_later(LINGER_SECONDS, self.close)

    def close(self) -> None:
        self.outbox.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def force_close(self) -> None:
        self.outbox.discard()
        if self.transport is not None:
            self.transport.abort()

    def socket_fd(self) -> int | None:
        """The socket's descriptor, for sendfile (None where the transport exposes no socket)."""
        if self.sock_fd is None:
            self.sock_fd = transport_fd(self.transport)
        return self.sock_fd

    # -- server-driven ----------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        """Twice a second: the variable block's deadline, body idle, the app's deadline, a graceful stop."""
        if self.closed or self.lingering:
            return
        ctx = self.ctx
        ex = self.exchange
        if ex is None:
            if now - self._since > ctx.timeout_request_head:
                self._reject(f"{self.dialect.name} variable block not complete within timeout_request_head")
            elif ctx.shutting_down and now - self._since > ctx.keep_alive_timeout:
                self.close()  # nothing received yet: not a request to finish
            return
        remaining = self.body.remaining
        if remaining:
            if remaining != self._mark or self.outbox.paused_by:
                self._mark, self._since = remaining, now  # progress, or not the peer's turn
            elif now - self._since > ctx.timeout_body_idle:
                self._reject("no request body bytes within timeout_body_idle")
                return
        timeout = ctx.timeout_request
        if timeout is not None and not ex.finished and now - ex.start_time > timeout:
            answer_timeout(ex, timeout, "connection closed")
            ex.on_disconnect()  # the app's later sends are dropped
            if ex.cancel_app is not None:
                ex.cancel_app()
            if not self.lingering:  # the 504's close reads the rest of the body first (_close_after)
                self.close()
