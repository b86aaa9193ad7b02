"""HTTP/2 stream states (RFC 9113 section 5.1) as a server sees them: the spec of ``H2Stream.state``.

:data:`TRANSITIONS` is the spec, in the manner of ``gateways/asgi.py``'s: the hot path does not look the
table up (hashing an Enum member is a Python-level call); ``H2Stream``, ``H2Connection`` and ``H2Output``
move the state with identity checks that encode it, and tests/protocols/h2/test_h2_states.py checks every
(state, event) pair against it, and drives a real connection with an h2 client through each state.

What the RFC's states leave out, because they are not the wire's: whether the app has started or finished
its response (``response_started``, ``finished``), whether it has been told the client is gone
(``disconnected``), and whether the client cancelled the request (``cancelled``). Those are the exchange's
side of the seam, and a stream can be closed on the wire while its app still runs (an orphan, counted
against the concurrency limit until it returns).

Two facts of this server shape the table's use. A stream object exists from the client's HEADERS on, so
IDLE is never a stream's state, only the start of the table (a frame on an idle stream id is a connection
error, found by id). And half-closed (local) does not last: when the response ends while the client is
still sending, the connection resets the stream with NO_ERROR at once (RFC 9113 8.1), so the stream goes
on to CLOSED in the same call. A closed stream leaves the connection's table; a late frame on it is then
judged by its id (dropped after our own reset, a STREAM_CLOSED error otherwise).
"""

from __future__ import annotations

import enum


class StreamState(enum.Enum):
    """Where an HTTP/2 stream is in its life (RFC 9113 5.1; no push, so no reserved states)."""

    IDLE = "idle"
    OPEN = "open"  # both sides may send
    HALF_CLOSED_REMOTE = "half-closed (remote)"  # the client ended its side (END_STREAM): we may still send
    HALF_CLOSED_LOCAL = "half-closed (local)"  # we ended ours: the client may still send
    CLOSED = "closed"  # both ended, or a RST_STREAM either way, or the connection is gone


class StreamEvent(enum.Enum):
    """A frame sent or received on a stream, as far as its state is concerned."""

    RECV_HEADERS = "recv HEADERS"  # a request head, or its trailers
    RECV_DATA = "recv DATA"
    RECV_END_STREAM = "recv END_STREAM"  # the flag, on the HEADERS or DATA just received
    RECV_RST_STREAM = "recv RST_STREAM"
    SEND_HEADERS = "send HEADERS"  # a response head (1xx included), or trailers
    SEND_DATA = "send DATA"
    SEND_END_STREAM = "send END_STREAM"  # the flag, on the HEADERS or DATA just sent
    SEND_RST_STREAM = "send RST_STREAM"


_S = StreamState
_E = StreamEvent

TRANSITIONS: dict[tuple[StreamState, StreamEvent], StreamState] = {
    (_S.IDLE, _E.RECV_HEADERS): _S.OPEN,
    (_S.OPEN, _E.RECV_HEADERS): _S.OPEN,  # trailers (which must carry END_STREAM: checked with the frame)
    (_S.OPEN, _E.RECV_DATA): _S.OPEN,
    (_S.OPEN, _E.RECV_END_STREAM): _S.HALF_CLOSED_REMOTE,
    (_S.OPEN, _E.RECV_RST_STREAM): _S.CLOSED,
    (_S.OPEN, _E.SEND_HEADERS): _S.OPEN,
    (_S.OPEN, _E.SEND_DATA): _S.OPEN,
    (_S.OPEN, _E.SEND_END_STREAM): _S.HALF_CLOSED_LOCAL,
    (_S.OPEN, _E.SEND_RST_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _E.RECV_RST_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _E.SEND_HEADERS): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _E.SEND_DATA): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _E.SEND_END_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _E.SEND_RST_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _E.RECV_HEADERS): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _E.RECV_DATA): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _E.RECV_END_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _E.RECV_RST_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _E.SEND_RST_STREAM): _S.CLOSED,  # how we stop a client sending a body nobody reads
}
"""(state, event) -> the next state; a pair not listed is not allowed. Received, it is an error: a stream
error STREAM_CLOSED on a half-closed (remote) stream, found by id on a closed one (dropped after our own
reset), a connection error PROTOCOL_ERROR on an idle one. Sent, it is never written: the send is dropped
(the app's late sends after a reset or a disconnect)."""


def remote_open(state: StreamState) -> bool:
    """The client may still send on the stream (HEADERS as trailers, DATA, END_STREAM)."""
    return state is StreamState.OPEN or state is StreamState.HALF_CLOSED_LOCAL


def local_open(state: StreamState) -> bool:
    """We may still send on the stream (HEADERS, DATA, END_STREAM, and a RST_STREAM worth sending)."""
    return state is StreamState.OPEN or state is StreamState.HALF_CLOSED_REMOTE
