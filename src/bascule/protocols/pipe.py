"""The byte pipe a WebSocket session runs over, whichever wire carries it: the seam between the two.

A WebSocket is a session over a pipe of bytes. Over HTTP/1.1 the pipe is the connection's asyncio transport
after the 101; over HTTP/2 (RFC 8441) it is one extended CONNECT stream, whose DATA frames carry the bytes.
:class:`BytePipe` is what the session drives (the part of ``asyncio.Transport`` it really uses, so an
HTTP/1.1 transport satisfies it as it is), and :class:`PipeSession` is what the pipe calls back: the
``asyncio.Protocol`` callbacks, plus two a stream needs because it is not a socket. Neither side imports the
other's package (tests/listen/test_import_rules.py); the front door (listen/accept.py) introduces them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bascule.protocols.exchange import WebSocketSession


class BytePipe(Protocol):
    """The wire under a session: bytes out, flow control in (an asyncio transport, or an HTTP/2 stream)."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""

    def writelines(self, list_of_data: Iterable[bytes]) -> None:
        """Queue several buffers for the peer (the outbox's way for large pieces)."""

    def is_closing(self) -> bool:
        """True once close or abort was called."""

    def close(self) -> None:
        """End our side after what was written (FIN, or END_STREAM)."""

    def abort(self) -> None:
        """Drop the pipe at once, unwritten bytes too (RST, or RST_STREAM)."""

    def pause_reading(self) -> None:
        """Stop delivering the peer's bytes (a stream stops giving window back) until resume_reading."""

    def resume_reading(self) -> None: ...


class PipeSession(Protocol):
    """What a pipe delivers to the session it carries: the asyncio.Protocol callbacks, plus stream-only calls."""

    def start(self, handler: Callable[[WebSocketSession], None], leftover: bytes) -> None:
        """Check the handshake, then give the session to the app through ``handler``."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def takes_input(self) -> bool:
        """False once what the peer sends is dropped unread (a denied handshake, or closing): a stream gives
        the window for such bytes back at once, whatever the session's pause."""

    def input_ended(self) -> None:
        """The peer ended its side of a pipe that does not close itself on EOF (a stream's END_STREAM): end
        ours too, once the frames still held are fed (an asyncio transport calls eof_received instead)."""
