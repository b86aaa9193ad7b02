"""ASGI 3 WebSocket messages (spec 2.4): the order rules of ``send`` and the app's receive/send cycle.

The scope is built by :class:`~bascule.gateways.asgi.ASGIGateway` (the fields it shares with ``http``
scopes come from one function); this module owns what happens after: ``websocket.connect``, then the
app accepts (subprotocol, headers), closes before accepting (HTTP 403), or denies with its own response
(the ``websocket.http.response`` extension); then text/bytes messages both ways, and
``websocket.disconnect`` with the close code and reason.

The app's ``send`` messages follow an explicit state machine (:data:`TRANSITIONS`); a message the state
does not allow raises :class:`AppProtocolError` inside the app. An app that raises before accepting gets
a 500 for its client, after accepting a close 1011.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, MutableMapping
from typing import Any

from bascule.errors import AppProtocolError
from bascule.gateways.eager import start_task
from bascule.protocols.exchange import (
    ClientDisconnected,
    WebSocketClosed,
    WebSocketSession,
    app_bytes,
    app_headers,
    app_int,
)

Message = MutableMapping[str, Any]

_log = logging.getLogger("bascule.error")


class WSState(enum.Enum):
    """Where an ASGI WebSocket is, from the server's side of the app's ``send``."""

    CONNECTING = "connecting"  # handshake pending: accept, close (403) or an HTTP response may come
    OPEN = "open"  # accepted: messages until one side closes
    RESPONSE = "response"  # denied with websocket.http.response.start: body messages until the last
    CLOSED = "closed"  # nothing more may be sent


TRANSITIONS: dict[tuple[WSState, str], frozenset[WSState]] = {
    (WSState.CONNECTING, "websocket.accept"): frozenset({WSState.OPEN}),
    (WSState.CONNECTING, "websocket.close"): frozenset({WSState.CLOSED}),
    (WSState.CONNECTING, "websocket.http.response.start"): frozenset({WSState.RESPONSE}),
    (WSState.OPEN, "websocket.send"): frozenset({WSState.OPEN}),
    (WSState.OPEN, "websocket.close"): frozenset({WSState.CLOSED}),
    (WSState.RESPONSE, "websocket.http.response.body"): frozenset({WSState.RESPONSE, WSState.CLOSED}),
}
"""Allowed (state, message type) pairs and the states each may lead to; every other pair is an error."""

_CONNECT: Message = {"type": "websocket.connect"}


class WebSocketCycle:
    """The receive/send pair of one WebSocket, enforcing the spec's message order."""

    def __init__(self, session: WebSocketSession) -> None:
        self.session = session
        self.state = WSState.CONNECTING
        self.connect_sent = False

    # -- running the app --------------------------------------------------------------------------------
    def start(self, awaitable: Awaitable[None]) -> asyncio.Task[None]:
        """Run the app in a Task of its own, its first step (accepting, usually) at once."""
        return start_task(self.session.loop, self._run(awaitable))

    async def _run(self, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            self.ended(cancelled=True)
            raise
        except ClientDisconnected:
            _log.debug("WebSocket client went away (%s)", self._target())
            self.ended()
        except Exception as exc:
            self.failed(exc)
        else:
            self.ended()

    def _target(self) -> str:
        return self.session.raw_path.decode("latin-1")

    def failed(self, exc: BaseException) -> None:
        """The app raised: before accepting, 500; after, close 1011; during a denial, drop the connection."""
        _log.error("Exception in ASGI application (WebSocket %s)", self._target(), exc_info=exc)
        state, self.state = self.state, WSState.CLOSED
        session = self.session
        if state is WSState.CONNECTING:
            session.deny_simple(500, b"Internal Server Error\n")
        elif state is WSState.OPEN:
            session.close(1011, "internal error")
        elif state is WSState.RESPONSE:
            session.abort()

    def ended(self, cancelled: bool = False) -> None:
        """The app returned (or was cancelled at shutdown): finish what it left open."""
        state, self.state = self.state, WSState.CLOSED
        session = self.session
        if state is WSState.CONNECTING:
            if cancelled:
                session.deny_simple(503, b"Service Unavailable: the server is shutting down\n")
            else:
                _log.error("ASGI app returned without accepting or closing the WebSocket (%s)", self._target())
                session.deny_simple(500, b"Internal Server Error\n")
        elif state is WSState.OPEN:
            session.close(1001 if cancelled else 1000, "server shutting down" if cancelled else "")
        elif state is WSState.RESPONSE:
            _log.error("ASGI app returned without completing its websocket.http.response (%s)", self._target())
            session.abort()

    # -- the app's channels -----------------------------------------------------------------------------
    async def receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return dict(_CONNECT)
        event = await self.session.receive()
        kind = type(event)
        if kind is str:
            return {"type": "websocket.receive", "text": event}
        if kind is bytes:
            return {"type": "websocket.receive", "bytes": event}
        assert isinstance(event, WebSocketClosed)
        return {"type": "websocket.disconnect", "code": event.code, "reason": event.reason}

    async def send(self, message: Message) -> None:
        try:
            mtype = message["type"]
        except (KeyError, TypeError):
            raise AppProtocolError(f"ASGI message without a 'type': {message!r}") from None
        state = self.state
        # the hot pair first, by identity; the rest through the table
        if not (state is WSState.OPEN and mtype == "websocket.send") and (state, mtype) not in TRANSITIONS:
            raise AppProtocolError(f"ASGI message {mtype!r} is not allowed in state {state.value!r} of a "
                                   f"WebSocket")
        session = self.session
        try:
            if mtype == "websocket.send":
                text = message.get("text")
                data = message.get("bytes")
                if (text is None) == (data is None):
                    raise AppProtocolError("websocket.send needs exactly one of 'text' and 'bytes'")
                if text is not None:
                    if type(text) is not str:
                        raise AppProtocolError(f"websocket.send 'text' must be str, got {type(text).__name__}")
                    await session.send(text)
                else:
                    if type(data) is not bytes:
                        data = app_bytes(data, "websocket.send 'bytes'")
                    await session.send(data)
            elif mtype == "websocket.accept":
                subprotocol = message.get("subprotocol")
                session.accept(subprotocol, app_headers(message.get("headers", ())))
                self.state = WSState.OPEN
            elif mtype == "websocket.close":
                self.state = WSState.CLOSED
                if state is WSState.CONNECTING:
                    session.deny_simple(403, b"Forbidden\n")  # ASGI: a close before accept is an HTTP 403
                else:
                    code = app_int(message.get("code", 1000), "websocket.close 'code'")
                    reason = message.get("reason") or ""
                    if not isinstance(reason, str):
                        raise AppProtocolError(f"websocket.close needs a str reason, got {reason!r}")
                    session.close(code, reason)
            elif mtype == "websocket.http.response.start":
                session.deny_start(app_int(message["status"], "websocket.http.response.start 'status'"),
                                   app_headers(message.get("headers", ())))
                self.state = WSState.RESPONSE
            else:  # websocket.http.response.body
                body = app_bytes(message.get("body", b""), "websocket.http.response.body 'body'")
                more = bool(message.get("more_body", False))
                if not more:
                    self.state = WSState.CLOSED
                session.deny_body(body, more)
        except KeyError as missing:  # one name per handler: compiled code gives a name one type
            raise AppProtocolError(f"ASGI message {mtype!r} lacks the required key {missing}") from None
        except (TypeError, ValueError) as exc:
            raise AppProtocolError(f"invalid ASGI message {mtype!r}: {exc}") from exc
