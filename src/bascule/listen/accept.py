"""The front door: what happens to a connection between accept and its protocol, per listener.

    accept -> [PROXY header, only where the listener asks for it] -> TLS -> ALPN / preface -> protocol

:class:`FrontDoor` gives the server, for one :class:`~bascule.listen.listeners.Listener`, the protocol factory
and the ``ssl=`` to pass to ``loop.create_server``. It picks the cheapest way through for the listener:

- a uwsgi or SCGI listener (``--bind uwsgi://``, ``scgi://``):
  :class:`~bascule.protocols.oneshot.connection.OneshotConnection` with that wire's dialect; a FastCGI one
  (``fastcgi://``): :class:`~bascule.protocols.fastcgi.connection.FcgiConnection`. Never TLS nor HTTP/2
  (nginx's uwsgi_pass, scgi_pass and fastcgi_pass speak neither);
- cleartext: :class:`~bascule.protocols.h1.connection.H1Connection` itself, nothing in between, HTTP/2 on or
  off. With HTTP/2 on, a connection opening with the HTTP/2 preface (prior knowledge) is still HTTP/2's:
  llhttp stops at its ``PRI * HTTP/2.0`` line, whole or in pieces, and HTTP/1.1 hands the connection over
  through the upgrade registry (:func:`h2_from_preface`). No sniffing object sits in front of HTTP/1.1: it
  cost every cleartext connection an object, a ``set_protocol`` and a call layer on its first read, ~2,000
  instructions (callgrind h1close), to spare the rare prior-knowledge connection one parser error;
- TLS, no pre-TLS step: the loop's own ``ssl=`` handshake, then :class:`ChooseByALPN` picks HTTP/2 or
  HTTP/1.1 once, in ``connection_made`` (with HTTP/2 off, ALPN offers only http/1.1: H1Connection itself);
- a listener with a pre-TLS step (``proxy_protocol``): :class:`Preamble` accepts in clear, reads what must come
  first (the PROXY header, only from a sender in --forwarded-allow-ips, within 3 s), then runs TLS with
  ``loop.start_tls`` and chooses as above; the header's addresses become the connection's.

``start_tls`` is only used where a pre-TLS step needs it: on uvloop it made 10-25% fewer sequential
handshakes per second than ``ssl=`` (a task and two loop passes more per connection; server CPU per
handshake equal to 16% more), full or resumed (benchmarks/tls_accept.py, docs/performance.md).
Either way the TLS handshake must finish within --timeout-request-head, and SIGHUP's certificate reload
applies, since both use the server's one SSLContext.

Nothing here runs per request. :func:`install_upgrades` fills the upgrade registry
(:class:`~bascule.protocols.upgrades.Upgrades`) through which HTTP/1.1 reaches HTTP/2 and WebSocket, and
HTTP/2 reaches WebSocket, without the protocol packages importing each other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from bascule.context import ServerContext
from bascule.listen.listeners import Listener
from bascule.listen.proxy_protocol import ProxyHeader, ProxyHeaderReader, ProxyProtocolError, SSLInfo
from bascule.protocols.exchange import Exchange, describe_peer, peer_address
from bascule.protocols.fastcgi.connection import FcgiConnection
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h2.connection import H2Connection
from bascule.protocols.h2.frames import PREFACE
from bascule.protocols.h2.headers import upgrade_request
from bascule.protocols.oneshot.connection import SCGI, UWSGI, OneshotConnection
from bascule.protocols.pipe import BytePipe, PipeSession
from bascule.protocols.upgrades import H2cStart, HandOver, WebSocketHandler
from bascule.protocols.websocket.connection import WSConnection
from bascule.protocols.websocket.extended_connect import StreamWebSocket
from bascule.tls import VERSION_NUMBERS, cipher_suite_number, tls_extension

_log = logging.getLogger("bascule.error")

PREFACE_LINE = PREFACE[:18]
"""``PRI * HTTP/2.0\\r\\n\\r\\n``: the part of the HTTP/2 preface an HTTP/1.1 parser reads as a request head, where
llhttp stops; :func:`h2_from_preface` puts back what of it HTTP/1.1 did not keep."""


class FrontDoor:
    """One listener's way from accept to protocol: the factory and ``ssl=`` for ``loop.create_server``."""

    def __init__(self, ctx: ServerContext, listener: Listener, local: tuple[str, int] | None = None) -> None:
        """``local``: the local address of every connection accepted here, if they share one
        (:func:`fixed_local_address`); HTTP/1.1 connections then skip reading it from each transport."""
        self.ctx = ctx
        self.listener = listener
        self.local = local
        tls = ctx.ssl_context if listener.tls else None
        self.pre_tls = listener.proxy_protocol  # a step before TLS: TLS after accept (start_tls)
        self.tls_context = tls
        self.ssl_context = tls if not self.pre_tls else None
        """What create_server's ``ssl=`` gets: the loop's own handshake, where nothing comes before TLS."""
        # a handshake is the first part of a request head: the same deadline (slowloris before the head)
        self.handshake_timeout = ctx.timeout_request_head if tls is not None else None

    @property
    def ssl_handshake_timeout(self) -> float | None:
        """create_server's ``ssl_handshake_timeout`` (it takes one only with ``ssl=``)."""
        return self.handshake_timeout if self.ssl_context is not None else None

    def protocol_factory(self) -> Callable[[], asyncio.BaseProtocol]:
        ctx = self.ctx
        wire = self.listener.protocol
        if wire == "uwsgi":
            return lambda: OneshotConnection(ctx, UWSGI)
        if wire == "scgi":
            return lambda: OneshotConnection(ctx, SCGI)
        if wire == "fastcgi":
            return lambda: FcgiConnection(ctx)
        if self.pre_tls:
            return lambda: Preamble(ctx, self.tls_context, self.handshake_timeout)
        if self.ssl_context is not None and ctx.http2:
            return lambda: ChooseByALPN(ctx)
        local = self.local
        return lambda: H1Connection(ctx, local=local)


