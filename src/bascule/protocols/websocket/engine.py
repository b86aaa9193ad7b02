"""The sans-I/O side of a WebSocket: the handshake check, and websockets' frame engine with our budget.

Split from protocols/websocket.py (the asyncio glue, flow control and the app's session), which drives
these: :func:`check_handshake` (an HTTP/1.1 upgrade) and :func:`check_extended_connect` (an HTTP/2 extended
CONNECT) decide a handshake before the app sees it, and :class:`Engine` is the
``websockets`` server protocol each open connection feeds its bytes to. Nothing here does I/O.
"""

from __future__ import annotations

import logging

from websockets.datastructures import Headers as WSHeaders
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from bascule.protocols.exchange import Exchange, Headers

# Pings, pongs and empty non-final fragments a peer may send per 0.5 s tick (context.TICK_SECONDS). Each costs
# ~5 us to parse and a ping a pong to write, for nothing the app sees. Legitimate peers send a few per second
# (keepalive, latency probes, Autobahn's ten-ping cases; a paused peer's backlog arrives in one burst); 1000
# per tick is hundreds of times that, yet caps what a flooder costs at ~10 ms of CPU per second.
CONTROL_PER_TICK = 1000
# Non-final fragments shorter than this count against the same budget: a message cut into 1-byte fragments
# costs ~5 us of parsing per byte (80 s for 16 MiB) for nothing a message in larger pieces would not carry.
# 64 is the smallest fragment size Autobahn's fragmentation cases (9.4.x) send, so they stay unbudgeted.
SMALL_FRAGMENT = 64
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE
_log = logging.getLogger("bascule.websocket")  # websockets' own logs; its "connection open" lines are info
_NONCE = "AAAAAAAAAAAAAAAAAAAAAA=="  # RFC 8441 has no key; websockets' negotiator wants one, unused here


def check_handshake(ex: Exchange, *, deflate: bool) -> tuple[int, str, Headers] | tuple[Headers, list[Extension]]:
    """Validate an upgrade request: (status, reason, extra headers) to refuse it, else (101 headers, extensions).

    The 101's headers lack the subprotocol, which the app chooses. Any header, ASCII or not, well-formed or
    not, ends in a response here: a malformed one is a 400, never an exception.
    """
    if ex.method != "GET":
        return 405, f"a WebSocket handshake must be a GET, not {ex.method}", [(b"allow", b"GET")]
    if ex.http_version != "1.1":
        return 505, "a WebSocket handshake needs HTTP/1.1", []
    headers = WSHeaders()
    for name, value in ex.headers:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    versions = headers.get_all("Sec-WebSocket-Version")
    if versions and versions != ["13"]:
        # RFC 6455 4.4: tell the client which version we speak
        return 426, f"unsupported WebSocket version {', '.join(versions)!r}", [(b"sec-websocket-version", b"13")]
    negotiator = ServerProtocol(extensions=enable_server_permessage_deflate(None) if deflate else None,
                                logger=_log)
    path = (ex.raw_path + (b"?" + ex.query_string if ex.query_string else b"")).decode("latin-1")
    try:
        response = negotiator.accept(Request(path, headers))
    except Exception as exc:  # accept() answers errors itself; this is a last line of defence
        return 400, f"invalid WebSocket handshake ({exc})", []
    if response.status_code != 101:
        reason = str(negotiator.handshake_exc or "invalid WebSocket handshake")
        extra = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                 for name, value in response.headers.raw_items() if name in ("Allow", "Upgrade")]
        return response.status_code, reason, extra
    out: Headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                    (b"sec-websocket-accept", response.headers["Sec-WebSocket-Accept"].encode("ascii"))]
    if "Sec-WebSocket-Extensions" in response.headers:
        out.append((b"sec-websocket-extensions", response.headers["Sec-WebSocket-Extensions"].encode("latin-1")))
    return out, negotiator.extensions


def check_extended_connect(ex: Exchange, *,
                           deflate: bool) -> tuple[int, str, Headers] | tuple[Headers, list[Extension]]:
    """Validate an extended CONNECT: (status, reason, extra headers) to refuse it, else (200 headers, extensions).

    The extension negotiation (permessage-deflate) is websockets' own, run on the request as if it were the
    HTTP/1.1 upgrade RFC 8441 stands for (the request is an HTTP/2 stream; only Exchange fields are read).
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


def offered_subprotocols(headers: Headers) -> list[str]:
    """The subprotocols the client offers, in its order (headers already validated by check_handshake)."""
    offered: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            offered.extend(parse_subprotocol(value.decode("latin-1")))
    return offered


class Engine(ServerProtocol):
    """websockets' server protocol (in the OPEN state), with a budget and one fix.

    The budget: pings, pongs and non-final fragments under SMALL_FRAGMENT bytes are counted in ``cheap_frames``
    (reset each tick by the connection); the one over :data:`CONTROL_PER_TICK` fails the connection with 1008
    right there, so the rest of the chunk being parsed is discarded unparsed, and the pongs owed for this chunk
    are dropped: a flooder gets its close frame, not a pile of pongs. ``flooded`` tells the connection why.

    The fix: a Close frame in the middle of a fragmented message. RFC 6455 5.4 lets control frames arrive
    between fragments, and a Close ends the connection, message unfinished or not: the peer expects its
    close code echoed (Autobahn 7.1.5), where websockets fails the connection with 1002 "incomplete
    fragmented message". The unfinished message is dropped.
    """

    def __init__(self, *, max_size: int, logger: logging.Logger) -> None:
        super().__init__(state=OPEN, max_size=max_size, logger=logger)
        self.cheap_frames = 0
        self.flooded = False

    def recv_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is _CLOSE:
            self.current_size = None
        elif opcode is _PING or opcode is _PONG or (not frame.fin and len(frame.data) < SMALL_FRAGMENT):
            self.cheap_frames += 1
            if self.cheap_frames > CONTROL_PER_TICK:
                self.flooded = True
                del self.writes[:]  # the pongs of this chunk: written for nobody
                self.fail(1008, "too many control frames")  # discards the rest of the input, unparsed
                return
        super().recv_frame(frame)
