"""WebSockets over HTTP/2 (RFC 8441): an extended CONNECT stream carries the WebSocket's frames.

The frame engine, flow control, keepalive and the app's session are those of protocols/websocket.py;
what differs is the handshake and the pipe. The handshake is a CONNECT request with ``:protocol
websocket`` answered ``200`` (no Upgrade, no Sec-WebSocket-Key/Accept), and a denial is an ordinary
response on the stream. The pipe is the stream's DATA frames: :class:`StreamTransport` gives
:class:`~bascule.protocols.websocket.connection.WSConnection` the part of a transport it uses, over one stream, so
one connection can carry WebSockets and requests side by side and a reset ends only its own stream.
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.datastructures import Headers as WSHeaders
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.http11 import Request
from websockets.server import ServerProtocol

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import ClientDisconnected, Exchange, Headers
from bascule.protocols.h2.stream import H2Stream
from bascule.protocols.websocket.connection import Phase, WSConnection

_log = logging.getLogger("bascule.websocket")
_NONCE = "AAAAAAAAAAAAAAAAAAAAAA=="  # RFC 8441 has no key; websockets' negotiator wants one, unused here


def check_h2_handshake(ex: Exchange, *, deflate: bool) -> tuple[int, str, Headers] | tuple[Headers, list[Extension]]:
    """Validate an extended CONNECT: (status, reason, extra headers) to refuse it, else (200 headers, extensions).

    The extension negotiation (permessage-deflate) is websockets' own, run on the request as if it were the
    HTTP/1.1 upgrade RFC 8441 stands for.
    """
    headers = WSHeaders()
    for name, value in ex.headers:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    versions = headers.get_all("Sec-WebSocket-Version")
    if versions != ["13"]:
        return 426, f"unsupported WebSocket version {', '.join(versions)!r}", [(b"sec-websocket-version", b"13")]
    headers["Upgrade"] = "websocket"
    headers["Connection"] = "Upgrade"
    headers["Sec-WebSocket-Key"] = _NONCE
    negotiator = ServerProtocol(extensions=enable_server_permessage_deflate(None) if deflate else None,
                                logger=_log)
    path = (ex.raw_path + (b"?" + ex.query_string if ex.query_string else b"")).decode("latin-1")
    try:
        response = negotiator.accept(Request(path, headers))
    except Exception as exc:
        return 400, f"invalid WebSocket handshake ({exc})", []
    if response.status_code != 101:
        return response.status_code, str(negotiator.handshake_exc or "invalid WebSocket handshake"), []
    out: Headers = []
    if "Sec-WebSocket-Extensions" in response.headers:
        out.append((b"sec-websocket-extensions", response.headers["Sec-WebSocket-Extensions"].encode("latin-1")))
    return out, negotiator.extensions


class StreamTransport:
    """The slice of asyncio.Transport a WSConnection uses, over one HTTP/2 stream."""

    def __init__(self, stream: H2WSStream) -> None:
        self.stream = stream
        self.closing = False

    def write(self, data: bytes) -> None:
        stream = self.stream
        if data and not self.closing and stream.response_started and not stream.finished:
            stream.send_body(data)
            if stream.write_paused:
                stream.ws.pause_writing()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            stream = self.stream
            if stream.response_started and not stream.finished and not stream.disconnected:
                stream.send_body(b"", end=True)

    def abort(self) -> None:
        self.closing = True
        if not self.stream.local_closed:
            self.stream.abort()

    def is_closing(self) -> bool:
        return self.closing or self.stream.disconnected

    def pause_reading(self) -> None:
        self.stream.reading_paused = True

    def resume_reading(self) -> None:
        self.stream.resume_credit()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self.stream.conn.transport
        return transport.get_extra_info(name, default) if transport is not None else default


class H2WSStream(H2Stream):
    """A stream that carries a WebSocket: its DATA goes to the WebSocket engine, not to a request body."""

    websocket = True
    reading_paused = False
    _uncredited = 0
    _lost = False
    ws: H2WebSocket

    def start_websocket(self, handler: Any) -> None:
        self.ws = H2WebSocket(self.conn.ctx, StreamTransport(self), self)
        self.ws.start(handler, b"")

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if not data:
            return
        ws = self.ws
        if ws.phase is Phase.DONE or ws.phase is Phase.RESPONSE:
            self.conn.credit_stream(self, len(data))
            return
        ws.data_received(data)
        if self.reading_paused:
            self._uncredited += len(data)  # the window closes: the client waits until the app catches up
        else:
            self.conn.credit_stream(self, len(data))

    def resume_credit(self) -> None:
        self.reading_paused = False
        if self._uncredited:
            n, self._uncredited = self._uncredited, 0
            self.conn.credit_stream(self, n)

    def end_body(self) -> None:
        super().end_body()
        ws = self.ws
        if ws.phase is Phase.OPEN and not ws.eof_received():  # True: frames still held, it closes after them
            ws.transport.close()  # the client ended its side: end ours; the stream then closes
        self._lose()

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self._lose()

    def _lose(self) -> None:
        if not self._lost and (self.local_closed or self.disconnected) and self.remote_closed:
            self._lost = True
            self.ws.connection_lost(None)

    def wake_drain(self) -> None:
        super().wake_drain()
        if not self.write_paused:
            self.ws.resume_writing()

    def _finish(self) -> None:
        super()._finish()
        self._lose()


class H2WebSocket(WSConnection):
    """A WebSocket session over an extended CONNECT stream: the handshake and denials as HTTP/2 responses."""

    def __init__(self, ctx: Any, transport: StreamTransport, stream: H2WSStream) -> None:
        super().__init__(ctx, transport, stream)  # type: ignore[arg-type]
        self.stream = stream

    def _check_handshake(self, ex: Any) -> tuple[int, str, Headers] | tuple[Headers, list[Extension]]:
        return check_h2_handshake(ex, deflate=self.ctx.ws_per_message_deflate)

    def _write_accept(self, subprotocol: str | None, headers: Headers) -> None:
        out = list(self._accept_headers)
        if subprotocol is not None:
            out.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        self.stream.send_head(200, out + headers)

    def deny_start(self, status: int, headers: Headers) -> None:
        if self.phase is not Phase.HANDSHAKE:
            raise ClientDisconnected("the client has disconnected")
        if type(status) is not int or not 200 <= status <= 999:
            raise AppProtocolError(f"invalid status for websocket.http.response.start: {status!r}")
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