def fixed_local_address(sock: socket.socket) -> tuple[str, int] | None:
    """The (host, port) every connection accepted on ``sock`` has as its local address, where that is one
    address: a TCP listener bound to one IP. None for a wildcard (0.0.0.0, ::, ::ffff:0.0.0.0: each connection's
    own address, which interface it came in on) and for Unix sockets; those read it from each transport.

    Why: uvloop answers get_extra_info("sockname") by formatting the address anew (inet_ntop, a str, a
    tuple): ~2,500 instructions per connection (callgrind h1close), for the same answer every time.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        name = sock.getsockname()
        ip = ipaddress.ip_address(name[0])
        # a dual-stack socket bound to ::ffff:0.0.0.0 is IPv4's wildcard: each connection has its own address
        if ip.is_unspecified or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
                                 and ip.ipv4_mapped.is_unspecified):
            return None
    except (OSError, ValueError):
        return None
    return str(name[0]), int(name[1])


def at_connection_limit(ctx: ServerContext) -> bool:
    """--limit-connections reached: the new connection goes to HTTP/1.1, which answers it 503 and closes."""
    limit = ctx.limit_connections
    return limit is not None and len(ctx.connections) >= limit


def choose_by_alpn(ctx: ServerContext, transport: asyncio.BaseTransport) -> asyncio.Protocol:
    """HTTP/2 if ALPN chose h2 (and the server has room), else HTTP/1.1; not yet connected."""
    ssl_object: Any = transport.get_extra_info("ssl_object")
    if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2" and not at_connection_limit(ctx):
        return H2Connection(ctx, "https", tls_extension(ssl_object, ctx.server_cert_pem))
    return H1Connection(ctx)


class ChooseByALPN(asyncio.Protocol):
    """TLS done by the loop (``ssl=``): picks the protocol from ALPN once, then steps out of the way."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        protocol = choose_by_alpn(self.ctx, transport)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class Preamble(asyncio.Protocol):
    """A listener with a step before TLS: accepted in clear, the step, then TLS with ``loop.start_tls``.

    The step is the PROXY protocol header (:meth:`_read_preamble`, with listen/proxy_protocol.py's reader).
    Bytes that arrive before TLS takes the transport are kept (reading paused) and handed to the TLS protocol
    once ``start_tls`` has set it: the header's leftover, and on uvloop the start of the ClientHello too (uvloop
    starts reading after ``connection_made`` returns, so a pause there is lost). While the handshake completes
    this object is also the TLS transport's protocol: what arrives then is kept for the protocol chosen.
    """

    __slots__ = ("_deadline", "_early", "_handshake", "_lost", "_reader", "_tls_started", "ctx", "handshake_timeout",
                 "header", "peer", "tls_context", "transport")

    def __init__(self, ctx: ServerContext, tls_context: ssl.SSLContext | None, handshake_timeout: float | None,
                 proxy_protocol: bool = True) -> None:
        self.ctx = ctx
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.header: ProxyHeader | None = None  # the PROXY header, once read
        self._reader: ProxyHeaderReader | None = ProxyHeaderReader() if proxy_protocol else None
        self._deadline: asyncio.TimerHandle | None = None
        self._early = b""
        self._tls_started = False
        self._lost = False
        self._handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:
            return  # (not called by start_tls; guard all the same)
        self.transport = cast(asyncio.Transport, transport)
        self.peer = peer_address(transport.get_extra_info("peername"))
        if self._reader is not None:
            if not self.ctx.trusted_proxies.trusts_peer(None if self.peer is None else self.peer[0]):
                # it could claim any address: refused before a byte is read
                _log.warning("refused a connection from %s: a PROXY protocol header is required on this listener and "
                             "this peer is not in --forwarded-allow-ips", describe_peer(self.peer))
                self._reader = None
                self._lost = True
                self.transport.abort()
                return
            self._deadline = self.ctx.loop.call_later(self.ctx.proxy_header_timeout, self._too_slow)
        if self._read_preamble():
            self._preamble_done()

    def data_received(self, data: bytes) -> None:
        if self._lost:
            return
        self._early += data
        if not self._tls_started:
            transport = self.transport
            if transport is not None:
                transport.pause_reading()  # nothing more until the step before TLS is done with these
            if self._read_preamble():
                self._preamble_done()
            elif transport is not None and not self._lost:
                transport.resume_reading()  # the header is not complete yet

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stop_deadline()

    # -- the PROXY protocol header (listen/proxy_protocol.py) ------------------------------------------------
    def _read_preamble(self) -> bool:
        """Read the PROXY v1/v2 header from ``self._early``, keep only the bytes after it (the next protocol's:
        TLS or HTTP), and note the header; True once done. Required: anything else closes the connection
        (the spec: never guess whether a header is there)."""
        reader = self._reader
        if reader is None:
            return not self._lost  # no header on this listener (or refused)
        data, self._early = self._early, b""
        if not data:
            return False
        try:
            header = reader.feed(data)
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return False
        if header is None:
            return False
        self._stop_deadline()
        self._reader = None
        self.header = header
        self._early = reader.leftover
        return True

    def _refuse(self, reason: str) -> None:
        _log.warning("closed a connection from %s: %s", describe_peer(self.peer), reason)
        self._reader = None
        self._lost = True
        self._stop_deadline()
        if self.transport is not None:
            self.transport.abort()  # the spec asks for an abort, so the sender notices

    def _too_slow(self) -> None:
        self._deadline = None
        if self._reader is not None and not self._lost:
            self._refuse(f"no complete PROXY protocol header within {self.ctx.proxy_header_timeout:g} s")

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _adopt(self, protocol: asyncio.Protocol) -> None:
        """The connection's endpoints and TLS facts as the PROXY header gives them, for every request on it."""
        header = self.header
        if header is not None:
            adopt_proxy_header(protocol, header)

    def _preamble_done(self) -> None:
        transport = self.transport
        if transport is None or self._tls_started:
            return
        self._tls_started = True
        if self.tls_context is None:
            self._hand_over_cleartext(transport)
            return
        self._handshake = self.ctx.loop.create_task(self._start_tls(transport, self.tls_context))

    def _hand_over_cleartext(self, transport: asyncio.Transport) -> None:
        ctx = self.ctx
        early, self._early = self._early, b""
        protocol = H1Connection(ctx)  # which hands an HTTP/2 preface over, with HTTP/2 on
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self._adopt(protocol)
        transport.resume_reading()  # first: a pause the protocol makes for these bytes must stay
        if early:
            protocol.data_received(early)

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = self.ctx.loop
        handshake = loop.create_task(loop.start_tls(transport, self, context, server_side=True,
                                                    ssl_handshake_timeout=self.handshake_timeout))
        loop.call_soon(self._feed_tls)  # runs after start_tls's first step has made its TLS protocol the reader
        try:
            tls = await handshake
        except OSError as exc:  # a failed or timed-out handshake (ssl.SSLError and TimeoutError are OSErrors)
            _log.debug("TLS handshake with %s failed: %r", transport.get_extra_info("peername"), exc)
            transport.abort()
            return
        if tls is None or self._lost or tls.is_closing():
            return
        early, self._early = self._early, b""
        protocol = choose_by_alpn(self.ctx, tls)
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        self._adopt(protocol)
        if early:
            protocol.data_received(early)

    def _feed_tls(self) -> None:
        """Hand the bytes read before TLS to the TLS protocol start_tls made (a BufferedProtocol)."""
        data, self._early = self._early, b""
        transport = self.transport
        if not data or transport is None or self._lost:
            return
        reader: Any = transport.get_protocol()
        if hasattr(reader, "buffer_updated"):  # a BufferedProtocol (uvloop's is one without the base class)
            view = memoryview(reader.get_buffer(len(data)))
            n = min(len(view), len(data))
            view[:n] = data[:n]
            reader.buffer_updated(n)
            if n < len(data):
                self._early = data[n:]
                self.ctx.loop.call_soon(self._feed_tls)
        else:
            reader.data_received(data)


