"""HTTP/2's connection-level control frames: SETTINGS both ways, PING, PRIORITY, and the graceful GOAWAY.

Split from protocols/h2/connection.py, which reads the frames and hands these here: none is on a request's
path (SETTINGS come at the start of a connection, PING and PRIORITY when a client sends them, GOAWAY at its
end), and what a client sends is charged against the connection's control-frame budget (``_charge_control``),
which bounds what it can make us spend on frames that carry no request. Functions over the connection rather
than a mixin: the connection is compiled, and a compiled class takes one base class (protocols/h2/output.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.frames import ConnectionError_

if TYPE_CHECKING:
    from bascule.protocols.h2.connection import H2Connection

CONN_WINDOW = 1 << 20  # connection-level receive window (stream windows bound what is buffered)
GOAWAY_GRACE = 0.25  # seconds between a graceful GOAWAY and closing an idle connection


def local_settings(conn: H2Connection) -> bytes:
    """Our SETTINGS and the connection window's raise, the first frames we send; the client's ACK applies the
    stream window we ask for (:func:`on_settings`)."""
    settings = {fr.SETTINGS_MAX_CONCURRENT_STREAMS: conn.max_streams,
                fr.SETTINGS_MAX_HEADER_LIST_SIZE: conn.ctx.limit_request_header_size}
    if conn.configured_window != fr.DEFAULT_WINDOW:
        settings[fr.SETTINGS_INITIAL_WINDOW_SIZE] = conn.configured_window
    if conn.connect_protocol:
        settings[fr.SETTINGS_ENABLE_CONNECT_PROTOCOL] = 1
    conn._settings_pending += 1
    return fr.settings(settings) + fr.window_update(0, CONN_WINDOW - fr.DEFAULT_WINDOW)


def on_settings(conn: H2Connection, flags: int, sid: int, payload: bytes) -> None:
    fr.check_control(fr.SETTINGS, sid, payload, flags)
    if flags & fr.ACK:
        if conn._settings_pending:
            conn._settings_pending -= 1
            _apply_local_window(conn, conn.configured_window)
        return
    conn._charge_control(1 + len(payload) // 48)  # a frame may carry thousands of entries: charged by size
    apply_peer_settings(conn, payload)
    conn.outbox.write(fr.frame(fr.SETTINGS, fr.ACK, 0))
    if conn._blocked:
        conn._pump()


def apply_peer_settings(conn: H2Connection, payload: bytes) -> None:
    """The client's settings (a SETTINGS frame's payload, or HTTP2-Settings after ``Upgrade: h2c``)."""
    window, max_frame = fr.peer_settings(payload)
    if max_frame is not None:
        conn.peer_max_frame = max_frame
    if window is not None and window != conn.peer_initial_window:
        delta = window - conn.peer_initial_window
        conn.peer_initial_window = window
        for st in conn.streams.values():
            st.send_window += delta
            if st.send_window > fr.MAX_WINDOW:
                raise ConnectionError_(fr.FLOW_CONTROL_ERROR, "a stream window went over 2^31-1")


def _apply_local_window(conn: H2Connection, value: int) -> None:
    delta = value - conn.local_initial_window
    if delta:
        conn.local_initial_window = value
        for st in conn.streams.values():
            st.recv_window += delta


def on_ping(conn: H2Connection, flags: int, sid: int, payload: bytes) -> None:
    fr.check_control(fr.PING, sid, payload)
    conn._charge_control()
    if not flags & fr.ACK:
        conn.outbox.write(fr.frame(fr.PING, fr.ACK, 0, payload))


def on_priority(conn: H2Connection, sid: int, payload: bytes) -> None:
    if sid == 0:
        raise ConnectionError_(fr.PROTOCOL_ERROR, "PRIORITY on stream 0")
    conn._charge_control()
    fr.check_control(fr.PRIORITY, sid, payload)


def start_goaway(conn: H2Connection) -> None:
    """Graceful stop: no new streams; the connection closes once those in flight are done.

    Called again by the tick until it closes. An idle connection is closed only GOAWAY_GRACE after its
    GOAWAY, so that a request the client sent meanwhile meets the GOAWAY (and is retried elsewhere, its
    stream being above the last one processed) rather than a closed socket.
    """
    if not conn.goaway_sent and not conn.closed:
        conn.goaway_sent = True
        conn._goaway_at = conn.loop.time()
        conn.outbox.write(conn._goaway(fr.NO_ERROR))
    elif not conn.streams and conn.loop.time() - conn._goaway_at >= GOAWAY_GRACE:
        conn._linger_close()
