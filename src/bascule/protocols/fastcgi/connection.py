"""FastCGI over a socket (``--bind fastcgi://...``): the asyncio protocol of one connection.

The records are parsed by protocols/fastcgi_wire.py (sans I/O); this module gives them a life. A request
becomes an exchange (protocols/fastcgi/exchange.py) once its params are complete, and is handed to the app
after the records of that read are all parsed, so a body that came with its params (what nginx sends for a
small request: params, STDIN and its end in one write) is complete when the app starts and takes the
gateways' fast path. Several requests may be active at once on one connection (multiplexing, advertised to
FCGI_GET_VALUES; nginx never does it, other web servers do), each answered in its own STDOUT records.

The connection's life follows FCGI_KEEP_CONN, request by request: kept, it waits for the next request for
--timeout-keep-alive (let the web server's own idle timeout be shorter, as for HTTP keep-alive); not kept,
it closes once no request is left. ``ABORT_REQUEST`` (the web server's client went away) is the app's
``http.disconnect`` and ends the request at once with END_REQUEST, so the connection is free again; the
app's later sends are dropped; until the app returns, the request still counts against MAX_REQUESTS (an
abort frees the id, not the app: else abort after abort would start apps without end, HTTP/2's rapid
reset). At --limit-concurrency a request is refused with END_REQUEST and FCGI_OVERLOADED, the protocol's
own answer. The request options apply as over HTTP: --limit-request-body
(413, counted on STDIN when no ``CONTENT_LENGTH`` announced the body), --timeout-request-head (for the
params), --timeout-body-idle, --timeout-request, --limit-connections.

Trust is as for uwsgi and SCGI (protocols/cgi_exchange.take_proxy_facts): the web server's word on its
client, scheme, mount point and extra variables only from --forwarded-allow-ips peers. Broken records get
one log line and the connection closed (an app running for it sees a disconnect); variables that describe
no request get a 400 for that request alone, and the app is never called.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from bascule.cgi import CGIError, request_from_vars
from bascule.context import ServerContext
from bascule.protocols import fastcgi_wire
from bascule.protocols.cgi_exchange import cgi_simple_response, take_proxy_facts
from bascule.protocols.exchange import describe_peer, peer_address
from bascule.protocols.fastcgi.exchange import FcgiExchange
from bascule.protocols.fastcgi_wire import FastCGIError, RequestAborted, RequestReady, StdinData, StdinEnd
from bascule.protocols.outbox import Outbox
from bascule.protocols.semantics import answer_timeout, body_over_limit

LINGER_SECONDS = 2.0
JOIN_BELOW = 16 * 1024  # queued pieces smaller than this in all are joined before writing (outbox.py)
MAX_REQUESTS = 100
"""Requests active at once on one connection (FCGI_MAX_REQS; HTTP/2's usual stream limit)."""
PAUSE_BODY = 1  # Outbox.pause_reading reason: some request's body is not being read by its app
PAUSE_WRITE = 2  # and: our answers cannot be written (a peer that does not read is not read either)

_log = logging.getLogger("bascule.error")


class FcgiConnection(asyncio.Protocol):
    """One FastCGI connection: its parser, its active requests by id, and its keep-alive."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.outbox = Outbox(ctx.loop, join_below=JOIN_BELOW, end_of_pass=ctx.end_of_pass)
        limit = ctx.limit_concurrency
        self.wire = fastcgi_wire.FastCGIConnection(
            max_requests=MAX_REQUESTS, max_conns=ctx.limit_connections or 1024,
            max_reqs=min(limit, MAX_REQUESTS) if limit is not None else MAX_REQUESTS)
        self.exchanges: dict[int, FcgiExchange] = {}
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.trusted = False
        self.closed = False
        self.closing = False  # a request without FCGI_KEEP_CONN came: close once none is left
        self.lingering = False
        self._since = 0.0  # when the connection came, or its last request ended: the idle clock
        self._head_since = 0.0  # since when some request has begun without its params complete (0: none)
        self._eof = False  # the web server half-closed: no request will come after those under way
        self._received = 0  # STDIN bytes so far, all requests (the body-idle watch)
        self._mark = -1
        self._mark_time = 0.0
        self._pausing = 0  # requests whose unread body holds reading paused
        self._orphans: list[FcgiExchange] = []  # aborted by the web server, app still running (rapid reset)

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.outbox.transport = cast(asyncio.Transport, transport)
        self.peer = peer_address(transport.get_extra_info("peername"))
        self.server = peer_address(transport.get_extra_info("sockname"))
        self.trusted = self.ctx.trusted_proxies.trusts_peer(self.peer[0] if self.peer is not None else None)
        self._since = self.loop.time()
        ctx = self.ctx
        limit = ctx.limit_connections
        if limit is not None and len(ctx.connections) >= limit:
            # no request id to answer on yet: the web server sees the close and tries elsewhere or says 502
            _log.info("refused a connection from %s: --limit-connections %d reached", describe_peer(self.peer),
                      limit)
            self.force_close()
            return
        ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # closing after our FIN: read and dropped, nothing answered (a write after it would raise)
        wire = self.wire
        try:
            events = wire.receive_data(data)
        except FastCGIError as exc:
            self._reject(str(exc))
            return
        answers = wire.data_to_send()  # GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST for refused requests
        if answers:
            self.outbox.write(answers)
        ready: list[FcgiExchange] | None = None
        exchanges = self.exchanges
        for event in events:
            kind = type(event)
            if kind is StdinData:
                ex = exchanges.get(event.request_id)
                if ex is not None and not self._feed(ex, cast(StdinData, event).data):
                    return
            elif kind is StdinEnd:
                ex = exchanges.get(event.request_id)
                if ex is not None:
                    if ex.declared is not None and ex.received < ex.declared and not ex.finished:
                        self._reject(f"FastCGI request {ex.request_id}'s STDIN ended {ex.declared - ex.received} "
                                     f"bytes short of its CONTENT_LENGTH")
                        return
                    ex.end_body()
            elif kind is RequestReady:
                started = self._start(cast(RequestReady, event))
                if started is not None:
                    if ready is None:
                        ready = []
                    ready.append(started)
            elif kind is RequestAborted:
                self._aborted(event.request_id)
        if wire.active > len(exchanges):  # begun, params not complete: the params deadline runs
            if not self._head_since:
                self._head_since = self.loop.time()
        else:
            self._head_since = 0.0
        if ready is not None:
            ctx = self.ctx
            for ex in ready:
                if not ex.finished and exchanges.get(ex.request_id) is ex:
                    ex.served = True
                    ctx.serve(ex)

    def eof_received(self) -> bool | None:
        # A web server may half-close once its requests are sent: the responses can still go out, and the
        # connection closes after the last (_after_request).
        self._eof = True
        return True if self.exchanges else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.outbox.detach()
        self.ctx.connections.discard(self)
        exchanges = list(self.exchanges.values())
        self.exchanges.clear()
        for ex in exchanges:
            self.ctx.request_finished(ex, dropped=True)  # nothing if it was complete
            ex.on_disconnect()
        self.outbox.wake_drain()

    def pause_writing(self) -> None:
        self.outbox.write_paused = True
        self.outbox.pause_reading(PAUSE_WRITE)  # else records that answer themselves (GET_VALUES) pile up
        for ex in self.exchanges.values():
            ex.write_paused = True

    def resume_writing(self) -> None:
        self.outbox.write_paused = False
        self.outbox.resume_reading(PAUSE_WRITE)
        exchanges = list(self.exchanges.values())
        for ex in exchanges:
            ex.write_paused = False
        self.outbox.wake_drain()
        for ex in exchanges:
            if ex.writable_hook is not None:
                ex.writable_hook()

    # -- requests -------------------------------------------------------------------------------------
    def _start(self, event: RequestReady) -> FcgiExchange | None:
        """The exchange for a request whose params are complete, or None when it was answered here."""
        request_id = event.request_id
        ctx = self.ctx
        try:
            req = request_from_vars(event.params)
        except CGIError as exc:
            _log.info("refused FastCGI request %d from %s: %s (400)", request_id, describe_peer(self.peer), exc)
            self._answer(request_id, event.keep_conn, 400, f"Bad Request: {exc}\n".encode())
            return None
        length = req.content_length
        limit = ctx.limit_request_body
        if limit is not None and length is not None and length > limit:
            reason = body_over_limit(limit, length)
            _log.info("rejected FastCGI request %d from %s: %s (413)", request_id, describe_peer(self.peer), reason)
            self._answer(request_id, event.keep_conn, 413, f"Payload Too Large: {reason}\n".encode())
            return None
        if self._orphans and len(self.exchanges) + self._live_orphans() >= MAX_REQUESTS:
            _log.info("refused FastCGI request %d from %s: %d aborted requests' apps still run (FCGI_OVERLOADED)",
                      request_id, describe_peer(self.peer), len(self._orphans))
            self.outbox.write(self.wire.refuse(request_id, fastcgi_wire.OVERLOADED))
            if not event.keep_conn:
                self.closing = True
            self._after_request()
            return None
        ex = FcgiExchange(self, request_id, event.keep_conn, req.method, req.raw_path, req.query_string,
                          req.headers, req.http_version, "http", self.peer, self.server)
        if self.trusted:
            take_proxy_facts(ex, req)
        if length is not None:
            ex.declared = length
        if not event.keep_conn:
            self.closing = True
        ex.write_paused = self.outbox.write_paused
        ex.start_time = self.loop.time()
        self.exchanges[request_id] = ex
        return ex

    def _answer(self, request_id: int, keep_conn: bool, status: int, body: bytes) -> None:
        """A response of the server's own to one request (no app, nothing reported), then its end."""
        self.outbox.write(fastcgi_wire.stdout(request_id, cgi_simple_response(status, self.ctx.fixed_base, body))
                          + self.wire.finish(request_id))
        if not keep_conn:
            self.closing = True
        self._after_request()

    def _feed(self, ex: FcgiExchange, data: bytes) -> bool:
        """A piece of ``ex``'s body; False when it broke the protocol and the connection is closed."""
        size = len(data)
        self._received += size
        ex.received += size
        declared = ex.declared
        if declared is not None and ex.received > declared and not ex.finished:
            self._reject(f"FastCGI request {ex.request_id}'s STDIN is longer than its CONTENT_LENGTH {declared}")
            return False
        limit = self.ctx.limit_request_body
        if limit is not None and ex.received > limit and not ex.finished:
            # only a body without CONTENT_LENGTH gets here (a declared one was checked with the params)
            _log.info("FastCGI request %d from %s: %s", ex.request_id, describe_peer(self.peer),
                      body_over_limit(limit))
            if not ex.response_started:
                ex.send_simple(413, f"Payload Too Large: {body_over_limit(limit)}\n".encode())
            ex.on_disconnect()  # the app reads no more of it; its later sends are dropped
            if not ex.finished:
                ex.abort()
            return True
        ex.feed_body(data)
        return True

    def _aborted(self, request_id: int) -> None:
        """ABORT_REQUEST: the web server's client is gone. The app sees ``http.disconnect`` (one not started
        yet is skipped), and the request ends now with END_REQUEST, as the web server waits for."""
        ex = self.exchanges.pop(request_id, None)
        if ex is None:
            return
        ex.cancelled = True
        if ex.app_task is not None and not ex.app_task.done():
            self._orphans.append(ex)  # its id is free, its app is not: it still counts against MAX_REQUESTS
        if not ex.finished:
            ex.finished = True
            self.ctx.request_finished(ex, dropped=True)
        ex.on_disconnect()
        self._release_reading(ex)
        self.outbox.write(self.wire.finish(request_id))
        self._after_request()

    # -- completion -------------------------------------------------------------------------------------
    def response_done(self, ex: FcgiExchange, aborted: bool = False) -> None:
        """``ex``'s response is complete (or given up, when the exchange closes the connection itself)."""
        self.ctx.request_finished(ex)
        if self.exchanges.get(ex.request_id) is not ex:
            return  # aborted by the web server already
        del self.exchanges[ex.request_id]
        self._release_reading(ex)
        if aborted:
            return  # no END_REQUEST: the close that follows tells the web server the response is cut short
        self.outbox.write(self.wire.finish(ex.request_id))
        self._after_request()

    def overloaded(self, ex: FcgiExchange) -> None:
        """--limit-concurrency reached for ``ex`` (FcgiExchange.refuse): END_REQUEST with FCGI_OVERLOADED."""
        _log.info("refused FastCGI request %d from %s: --limit-concurrency %s reached (FCGI_OVERLOADED)",
                  ex.request_id, describe_peer(self.peer), self.ctx.limit_concurrency)
        self.ctx.request_finished(ex)
        if self.exchanges.pop(ex.request_id, None) is not None:
            self._release_reading(ex)
            self.outbox.write(self.wire.refuse(ex.request_id, fastcgi_wire.OVERLOADED))
            self._after_request()

    def _after_request(self) -> None:
        """A request ended: restart the idle clock, or close if the web server will not reuse the connection."""
        if self.exchanges:
            return
        self._since = self.loop.time()
        if self.closing or self.ctx.shutting_down or self._eof:
            self._close_after()

    def _close_after(self) -> None:
        """Close once the answers have left. A STDIN not read to its end is read and dropped first (for at
        most LINGER_SECONDS, after a FIN that ends the responses), lest the kernel answer the bytes still
        coming with a reset that destroys the responses before the web server has read them."""
        transport = self.transport
        if transport is None or self.closed or self.lingering:
            return
        if self.wire.active == 0 or transport.is_closing() or not transport.can_write_eof():
            self.close()
            return
        self.lingering = True
        self.outbox.flush()
        transport.write_eof()
        self.outbox.resume_reading(PAUSE_BODY | PAUSE_WRITE)
        self.loop.call_later(LINGER_SECONDS, self.close)

    def pause_for_body(self, paused: bool) -> None:
        """An exchange's unread body passed its high-water mark (True) or was read (False); reading stops
        while any request's body waits for its app (the others' records wait behind it in the socket)."""
        if paused:
            self._pausing += 1
            if self._pausing == 1:
                self.outbox.pause_reading(PAUSE_BODY)
        elif self._pausing > 0:
            self._pausing -= 1
            if self._pausing == 0:
                self.outbox.resume_reading(PAUSE_BODY)

    def _live_orphans(self) -> int:
        """Requests the web server aborted whose apps have not returned yet (the ones done are forgotten)."""
        self._orphans = [ex for ex in self._orphans if not ex.app_task.done()]
        return len(self._orphans)

    def _release_reading(self, ex: FcgiExchange) -> None:
        """A request leaves: the rest of its body is read and dropped, so it holds reading paused no more."""
        if ex.reading_paused:
            ex.reading_paused = False
            self.pause_for_body(False)

    def _reject(self, reason: str) -> None:
        """Records that break the protocol: one log line, the connection closed; running apps see a
        disconnect, unfinished requests never reach theirs."""
        _log.info("closed a FastCGI connection from %s: %s", describe_peer(self.peer), reason)
        self.force_close()

    def close(self) -> None:
        self.outbox.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def force_close(self) -> None:
        self.outbox.discard()
        if self.transport is not None:
            self.transport.abort()

    # -- server-driven ----------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        """Twice a second: idle keep-alive, the params deadline, body idle, the apps' deadline, a stop."""
        if self.closed or self.lingering:
            return
        ctx = self.ctx
        exchanges = self.exchanges
        if self._head_since and now - self._head_since > ctx.timeout_request_head:
            self._reject("FastCGI params not complete within timeout_request_head")
            return
        if not exchanges:
            if not self.wire.active and (ctx.shutting_down or now - self._since > ctx.keep_alive_timeout):
                self.close()
            return
        if any(not ex._body_done and not ex.finished for ex in exchanges.values()):  # STDIN still to come
            if self._received != self._mark or self.outbox.paused_by:
                self._mark, self._mark_time = self._received, now  # progress, or not the web server's turn
            elif now - self._mark_time > ctx.timeout_body_idle:
                self._reject("no request body bytes (STDIN) within timeout_body_idle")
                return
        timeout = ctx.timeout_request
        if timeout is None:
            return
        for ex in list(exchanges.values()):
            if not ex.finished and now - ex.start_time > timeout:
                answer_timeout(ex, timeout, "connection closed")
                ex.on_disconnect()  # the app's later sends are dropped
                if ex.cancel_app is not None:
                    ex.cancel_app()
                if not ex.finished:
                    ex.abort()