# -- a PROXY header's facts on the protocol that serves the connection ------------------------------------------
def adopt_proxy_header(protocol: asyncio.BaseProtocol, header: ProxyHeader) -> None:
    """Give ``protocol`` (just connected) the endpoints and TLS facts a PROXY header gives. LOCAL, UNKNOWN and
    the families without addresses keep the real endpoints (``header.source`` is None). SSL (the proxy
    terminated TLS): scheme https and the ASGI ``tls`` facts it names; AUTHORITY (the SNI the client sent): the
    server name. The header stays on the connection as ``proxy_header`` (UNIQUE_ID, ALPN, the other TLVs)."""
    target: Any = protocol
    if not isinstance(target, (H1Connection, H2Connection)):
        return
    target.proxy_header = header
    if header.source is not None and header.destination is not None:
        target.client = header.source
        target.server = header.destination
    if header.authority is not None:
        port = target.server[1] if target.server is not None else (443 if header.tls else 80)
        target.server = (header.authority, port)
    if header.tls and target.tls is None:
        assert header.ssl is not None
        target.scheme = "https"
        target.tls = proxied_tls_extension(header.ssl)


def h2_taking_over(ctx: ServerContext, given: HandOver) -> H2Connection:
    """HTTP/2 for a connection HTTP/1.1 hands over (preface, h2c), not yet connected: the same scheme and TLS
    facts, and the endpoints a PROXY header gave, from what HTTP/1.1 passed (its ``hand_over()``)."""
    return H2Connection(ctx, given.scheme, given.tls, client=given.client, server=given.server,
                        proxy_header=given.proxy_header)


