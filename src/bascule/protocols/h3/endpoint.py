"""The HTTP/3 endpoint: one UDP socket's datagrams routed to QUIC connections (protocols/h3/connection.py).

:class:`QuicServer` is the contract with the front door (listen/quic.py builds the QuicConfiguration from the
options, binds the socket, calls :meth:`QuicServer.start`, :meth:`~QuicServer.close` on a graceful stop and
:meth:`~QuicServer.wait_closed` after the drain loop). It keeps the only table a peer could grow without a
handshake, so everything in it is bounded:

- datagrams go to the connection that owns their destination connection id (the map follows aioquic's
  ConnectionIdIssued/Retired events; at most :data:`MAX_CIDS` ids per connection);
- a datagram for no connection starts one only if it is a QUIC Initial of at least 1200 bytes (RFC 9000
  14.1: what makes the 3x anti-amplification limit meaningful, which aioquic enforces per connection), of a
  supported version (else one Version Negotiation packet, for such datagrams only), that decrypts (else
  the connection made for it is dropped at once), while the endpoint is open, and under
  --limit-connections (which counts these with the TCP ones in ``ctx.connections``) or, when that is
  unset, :data:`MAX_CONNECTIONS`;
- with ``retry``, a first Initial gets a Retry (RFC 9000 8.1.2) and no state at all: only an Initial that
  brings the token back, from the address it was issued to, starts a connection;
- a connection's handshake must finish within --timeout-request-head (on_tick), and aioquic's idle timeout
  ends the rest.

One addition to the contract of plan17.md, optional and off by default: ``session_tickets=True`` keeps the
session tickets this endpoint issues (at most :data:`MAX_TICKETS`, each usable once), so returning clients
resume, and with aioquic resuming means accepting 0-RTT data (its tickets always allow early data): this is
what --http3-0rtt turns on. Requests that arrive as early data are replayable by an attacker who recorded
them; each ticket being usable once only bounds that to other processes (each worker has its own store),
and such requests reach the app with ``early-data: 1`` (RFC 8470) so it can answer 425 Too Early.

What aioquic cannot do, for the front door to know: its server never asks for a client certificate (nor
would it check one against a CA), so --ssl-cert-reqs cannot be enforced over HTTP/3 and the tls extension's
``client_cert_chain`` is empty there. A socket bound to a wildcard address gives that address as every
request's ``server`` (the destination address of a datagram is not read).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, cast

from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import SessionTicket

from bascule.context import ServerContext
from bascule.protocols.exchange import peer_address
from bascule.protocols.h3.connection import H3Conn
from bascule.protocols.h3.quic import PacedQuic

_log = logging.getLogger("bascule.error")

MIN_INITIAL = 1200  # RFC 9000 14.1: a client's Initial datagram is at least this large
MAX_CIDS = 16  # our connection ids routed to one connection (aioquic issues a handful)
MAX_CONNECTIONS = 10_000  # QUIC connections per endpoint when --limit-connections is unset
MAX_TICKETS = 10_000  # session tickets kept for resumption (session_tickets=True)

TlsExtension = Callable[[list[bytes], "int | None"], dict[str, Any]]


class QuicServer(asyncio.DatagramProtocol):
    """HTTP/3 over QUIC on one UDP socket (see the module docstring for what it admits)."""

    def __init__(self, ctx: ServerContext, configuration: QuicConfiguration, *, tls_extension: TlsExtension,
                 retry: bool = False, session_tickets: bool = False) -> None:
        self.ctx = ctx
        self.tickets: dict[bytes, SessionTicket] | None = {} if session_tickets else None
        self.configuration = configuration
        self.tls_extension = tls_extension
        self.retry = QuicRetryTokenHandler() if retry else None
        self.transport: asyncio.DatagramTransport | None = None
        self.routes: dict[bytes, H3Conn] = {}  # destination connection id -> connection
        self.conns: set[H3Conn] = set()
        self.closing = False
        self._address: tuple[str, int] = ("", 0)
        self._closed: asyncio.Future[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (a bound UDP socket, non-blocking)."""
        await self.ctx.loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._address = peer_address(transport.get_extra_info("sockname")) or ("", 0)

    @property
    def address(self) -> tuple[str, int]:
        """The socket's (host, port): the startup log line's, and the ``server`` of every request."""
        return self._address

    def sendto(self, data: bytes, addr: Any) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)

    # -- routing ------------------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Any) -> None:
        configuration = self.configuration
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=configuration.connection_id_length)
        except ValueError:
            return
        conn = self.routes.get(header.destination_cid)
        if conn is not None:
            conn.datagram_received(data, addr)
            return
        if len(data) < MIN_INITIAL or header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return  # no answer to small datagrams: nothing here amplifies a spoofed source
        if header.version is not None and header.version not in configuration.supported_versions:
            self.sendto(encode_quic_version_negotiation(source_cid=header.destination_cid,
                                                        destination_cid=header.source_cid,
                                                        supported_versions=configuration.supported_versions), addr)
            return
        if header.packet_type != QuicPacketType.INITIAL or self.closing or not self._room():
            return
        original = header.destination_cid
        retry_source: bytes | None = None
        if self.retry is not None and header.version is not None:
            now = self.ctx.loop.time()
            if not header.token:
                source = os.urandom(8)
                token = self.retry.create_token(address=addr, original_destination_connection_id=header.destination_cid,
                                                retry_source_connection_id=source, now=now)
                self.sendto(encode_quic_retry(version=header.version, source_cid=source,
                                              destination_cid=header.source_cid,
                                              original_destination_cid=header.destination_cid,
                                              retry_token=token), addr)
                return
            try:
                original = self.retry.validate_token(address=addr, destination_cid=header.destination_cid,
                                                     token=header.token, now=now)
            except ValueError:
                return  # not ours, or from another address: dropped (the client times out)
            retry_source = header.destination_cid
        tickets = self.tickets is not None
        quic = PacedQuic(window=configuration.max_stream_data, configuration=configuration,
                         original_destination_connection_id=original, retry_source_connection_id=retry_source,
                         session_ticket_fetcher=self._take_ticket if tickets else None,
                         session_ticket_handler=self._keep_ticket if tickets else None)
        conn = H3Conn(self, quic, addr)
        self.conns.add(conn)
        self.add_cid(conn, header.destination_cid)
        self.add_cid(conn, quic.host_cid)
        conn.datagram_received(data, addr)
        if quic._state is QuicConnectionState.FIRSTFLIGHT:
            conn.discard()  # nothing in it decrypted: junk shaped like an Initial keeps no state

    def _keep_ticket(self, ticket: SessionTicket) -> None:
        tickets = self.tickets
        if tickets is not None:
            if len(tickets) >= MAX_TICKETS:
                del tickets[next(iter(tickets))]  # the oldest
            tickets[ticket.ticket] = ticket

    def _take_ticket(self, label: bytes) -> SessionTicket | None:
        return self.tickets.pop(label, None) if self.tickets is not None else None  # usable once

    def _room(self) -> bool:
        limit = self.ctx.limit_connections
        if limit is not None:
            return len(self.ctx.connections) < limit
        return len(self.conns) < MAX_CONNECTIONS

    def add_cid(self, conn: H3Conn, cid: bytes) -> None:
        if len(conn.cids) < MAX_CIDS and cid not in self.routes:
            conn.cids.add(cid)
            self.routes[cid] = conn

    def drop_cid(self, conn: H3Conn, cid: bytes) -> None:
        if self.routes.get(cid) is conn:
            del self.routes[cid]
        conn.cids.discard(cid)

    def forget(self, conn: H3Conn) -> None:
        """A connection is over (called once, by the connection): its ids stop routing."""
        for cid in conn.cids:
            if self.routes.get(cid) is conn:
                del self.routes[cid]
        conn.cids.clear()
        self.conns.discard(conn)
        if not self.conns and self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    # -- stopping -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Graceful: no new connections (new Initials are dropped); GOAWAY on every connection, which then
        closes itself once its streams are done (or on force_close)."""
        self.closing = True
        for conn in list(self.conns):
            conn.goaway()

    def abort(self) -> None:
        """CONNECTION_CLOSE on every connection now, then close the socket."""
        self.closing = True
        for conn in list(self.conns):
            conn.close_now()
            conn.discard()
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        """Until every connection is gone and its last packets are sent; then the socket is closed."""
        self.closing = True
        if self.conns:
            if self._closed is None or self._closed.done():
                self._closed = self.ctx.loop.create_future()
            await self._closed
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for conn in list(self.conns):
            conn.discard()
        self.transport = None
