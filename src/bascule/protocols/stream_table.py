"""What a multiplexed connection (HTTP/2, HTTP/3) does with its table of streams the same way on both wires.

protocols/h2/connection.py (compiled: the HTTP/2 hot path) and protocols/h3/connection.py (interpreted: aioquic
dominates it) keep their streams in a table by id and differ in how a stream enters and leaves it (frames and
HPACK, or aioquic's events and its stream records). What they do with the table is the same: start the apps of
the streams whose heads a read completed, wake the paused writer of a stream that leaves the table, and, from
the connection's tick, find the streams past a deadline (--timeout-request, --timeout-body-idle) and answer
them. Those rules live here once, as functions over :class:`~bascule.protocols.stream_exchange.StreamExchange`
(a compiled module used by an interpreted one: only plain functions, no mixin). What each wire does next (a
reset, RST_STREAM or STOP_SENDING) stays its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bascule.protocols.semantics import answer_timeout

if TYPE_CHECKING:
    from bascule.context import ServerContext
    from bascule.protocols.stream_exchange import StreamExchange

__all__ = ["RESETS_PER_TICK", "app_deadlines", "dispatch", "refuse_stalled_body", "release_writer", "stalled_bodies"]

_log = logging.getLogger("bascule.error")

# Streams the client resets, or makes us reset, per 0.5 s tick (CVE-2023-44487 "rapid reset" and its
# "MadeYouReset" variant): over it the connection closes, on both wires.
RESETS_PER_TICK = 200


def dispatch(ctx: ServerContext, ready: list[StreamExchange], now: float) -> None:
    """Start the apps of the streams whose heads arrived: after the whole read (or datagram), so a small
    request's body is complete by then. A stream the client already left is not started. A list, not any
    iterable: compiled, a list is walked by index, where an iterator object would cost HTTP/2 ~300
    instructions per read (benchmarks/callgrind.py)."""
    for st in ready:
        if not st.disconnected:
            st.start_time = now
            ctx.serve(st)


def release_writer(st: StreamExchange) -> None:
    """``st`` has left its connection's table: an app paused in drain() on it is woken now, since a connection
    whose writes resume wakes only the streams still in its table (the app then finds its stream over)."""
    if st.write_paused:
        st.write_paused = False
        st.wake_drain()


def app_deadlines(streams: Iterable[StreamExchange], now: float, timeout: float) -> None:
    """--timeout-request for a connection's streams, from its tick: an app that took longer gets a 504 if its
    response has not started, else the stream is given up (the wire resets it); either way the app sees a
    disconnect, and a task-run app is cancelled."""
    for st in streams:
        if st.counted and not st.finished and now - st.start_time > timeout:
            started = st.response_started
            answer_timeout(st, timeout, "stream reset")
            if started:
                st.abort()
            st.on_disconnect()
            if st.cancel_app is not None:
                st.cancel_app()


def stalled_bodies(streams: Iterable[StreamExchange], marks: dict[StreamExchange, tuple[int, float]], now: float,
                   timeout: float) -> list[StreamExchange]:
    """--timeout-body-idle for a connection's streams, from its tick (no timer per stream, nothing on the DATA
    path, no attribute on the stream): those whose app has waited more than ``timeout`` seconds for request
    body bytes that did not come.

    ``marks`` is the connection's, rebuilt here on every tick: for each stream whose app waits in receive_body
    (all it was given is taken, so the client has window to send more), the body bytes received when that was
    first seen, and since when; a byte, or an app not waiting, restarts the clock. So a client that waits for
    a 100 Continue the app has not asked for yet, or whose window is shut by an app busy with what it read,
    is not stalling."""
    stalled: list[StreamExchange] = []
    kept: dict[StreamExchange, tuple[int, float]] = {}
    for st in streams:
        if st._body_waiter is None or st.disconnected:
            continue
        received = st.received
        mark = marks.get(st)
        if mark is None or mark[0] != received:
            kept[st] = (received, now)
        elif now - mark[1] > timeout:
            stalled.append(st)
        else:
            kept[st] = mark
    marks.clear()
    marks.update(kept)
    return stalled


def refuse_stalled_body(st: StreamExchange, stream_id: int, peer: str, timeout: float) -> None:
    """A stream :func:`stalled_bodies` found: logged, and answered 408 if its response has not started (the
    wire then ends the upload, or resets the stream once the response started)."""
    _log.info("rejected a request from %s on HTTP/%s stream %d: no request body bytes within "
              "timeout_body_idle (%g s) (%s)", peer, st.http_version, stream_id, timeout,
              "stream reset" if st.response_started else "408")
    if not st.response_started:
        st.send_simple(408, b"Request Timeout: no request body bytes within timeout_body_idle\n")