def proxied_tls_extension(info: SSLInfo) -> dict[str, Any]:
    """The ASGI ``tls`` extension's dict for TLS a proxy terminated, from what its PROXY header says: the
    version, the cipher suite (HAProxy names it as OpenSSL does: its IANA number where this OpenSSL knows the
    name, as for TLS bascule terminates; else None) and, when the client's certificate verified at the proxy,
    its subject's CN (the header carries no chain unless HAProxy sends the certificate, then in DER)."""
    chain: list[str] = []
    if info.client_cert is not None:
        chain = [ssl.DER_cert_to_PEM_cert(info.client_cert)]
    name = f"CN={info.common_name}" if info.common_name is not None and info.cert_verified else None
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None if info.verify == 0 else f"verification failed at the proxy ({info.verify})",
        "tls_version": VERSION_NUMBERS.get(info.version) if info.version is not None else None,
        "cipher_suite": cipher_suite_number(info.cipher) if info.cipher is not None else None,
    }


# -- the upgrade registry's handlers ---------------------------------------------------------------------------
def install_upgrades(ctx: ServerContext) -> None:
    """Fill ``ctx.upgrades`` with what this server offers: HTTP/2 if it is on, WebSocket if an ASGI route exists."""
    upgrades = ctx.upgrades
    if ctx.http2:
        upgrades.h2_preface = h2_from_preface
        upgrades.h2c = h2c_upgrade
    if ctx.websocket_route is not None:
        upgrades.websocket = websocket_over_transport
        upgrades.websocket_over_stream = websocket_over_stream


