"""Per-server state shared by every connection: settings read on the hot path, counters, the clock.

Connections read plain attributes of one ServerContext, never the Config: this is the one way options reach
protocols (and the per-request path does no option look-ups). The ``date``/``server``/extra headers are
pre-joined into one bytes block and refreshed by a timer (twice a second), never formatted per request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Protocol

from bascule.accesslog import AccessLog
from bascule.config import Config
from bascule.listen.proxy_protocol import HEADER_TIMEOUT
from bascule.ops.request_id import RequestIds
from bascule.protocols.outbox import PassFlush
from bascule.protocols.upgrades import Upgrades
from bascule.specs import parse_header
from bascule.trust import ProxyHeaders, TrustedProxies

if TYPE_CHECKING:
    from bascule.protocols.exchange import BufferedExchange, Exchange, WebSocketSession

WebSocketRoute = Callable[[bytes], "Callable[[WebSocketSession], None] | None"]
"""Raw path -> the handler that runs the app for a WebSocket there, or None (not an ASGI route)."""

TICK_SECONDS = 0.5


class Connection(Protocol):
    """What the context needs of a connection: idle checks (which also drain it on a graceful stop)."""

    def on_tick(self, now: float) -> None: ...

    def force_close(self) -> None: ...


class RequestObserver(Protocol):
    """Told of every exchange's life, on the event-loop thread: the access log is one, metrics another.

    ``request_started`` comes once the server takes the request on (it is dispatched, or refused with a
    response of the server's own), with ``ex.start_time`` set; ``request_finished`` comes exactly once
    after it, when the response is complete or given up (``ex.status``, ``ex.sent``), or when the client
    went away first (``ex.dropped``; the app may still be running). A WebSocket's exchange is its
    handshake: it finishes when the app accepts or denies it. Observers must be quick and must not raise.
    """

    def request_started(self, ex: Exchange) -> None: ...

    def request_finished(self, ex: Exchange) -> None: ...


class ServerContext:
    """Everything a connection needs from its server, with hot values precomputed."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 dispatch: Callable[[Exchange], None], *, access_log: bool) -> None:
        self.config = config
        self.loop = loop
        self.dispatch = dispatch
        self.end_of_pass = PassFlush(loop)  # the connections' flushes due in this loop pass (protocols/outbox.py)
        self.error_log = logging.getLogger("bascule.error")
        self.observers: list[RequestObserver] = []  # see observe(); empty: the events cost one test each
        access_logger = logging.getLogger("bascule.access")
        self.access_log = access_log and access_logger.isEnabledFor(logging.INFO)
        if self.access_log:
            self.observe(AccessLog(config.access_log_format, loop, access_logger, self.error_log))
        self.keep_alive_timeout = config.timeout_keep_alive
        self.limit_concurrency = config.limit_concurrency
        self.limit_request_line = config.limit_request_line
        self.limit_request_headers = config.limit_request_headers
        self.limit_request_header_size = config.limit_request_header_size
        self.limit_request_field_size = config.limit_request_field_size
        self.limit_request_body = config.limit_request_body
        self.limit_requests_per_connection = config.limit_requests_per_connection
        self.limit_connections = config.limit_connections
        self.timeout_request_head = config.timeout_request_head
        self.timeout_body_idle = config.timeout_body_idle
        self.timeout_request = config.timeout_request
        self.http2 = config.http2
        self.h2_max_concurrent_streams = config.h2_max_concurrent_streams
        self.h2_initial_window_size = config.h2_initial_window_size
        self.ws_max_size = config.ws_max_size
        self.ws_max_queue = config.ws_max_queue
        self.ws_per_message_deflate = config.ws_per_message_deflate
        self.ws_ping_interval = config.ws_ping_interval
        self.ws_ping_timeout = config.ws_ping_timeout
        self.trusted_proxies = TrustedProxies(config.forwarded_allow_ips)  # proxy headers, PROXY protocol, uwsgi vars
        self.proxy_headers: ProxyHeaders | None = None  # None: --no-proxy-headers
        if config.proxy_headers:
            self.proxy_headers = ProxyHeaders(self.trusted_proxies, mode=config.proxy_headers_mode,
                                              host=config.forwarded_host, port=config.forwarded_port,
                                              prefix=config.forwarded_prefix)
        # --request-id: every request gets an id before observers and apps see it (None: off)
        self.request_ids = RequestIds(config.request_id_header, self.trusted_proxies) if config.request_ids else None
        self.proxy_header_timeout = HEADER_TIMEOUT  # a PROXY protocol header's deadline from accept (listen/)
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.shutting_down = False
        self.websocket_route: WebSocketRoute | None = None  # set by the server when --ws is on
        self.ssl_context: ssl.SSLContext | None = None  # set by the server with --ssl-certfile (bascule.tls)
        self.server_cert_pem: str | None = None  # the server's certificate, for the ASGI tls extension
        self.upgrades = Upgrades()  # what a connection may switch to mid-way: the front door fills it (listen/)
        extra = [parse_header(spec) for spec in config.header]
        self._static_headers = b"".join(
            name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n" for name, value in extra)
        if config.server_header and not any(name == "server" for name, _ in extra):
            self._static_headers = b"server: bascule\r\n" + self._static_headers
        self._alt_svc = b""  # "alt-svc: h3=...\r\n" once the server serves HTTP/3 (set_alt_svc)
        self.fixed_headers = b""  # the HTTP wires' (HTTP/1.1, HTTP/2, WebSocket handshakes): with Alt-Svc
        self.fixed_base = b""  # the same without Alt-Svc: uwsgi, SCGI, FastCGI (the proxy in front owns the ports)
        self._timer: asyncio.TimerHandle | None = None
        self._refresh_fixed_headers()

    def set_alt_svc(self, value: str | None) -> None:
        """Announce an alternative service (HTTP/3's ``h3=":443"; ma=86400``) on every HTTP response from now on;
        None stops it. Joined into the fixed headers, so it costs a response nothing."""
        self._alt_svc = b"" if value is None else b"alt-svc: " + value.encode("ascii") + b"\r\n"
        self._refresh_fixed_headers()

    def _refresh_fixed_headers(self) -> None:
        date = b""
        if self.config.date_header:
            date = b"date: " + formatdate(time.time(), usegmt=True).encode("ascii") + b"\r\n"
        self.fixed_base = date + self._static_headers
        self.fixed_headers = self.fixed_base + self._alt_svc

    def start(self) -> None:
        """Begin the periodic tick: refresh the date header, close idle connections."""
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._refresh_fixed_headers()
        now = self.loop.time()
        for conn in list(self.connections):
            conn.on_tick(now)
        self._timer = self.loop.call_later(TICK_SECONDS, self._tick)

    def observe(self, observer: RequestObserver) -> None:
        """Register ``observer`` for every request from now on (the access log; metrics)."""
        self.observers.append(observer)

    def serve(self, ex: BufferedExchange) -> None:
        """Hand a parsed request to its app, counted for --limit-concurrency: every protocol's requests
        come through here. Over the limit, a 503 (``ex.refuse``); a dispatch that fails, a 500."""
        self.in_flight += 1
        ex.counted = True
        self.request_started(ex)
        limit = self.limit_concurrency
        if limit is not None and self.in_flight > limit:
            ex.refuse(503, b"Service Unavailable: the server is at its concurrency limit\n")
            return
        try:
            self.dispatch(ex)
        except Exception:
            self.error_log.exception("could not dispatch %s %s", ex.method, ex.raw_path.decode("latin-1"))
            if not ex.response_started:
                ex.send_simple(500, b"Internal Server Error\n")
            else:
                ex.abort()

    def forwarded(self, ex: Exchange) -> None:
        """A request carries a proxy header (X-Forwarded-*, Forwarded): if its peer is a trusted proxy, make
        the request what the proxy says (trust.py), once, before anything reads it. Protocols call this only
        when their header scan saw such a field, so requests without one pay nothing here.

        The connection's own values stay on the exchange: ``ex.peer`` (the socket's peer) with
        ``ex.proxied`` set; the access log's ``{client}`` shows that peer.
        """
        resolver = self.proxy_headers
        if resolver is None:
            return
        effective = resolver.resolve(ex.client, ex.server, ex.scheme, ex.headers)
        if effective is None:
            return
        ex.proxied = True
        ex.peer = ex.client
        ex.client = effective.client
        ex.scheme = effective.scheme
        ex.server = effective.server
        if effective.root_path is not None:
            ex.root_path = effective.root_path
        host = effective.host
        if host is not None:
            headers = ex.headers
            for index, (name, _) in enumerate(headers):
                if name == b"host":
                    headers[index] = (b"host", host)
                    break
            else:
                headers.append((b"host", host))

    def request_started(self, ex: Exchange) -> None:
        """The server took ``ex`` on (``serve``, or a refusal answered before any app runs): the protocol
        has set ``ex.start_time``. Observers hear of it; request_finished must follow, exactly once."""
        ex.live = True
        if self.request_ids is not None:
            self.request_ids.assign(ex)
        observers = self.observers
        if observers:
            ex.perf_start = time.perf_counter()
            for observer in observers:
                observer.request_started(ex)

    def request_finished(self, ex: Exchange, dropped: bool = False) -> None:
        """``ex`` is over: its response is complete or given up, or (``dropped``) its client went away
        first. The one place a request stops counting against --limit-concurrency; only the first call
        for a started exchange counts, so every protocol may call it from each of its end paths."""
        if not ex.live:
            return
        ex.live = False
        if dropped:
            ex.dropped = True
        if ex.counted:
            ex.counted = False
            self.in_flight -= 1
        observers = self.observers
        if observers:
            for observer in observers:
                observer.request_finished(ex)
