"""The upgrade registry: the protocols a connection may switch to after it began as another one.

HTTP/1.1 can become HTTP/2 (``Upgrade: h2c``, or the HTTP/2 preface arriving where HTTP/1.1 expected its
first request) or a WebSocket (``Upgrade: websocket``); an HTTP/2 stream can carry a WebSocket (extended
CONNECT, RFC 8441). The protocol that sees the request asks this registry for the handler instead of importing
the other protocol's package, so each protocol package stands alone (tests/listen/test_import_rules.py) and a
server without HTTP/2 or WebSockets simply leaves a slot empty. The front door (listen/accept.py) fills the
slots, once per server, on :attr:`bascule.context.ServerContext.upgrades`.

Every slot is reached only on an upgrade path, so ordinary requests never look here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from bascule.context import ServerContext
    from bascule.protocols.exchange import Exchange, WebSocketSession
    from bascule.protocols.pipe import BytePipe, PipeSession

WebSocketHandler = Callable[["WebSocketSession"], None]
"""Runs the app for an accepted-or-denied WebSocket (what ``ServerContext.websocket_route`` returns)."""



class HandOver(NamedTuple):
    """What the protocol giving a connection up knows of it that the transport cannot tell the protocol taking
    it: the scheme and the ASGI ``tls`` facts gathered at connection_made, and, where a PROXY protocol header
    came first (listen/accept.py), that header and the endpoints it gave instead of the socket's. Passed
    explicitly, built only on an upgrade path."""

    scheme: str
    tls: dict[str, Any] | None
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    proxy_header: Any
    """The PROXY header (listen/proxy_protocol.py's ProxyHeader), or None: then client and server are the
    socket's, which the new protocol reads from the transport as usual."""


H2Preface = Callable[["ServerContext", asyncio.Transport, HandOver, bytes, bytes], None]
"""(ctx, transport, what HTTP/1.1 knew of the connection, earlier reads, this read): HTTP/2 takes the connection
from its preface on."""

H2cStart = Callable[[asyncio.Transport, HandOver, bytes], None]
"""(transport, what HTTP/1.1 knew of the connection, bytes after the upgrade request): HTTP/2 takes the
connection, the request as its stream 1."""

H2cCheck = Callable[["ServerContext", "Exchange", bytes], "H2cStart | None"]
"""(ctx, request, its HTTP2-Settings value): how to start HTTP/2 after the 101, or None (invalid settings:
the request is served as HTTP/1.1)."""

WebSocketOverTransport = Callable[["ServerContext", asyncio.Transport, "Exchange", WebSocketHandler, bytes], None]
"""(ctx, transport, upgrade request, handler, bytes after it): the WebSocket takes the connection."""

WebSocketOverStream = Callable[["ServerContext", "BytePipe", "Exchange"], "PipeSession"]
"""(ctx, stream as pipe, stream as exchange): the WebSocket session an extended CONNECT stream carries; the
stream starts it (``start(handler, b"")``) once it holds it."""


class Upgrades:
    """One slot per upgrade; None where the server does not offer it (HTTP/2 off, no WebSocket route)."""

    __slots__ = ("h2_preface", "h2c", "websocket", "websocket_over_stream")

    def __init__(self) -> None:
        self.h2_preface: H2Preface | None = None
        self.h2c: H2cCheck | None = None
        self.websocket: WebSocketOverTransport | None = None
        self.websocket_over_stream: WebSocketOverStream | None = None