def h2_from_preface(ctx: ServerContext, transport: asyncio.Transport, given: HandOver, earlier: bytes,
                    data: bytes) -> None:
    """HTTP/1.1 stopped at a preface that came in pieces (``earlier`` holds the reads before ``data``).

    HTTP/1.1 keeps reads only from the one where llhttp had the ``*``, so the first few bytes ("PRI", say, read
    alone) may be missing: ``received`` then begins inside the preface line, whose missing start is put back
    (the shortest that fits: bytes kept are never doubled)."""
    received = earlier + data
    cut = 0
    while not received.startswith(PREFACE_LINE[cut:]):
        cut += 1  # ends at len(PREFACE_LINE) at the latest, where the empty rest fits
    feed = PREFACE_LINE[:cut] + received
    h2 = h2_taking_over(ctx, given)
    transport.set_protocol(h2)
    h2.connection_made(transport)
    h2.data_received(feed)


def h2c_upgrade(ctx: ServerContext, ex: Exchange, settings: bytes) -> H2cStart | None:
    """``Upgrade: h2c`` (RFC 7540 3.2): the request becomes stream 1; None if HTTP2-Settings is unreadable."""
    try:
        head, client_settings = upgrade_request(ex, settings)
    except ValueError:
        return None

    def start(transport: asyncio.Transport, given: HandOver, leftover: bytes) -> None:
        h2 = h2_taking_over(ctx, given)  # cleartext: HTTP/1.1 takes no h2c over TLS, real or at a proxy
        transport.set_protocol(h2)
        h2.connection_made(transport)
        h2.upgraded(head, client_settings)
        if leftover:
            h2.data_received(leftover)

    return start


def websocket_over_transport(ctx: ServerContext, transport: asyncio.Transport, ex: Exchange,
                             handler: WebSocketHandler, leftover: bytes) -> None:
    """``Upgrade: websocket`` over HTTP/1.1: the transport becomes the session's pipe."""
    ws = WSConnection(ctx, transport, ex)
    transport.set_protocol(ws)
    ws.start(handler, leftover)


def websocket_over_stream(ctx: ServerContext, pipe: BytePipe, stream: Exchange) -> PipeSession:
    """An HTTP/2 extended CONNECT: the stream is the session's pipe and answers its handshake."""
    return StreamWebSocket(ctx, pipe, stream)
