"""HTTP/2 output for one connection: frames queued per loop pass, DATA under flow control, graceful closes.

Split from protocols/h2/connection.py (frames in, stream lifecycle, budgets): :class:`H2Output` is the half of
:class:`~bascule.protocols.h2.connection.H2Connection` that writes. Responses whose DATA the windows cannot take
yet wait on their own stream (``pending``) and leave in :meth:`H2Output._pump` when WINDOW_UPDATE or
SETTINGS make room, stream by stream, so one slow reader never holds up the others.

Flow control is not the only brake: a client may open windows of 2^31-1 and then not read. Frames are
queued on the connection's :class:`~bascule.protocols.outbox.Outbox`, and go to the transport once
:data:`COALESCE_LIMIT` bytes are queued (not only at the end of the pass, which an app awaiting nothing but
``send`` never reaches), so the transport's high-water mark is seen at once; a stream that sends while the
transport is paused is paused itself (``write_paused``, which the gateways wait on: one waiter per stream,
since streams take turns, rather than the outbox's drain).

Streams take turns. An app that awaits nothing but ``send`` never suspends while the transport takes its
bytes, so the first stream woken would send until the next pause and starve the others. So once more than
one stream is sending, a stream that has sent yields (``_yielded``) while any other is waiting or has been
woken and not sent yet (``_turns``); a new round wakes the yielded ones on the next loop pass, and its turns
replace the last round's. After a transport pause only streams caught sending get turns, so idle ones (a
long poll, an SSE stream between events) never hold a sender up. One stream alone never yields: the common
case costs one test of two empty containers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.headers import encode_fixed
from bascule.protocols.h2.states import StreamState, local_open, remote_open
from bascule.protocols.outbox import Outbox

if TYPE_CHECKING:
    from bascule.context import ServerContext
    from bascule.protocols.h2.stream import H2Stream

LINGER_SECONDS = 1.0  # after a GOAWAY: how long the client's remaining bytes are read and dropped
COALESCE_LIMIT = 64 * 1024  # bytes queued in one loop pass that are handed to the transport at once (outbox.py)
# WINDOW_UPDATEs a client may send per DATA frame of ours without paying the control-frame budget: one for
# the stream and one for the connection, each possibly in two pieces (what two reads consumed). Acking
# every frame is ordinary client behaviour, and each allowance is earned by a frame that cost us more.
ACKS_PER_DATA = 4
# The most uncharged WINDOW_UPDATEs that can be banked: a long-lived stream's DATA (an SSE stream over an
# hour) must not buy a later burst of free control frames. Acks follow DATA within a round trip, so this
# only caps what the client has not used; a fast download spends its allowance as it earns it.
MAX_ACK_ALLOWANCE = 4000


class H2Output:
    """The writing half of an HTTP/2 connection (a mixin: the state is the connection's)."""

    loop: asyncio.AbstractEventLoop
    ctx: ServerContext
    transport: asyncio.Transport | None
    closed: bool
    write_paused: bool
    last_stream_id: int
    peer_max_frame: int
    send_window: int
    ack_allowance: int
    local_initial_window: int
    _announced: int | None
    _blocked: dict[int, H2Stream]
    streams: dict[int, H2Stream]
    _yielded: dict[int, H2Stream]
    _turns: set[int]
    _round_scheduled: bool
    outbox: Outbox
    _fixed_src: bytes
    _fixed_block: bytes

    def _end_local(self, st: H2Stream) -> None:
        """Our side of ``st`` is done (END_STREAM or RST sent): defined by the connection."""
        raise NotImplementedError

    def _goaway(self, code: int, debug: bytes = b"") -> bytes:
        """A GOAWAY frame; its last-stream-id never grows from one GOAWAY to the next (RFC 9113 6.8)."""
        last = self.last_stream_id if self._announced is None else min(self._announced, self.last_stream_id)
        self._announced = last
        return fr.goaway(last, code, debug)

    def _linger_close(self) -> None:
        """Close after a GOAWAY without losing it, or the end of the last response, to a RST.

        Closing with the client's frames still unread (a WINDOW_UPDATE, a request in flight) makes the
        kernel answer with a RST, which destroys what we sent last before the client reads it. So:
        half-close, drop whatever still arrives for a moment, then close.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            self.close()
            return
        self.outbox.flush()
        self.closed = True  # nothing more is parsed or written
        transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def fixed_block(self) -> bytes:
        """The server's own response fields (date, server, --header), HPACK-encoded, renewed each tick."""
        fixed = self.ctx.fixed_headers
        if fixed is not self._fixed_src:
            self._fixed_src = fixed
            self._fixed_block = encode_fixed(fixed)
        return self._fixed_block

    def send_headers(self, st: H2Stream, block: bytes, end_stream: bool) -> None:
        if not local_open(st.state) or self.closed:
            return
        self.outbox.write(fr.header_frames(st.stream_id, block, end_stream, self.peer_max_frame))
        if end_stream:
            self._end_local(st)

    def send_whole(self, st: H2Stream, block: bytes, body: bytes) -> None:
        """A complete response: HEADERS (+ DATA) ending the stream, as one write when the windows allow."""
        state = st.state
        if (state is not StreamState.HALF_CLOSED_REMOTE and state is not StreamState.OPEN) or self.closed:
            return  # not local_open: sends after our END_STREAM or a reset are dropped
        n = len(body)
        if not n or n > self.send_window or n > st.send_window or n > 4096 or len(block) > self.peer_max_frame:
            self.send_headers(st, block, end_stream=not n)
            if n:
                self.send_data(st, body, True)
            return
        self.send_window -= n
        st.send_window -= n
        self._earn_acks(1)
        sid = st.stream_id
        self.outbox.write(fr.frame(fr.HEADERS, fr.END_HEADERS, sid, block)
                          + fr.frame(fr.DATA, fr.END_STREAM, sid, body))
        self._end_local(st)

    def send_data(self, st: H2Stream, data: bytes, end: bool) -> None:
        """DATA for ``st`` now if the windows allow, else queued on the stream until WINDOW_UPDATE."""
        state = st.state
        if (state is not StreamState.HALF_CLOSED_REMOTE and state is not StreamState.OPEN) or self.closed:
            return  # not local_open
        n = len(data)
        if st.pending is None and n <= self.send_window and n <= st.send_window:
            self.send_window -= n
            st.send_window -= n
            max_frame = self.peer_max_frame
            flags = fr.END_STREAM if end else 0
            sid = st.stream_id
            self._earn_acks(1 + n // max_frame)
            if n <= max_frame:
                if n < 4096:
                    self.outbox.write(fr.frame(fr.DATA, flags, sid, data))
                else:
                    self.outbox.write(fr.frame_header(fr.DATA, flags, sid, n))
                    self.outbox.write(data)
            else:
                for offset in range(0, n, max_frame):
                    piece = data[offset:offset + max_frame]
                    last_flags = flags if offset + max_frame >= n else 0
                    self.outbox.write(fr.frame_header(fr.DATA, last_flags, sid, len(piece)))
                    self.outbox.write(piece)
            if end:
                self._end_local(st)
            elif self.write_paused or self._yielded or self._turns:
                self._take_turn(st)
            return
        if st.pending is None:
            st.pending = deque()
        if data:
            st.pending.append(data)
        st.pending_end = end
        st.write_paused = True
        self._blocked[st.stream_id] = st
        self._pump()

    def _earn_acks(self, frames: int) -> None:
        allowance = self.ack_allowance + ACKS_PER_DATA * frames
        self.ack_allowance = allowance if allowance < MAX_ACK_ALLOWANCE else MAX_ACK_ALLOWANCE

    def send_trailers(self, st: H2Stream, block: bytes) -> None:
        if not local_open(st.state) or self.closed:
            return
        if st.pending is not None:
            st.pending_trailers = block
            st.pending_end = True
            return
        self.outbox.write(fr.header_frames(st.stream_id, block, True, self.peer_max_frame))
        self._end_local(st)

    def _pump(self) -> None:
        """Send queued DATA as far as the windows allow, stream by stream (a blocked stream waits alone)."""
        max_frame = self.peer_max_frame
        for sid, st in list(self._blocked.items()):
            pending = st.pending
            if pending is None or not local_open(st.state):
                del self._blocked[sid]
                continue
            while pending and self.send_window > 0 and st.send_window > 0:
                chunk = pending[0]
                n = min(len(chunk), self.send_window, st.send_window, max_frame)
                if n < len(chunk):
                    pending[0] = chunk[n:]
                    chunk = chunk[:n]
                else:
                    pending.popleft()
                self.send_window -= n
                st.send_window -= n
                self._earn_acks(1)
                last = not pending and st.pending_end and st.pending_trailers is None
                self.outbox.write(fr.frame(fr.DATA, fr.END_STREAM if last else 0, sid, chunk))
                if last:
                    self._end_local(st)
            if pending:
                if self.send_window <= 0:
                    break
                continue
            del self._blocked[sid]
            st.pending = None
            if st.pending_trailers is not None:
                self.outbox.write(fr.header_frames(sid, st.pending_trailers, True, max_frame))
                st.pending_trailers = None
                self._end_local(st)
            elif st.pending_end and local_open(st.state):
                self.outbox.write(fr.frame(fr.DATA, fr.END_STREAM, sid))
                self._end_local(st)
            if not self.write_paused:
                st.write_paused = False
                st.wake_drain()

    def _take_turn(self, st: H2Stream) -> None:
        """``st`` just sent DATA: it waits (``write_paused``) if the transport is full or others are due."""
        turns = self._turns
        turns.discard(st.stream_id)
        if self.write_paused or self._yielded or turns:
            st.write_paused = True
            self._yielded[st.stream_id] = st
            if not self.write_paused and not self._round_scheduled:
                self._round_scheduled = True
                self.loop.call_soon(self._next_round)

    def _next_round(self) -> None:
        """Wake the streams that yielded their turn (unless the transport paused meanwhile).

        The round's turns are theirs alone: a stream woken in an earlier round that has not sent since
        (an SSE stream waiting for its next event) holds up the others for one round at most.
        """
        self._round_scheduled = False
        if self.write_paused or self.closed:
            return
        yielded, self._yielded = self._yielded, {}
        self._turns.clear()
        self._wake(yielded.values(), True)

    def _wake(self, streams: Iterable[H2Stream], all_senders: bool) -> None:
        """Unpause ``streams``; those that are sending (all of them, or those waiting in drain or pushing
        from a WSGI thread) get a turn the others wait for."""
        turns = self._turns
        for st in streams:
            if st.write_paused and not st.pending:  # one with DATA waiting for window is woken by _pump
                st.write_paused = False
                if all_senders or st.sending():
                    turns.add(st.stream_id)
                st.wake_drain()

    def forget_turn(self, sid: int) -> None:
        """A stream left the table: it neither waits for a turn nor holds up the others."""
        if self._yielded:
            self._yielded.pop(sid, None)
        if self._turns:
            self._turns.discard(sid)

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark: every stream's sender waits (drain)."""
        self.write_paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()  # a client that does not read our answers is not read either
        for st in self.streams.values():
            st.write_paused = True

    def resume_writing(self) -> None:
        """The buffer drained: every paused stream with no DATA waiting for window is woken; those caught
        sending get a turn the others wait for (see :meth:`_wake`)."""
        self.write_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self._yielded.clear()
        self._turns.clear()
        # every stream was paused, idle ones too (a long poll, an app still computing): only those caught
        # sending get a turn, or the one sender left would yield to them on every send
        self._wake(list(self.streams.values()), False)

    def credit_stream(self, st: H2Stream, n: int) -> None:
        """The app consumed ``n`` body bytes of ``st``: give them back as stream window when worth it."""
        if not remote_open(st.state) or self.closed:
            return
        st.unacked += n
        if st.unacked >= self.local_initial_window // 2 or st.recv_window <= 0:
            st.recv_window += st.unacked
            self.outbox.write(fr.window_update(st.stream_id, st.unacked))
            st.unacked = 0

    def close(self) -> None:
        self.outbox.flush()
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
