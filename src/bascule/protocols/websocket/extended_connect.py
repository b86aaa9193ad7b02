"""WebSockets over HTTP/2 (RFC 8441), the session's side: the handshake and denials as responses on a stream.

The frame engine, flow control, keepalive and the app's session are :class:`WSConnection`'s; what differs
over an extended CONNECT stream is the handshake. It is a CONNECT request with ``:protocol websocket``
answered ``200`` (no Upgrade, no Sec-WebSocket-Key/Accept), and a denial is an ordinary response on the
stream. So :class:`StreamWebSocket` answers through the stream as an
:class:`~bascule.protocols.exchange.Exchange` (``send_head``/``send_body``) and runs its frames over the same
stream as a :class:`~bascule.protocols.pipe.BytePipe`; it never names HTTP/2's classes (the stream's side is
protocols/h2/websocket.py, and the front door introduces the two).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from websockets.extensions import Extension

from bascule.errors import AppProtocolError
from bascule.ops.request_id import sets_field
from bascule.protocols.exchange import ClientDisconnected, Exchange, Headers
from bascule.protocols.pipe import BytePipe
from bascule.protocols.websocket.connection import Phase, WSConnection
from bascule.protocols.websocket.engine import check_extended_connect

if TYPE_CHECKING:
    from bascule.context import ServerContext


class StreamWebSocket(WSConnection):
    """A WebSocket session over an extended CONNECT stream: ``pipe`` and ``stream`` are the same stream."""

    def __init__(self, ctx: ServerContext, pipe: BytePipe, stream: Exchange) -> None:
        super().__init__(ctx, pipe, stream)
        self.stream = stream

    def _check_handshake(self, ex: Any) -> tuple[int, str, Headers] | tuple[Headers, list[Extension]]:
        return check_extended_connect(ex, deflate=self.ctx.ws_per_message_deflate)

    def _write_accept(self, subprotocol: str | None, headers: Headers) -> None:
        out = list(self._accept_headers)
        if subprotocol is not None:
            out.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        self._app_echoes(headers)
        self.stream.send_head(200, out + headers)

    def _app_echoes(self, headers: Headers) -> None:
        """The app set --request-id's field itself: the stream's send_head leaves its own echo out, as the
        gateways arrange for an HTTP response (one field, the app's)."""
        name = self._rid_field
        if name is not None and headers and sets_field(headers, name):
            self.stream.rid_header = None

    def deny_start(self, status: int, headers: Headers) -> None:
        if self.phase is not Phase.HANDSHAKE:
            raise ClientDisconnected("the client has disconnected")
        if type(status) is not int or not 200 <= status <= 999:
            raise AppProtocolError(f"invalid status for websocket.http.response.start: {status!r}")
        self._app_echoes(headers)
        self.stream.send_head(status, list(headers))
        self.phase = Phase.RESPONSE
        self._log_handshake(status)

    def deny_body(self, body: bytes, more: bool) -> None:
        if self.phase is Phase.RESPONSE:
            self.stream.send_body(body, end=not more)
            if not more:
                self._done()

    def _http_response(self, status: int, body: bytes, extra: Headers) -> None:
        if self.phase is not Phase.HANDSHAKE:
            return
        self._done()
        self._log_handshake(status, len(body))
        self.stream.send_head(status, [*extra, (b"content-type", b"text/plain; charset=utf-8")], body, end=True)

    def abort(self) -> None:
        self._done()
        self.transport.abort()

    def _log_handshake(self, status: int, nbytes: int = 0) -> None:
        super()._log_handshake(200 if status == 101 else status, nbytes)  # HTTP/2 accepts with 200
