"""Where an HTTP/1.1 connection stops being one: protocol switches, and the Upgrade requests not taken.

Kept out of connection.py because none of it is on the path of an ordinary request: llhttp reaches it only
by raising HttpParserUpgrade (an ``Upgrade`` field or CONNECT) or stopping at "PRI * HTTP/2.0" (the HTTP/2
preface), and the connection reaches :func:`feed_raw` only in Phase.UPGRADE_BODY. Module functions taking
the connection, not a mixin: H1Connection is a compiled (mypyc) native class, which takes traits only.

Another protocol takes the transport through ``ctx.upgrades`` (the registry the front door fills: WebSocket,
h2c, the preface), so no protocol package imports another. The connection first detaches itself
(:func:`detach`): what it queued goes out before the taker writes, and it reads nothing more. An upgrade
not taken is served as plain HTTP/1.1 and the connection closes after it, since llhttp parses nothing
past the upgrade; a Content-Length body it declared is read here, in Phase.UPGRADE_BODY.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from bascule.errors import ProtocolError
from bascule.protocols.exchange import describe_peer
from bascule.protocols.h1 import checks as h1_checks
from bascule.protocols.h1.exchange import PAUSE_UPGRADE, H1Exchange
from bascule.protocols.h1.phases import Phase
from bascule.protocols.http1x import SWITCH_TO_H2C

if TYPE_CHECKING:  # connection.py imports this module
    from bascule.protocols.h1.connection import H1Connection

_BODY_FIELDS: Final = frozenset((b"content-length", b"transfer-encoding"))  # a request with either has a body
_log = logging.getLogger("bascule.error")


def on_upgrade(conn: H1Connection, leftover: bytes) -> bool:
    """llhttp stopped at an upgrade (HttpParserUpgrade); ``leftover`` is what the read held after its head.

    WebSocket, then h2c, may take the transport. Other upgrades (h2c with a body or with HTTP/2 off,
    WebSocket to a WSGI app, unknown protocols) are not taken: the request is served as plain HTTP and the
    connection closes after it, since the parser stops at the upgrade. llhttp stops before the body, so a
    declared body is read here. False: nothing is left to dispatch (the transport was taken, or the request
    refused); True: the connection dispatches its request as usual.
    """
    ex = conn._to_dispatch  # each test below that leaves the transport with conn leaves this as it was
    if ex is not None and conn.ctx.websocket_route is not None and _websocket(conn, ex, leftover):
        return False  # the transport now belongs to the WebSocket protocol
    if ex is not None and _h2c_upgrade(conn, ex, leftover):
        return False  # the transport now belongs to HTTP/2
    latest = conn._latest
    if latest is not None:
        latest.keep_alive = False
        if not _upgrade_body(conn, latest, leftover):
            return False
        if latest.finished:
            conn.close()
    if conn.phase is not Phase.UPGRADE_BODY:
        if conn.phase is Phase.IDLE:
            conn.phase = Phase.STOPPED  # no body follows: nothing more is read
        conn.outbox.pause_reading(PAUSE_UPGRADE)
    return True


def detach(conn: H1Connection) -> None:
    """``conn`` is done with the transport, which another protocol takes: what it queued goes out first."""
    conn.outbox.flush()
    conn.phase = Phase.SWITCHED
    conn.closed = True
    conn.outbox.detach()
    if conn.writer is not None:
        conn.writer.close()
    conn.parser = h1_checks.SPENT_PARSER  # its bound callbacks point back to conn: see its connection_lost
    conn.ctx.connections.discard(conn)
    conn.outbox.wake_drain()  # a finished response's app waiting here: resume_writing goes elsewhere now


# -- WebSocket upgrade -------------------------------------------------------------------------------------
def _websocket(conn: H1Connection, ex: H1Exchange, leftover: bytes) -> bool:
    """Hand the transport to the WebSocket protocol if ``ex`` asks for it and its route is an ASGI app.

    False leaves the request to plain HTTP: another upgrade, a WSGI route (which gets it as a GET), a
    request behind others in the pipeline, or a connection paused for a reason of its own.
    """
    route = conn.ctx.websocket_route
    upgrade = conn.ctx.upgrades.websocket
    transport = conn.transport
    if (route is None or upgrade is None or transport is None or ex is not conn._latest or conn.outbox.paused_by
            or not any(name == b"upgrade" and value.lower() == b"websocket" for name, value in ex.headers)):
        return False
    handler = route(ex.raw_path)
    if handler is None:
        return False
    conn._to_dispatch = None
    conn.active = conn._latest = None
    detach(conn)  # earlier responses go out before the 101
    upgrade(conn.ctx, transport, ex, handler, leftover)
    return True


# -- the body of an upgrade request that was not taken (llhttp leaves it unparsed) -------------------------
def _upgrade_body(conn: H1Connection, ex: H1Exchange, leftover: bytes) -> bool:
    """Read a declared Content-Length body ourselves; False if the request was refused instead."""
    length: int | None = 0
    for name, value in ex.headers:
        if name == b"transfer-encoding":
            length = None
        elif name == b"content-length" and length is not None:
            length = int(value)  # validated with the head
    if length is None:  # an upgrade with a chunked body: not served (no parser past the upgrade)
        conn._to_dispatch = None
        conn.active = None
        conn.phase = Phase.STOPPED
        _log.info("rejected a request from %s: Upgrade with a chunked body (501)", describe_peer(conn.client))
        conn._send_error(501, b"Not Implemented: an Upgrade request with a chunked body\n")
        return False
    if length and not ex.finished:
        ex.body_follows()
        conn.phase = Phase.UPGRADE_BODY
        conn._raw_left = length  # for conn._latest, the request whose upgrade was not taken
        if leftover:
            feed_raw(conn, leftover)
    return True


def feed_raw(conn: H1Connection, data: bytes) -> None:
    """In Phase.UPGRADE_BODY: ``data`` goes to the body of the upgrade not taken, up to its declared
    length; once that is read, nothing more is (the connection closes after the answer)."""
    ex = conn._latest
    take = data[:conn._raw_left]
    conn._raw_left -= len(take)
    try:
        if take and ex is not None:
            ex.feed_body(take)
    except ProtocolError as exc:  # over --limit-request-body
        conn._raw_left = 0
        conn._bad_request(exc)
        return
    if not conn._raw_left:
        conn.phase = Phase.STOPPED
        if ex is not None:
            ex.end_body()
        conn.outbox.pause_reading(PAUSE_UPGRADE)  # nothing after the body is read: the connection closes


# -- HTTP/2 over a connection that began as HTTP/1.1 -------------------------------------------------------
def h2_preface(conn: H1Connection, data: bytes) -> bool:
    """The client opened with the HTTP/2 preface (prior knowledge, cleartext; or over TLS without ALPN):
    HTTP/2 takes the connection, if the server offers it and this connection was not refused at the
    connection limit nor is done with.

    The front door makes HTTP/1.1 for every cleartext connection (listen/accept.py): this is the way
    HTTP/2's prior knowledge comes in, whether the preface is whole in the first read or in pieces. llhttp
    stops somewhere in the preface; the reads before this one, if it came in several, were kept by
    data_received (the head was incomplete after them) in ``conn._early``.
    """
    take_over = conn.ctx.upgrades.h2_preface
    transport = conn.transport
    if take_over is None or transport is None or conn not in conn.ctx.connections:
        return False
    detach(conn)
    take_over(conn.ctx, transport, conn.hand_over(), conn._early, data)
    return True


def _h2c_upgrade(conn: H1Connection, ex: H1Exchange, leftover: bytes) -> bool:
    """``Upgrade: h2c`` (RFC 7540 3.2): 101, then this request is stream 1 of an HTTP/2 connection.

    Taken only for a request without a body and with none queued behind it (a body would have to be
    read as HTTP/1.1 first); otherwise the upgrade is ignored and the request served over HTTP/1.1,
    which the RFC allows.
    """
    if (not conn.ctx.http2 or conn.tls is not None or ex is not conn._latest or conn.outbox.paused_by
            or conn.transport is None or ex is not conn.active or conn.queue
            or any(name in _BODY_FIELDS for name, _ in ex.headers)):
        return False
    h2c = conn.ctx.upgrades.h2c
    if h2c is None:
        return False
    upgrade = settings = None
    for name, value in ex.headers:
        if name == b"upgrade":
            upgrade = value.lower()
        elif name == b"http2-settings":
            settings = value
    if upgrade != b"h2c" or settings is None:
        return False
    start = h2c(conn.ctx, ex, settings)
    if start is None:
        return False  # HTTP2-Settings could not be read: served as HTTP/1.1
    transport = conn.transport
    conn._to_dispatch = None
    conn.active = conn._latest = None
    conn.outbox.write(SWITCH_TO_H2C)
    detach(conn)
    start(transport, conn.hand_over(), leftover)
    return True
