"""HTTP/2 stream states (protocols/h2/states.py): the table pair by pair, then a real connection.

The table is checked against RFC 9113 section 5.1 written out again here. Then an :class:`H2Connection` on a
fake transport is driven by the ``h2`` library as a client (and by raw frames where a well-behaved client
would refuse to send them): END_STREAM both ways, trailers both ways, 100-continue, a response while the
client is still sending, RST_STREAM from the client mid-response and mid-upload, the app giving up, and
frames on a stream the client already ended. Each step names the events it causes, and the stream's state
must be the one the table gives for them; every pair of the table is walked by at least one scenario, except
those of half-closed (local), which does not last on this server (see states.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.exchange import Exchange
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.connection import H2Connection
from bascule.protocols.h2.states import TRANSITIONS, StreamEvent, StreamState, local_open, remote_open
from bascule.protocols.h2.stream import H2Stream

S = StreamState
E = StreamEvent

EXPECTED: dict[tuple[StreamState, StreamEvent], StreamState] = {
    (S.IDLE, E.RECV_HEADERS): S.OPEN,
    (S.OPEN, E.RECV_HEADERS): S.OPEN,
    (S.OPEN, E.RECV_DATA): S.OPEN,
    (S.OPEN, E.RECV_END_STREAM): S.HALF_CLOSED_REMOTE,
    (S.OPEN, E.RECV_RST_STREAM): S.CLOSED,
    (S.OPEN, E.SEND_HEADERS): S.OPEN,
    (S.OPEN, E.SEND_DATA): S.OPEN,
    (S.OPEN, E.SEND_END_STREAM): S.HALF_CLOSED_LOCAL,
    (S.OPEN, E.SEND_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.RECV_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_HEADERS): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, E.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, E.RECV_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.SEND_RST_STREAM): S.CLOSED,
}
"""RFC 9113 5.1 for a server without push, written out independently of the code under test."""

NOT_LASTING = {pair for pair in TRANSITIONS if pair[0] is S.HALF_CLOSED_LOCAL and pair[1].name.startswith("RECV")}
"""Half-closed (local) is followed at once by our RST_STREAM (NO_ERROR): nothing is received in it here."""


# -- the table ------------------------------------------------------------------------------------------


def test_transition_table_is_rfc_9113() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("event", list(StreamEvent), ids=lambda e: e.name)
@pytest.mark.parametrize("state", list(StreamState), ids=lambda s: s.name)
def test_every_state_and_event_pair(state: StreamState, event: StreamEvent) -> None:
    assert TRANSITIONS.get((state, event)) is EXPECTED.get((state, event))


@pytest.mark.parametrize("state", list(StreamState), ids=lambda s: s.name)
def test_which_side_may_send_follows_the_table(state: StreamState) -> None:
    """remote_open and local_open, the checks the code makes, say what the table allows."""
    assert remote_open(state) is ((state, E.RECV_DATA) in TRANSITIONS and state is not S.IDLE)
    assert local_open(state) is ((state, E.SEND_DATA) in TRANSITIONS)


def test_closed_is_final_and_every_state_is_reachable() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is S.CLOSED]
    reached = {S.IDLE}
    while True:
        more = {TRANSITIONS[pair] for pair in TRANSITIONS if pair[0] in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(StreamState)


# -- a connection on a fake transport, an h2 client on the other side -----------------------------------


class Transport(FakeTransport):
    def can_write_eof(self) -> bool:
        return False


Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


class Wire:
    """One H2Connection, the streams it dispatched, an h2 client, and the frames the server wrote."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dispatched: list[H2Stream] = []
        ctx = ServerContext(Config(app="x:y", access_log=False), loop, self._dispatch, access_log=False)
        self.conn = H2Connection(ctx, "http", None)
        self.transport = Transport()
        self.conn.connection_made(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.send()
        self.frames()  # the server's SETTINGS and WINDOW_UPDATE

    def _dispatch(self, ex: Exchange) -> None:
        assert isinstance(ex, H2Stream)
        self.dispatched.append(ex)

    def send(self, raw: bytes = b"") -> None:
        """What the h2 client has queued, then ``raw`` frames, in one read."""
        self.conn.data_received(self.client.data_to_send() + raw)
        self.settle()

    def settle(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))

    def frames(self) -> list[Frame]:
        """The frames the server wrote since the last call."""
        data, found = bytes(self.transport.out), []
        self.transport.out.clear()
        pos = 0
        while pos < len(data):
            hi, lo, ftype, flags, sid = fr.HEADER.unpack_from(data, pos)
            length = hi << 16 | lo
            found.append((ftype, flags, sid & 0x7FFFFFFF, data[pos + 9:pos + 9 + length]))
            pos += 9 + length
        return found

    def stream(self) -> H2Stream:
        return self.dispatched[0]

    def state(self) -> StreamState:
        return self.dispatched[0].state if self.dispatched else S.IDLE


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


SID = 1
REQUEST = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "a")]


def headers(end: bool, extra: tuple[tuple[str, str], ...] = ()) -> Callable[[Wire], None]:
    def do(w: Wire) -> None:
        w.client.send_headers(SID, [*REQUEST, *extra], end_stream=end)
        w.send()
    return do


def data(payload: bytes, end: bool) -> Callable[[Wire], None]:
    def do(w: Wire) -> None:
        w.client.send_data(SID, payload, end_stream=end)
        w.send()
    return do


def trailers(w: Wire) -> None:
    w.client.send_headers(SID, [("x-checksum", "1")], end_stream=True)
    w.send()


def client_reset(w: Wire) -> None:
    w.client.reset_stream(SID, fr.CANCEL)
    w.send()


def raw(ftype: int, flags: int, payload: bytes = b"") -> Callable[[Wire], None]:
    return lambda w: w.send(fr.frame(ftype, flags, SID, payload))


def app(call: Callable[[H2Stream], object]) -> Callable[[Wire], None]:
    def do(w: Wire) -> None:
        call(w.stream())
        w.settle()
    return do


def answer(st: H2Stream) -> None:
    st.send_simple(200, b"ok")


def start_reading(w: Wire) -> None:
    w.loop.create_task(w.stream().receive_body())
    w.settle()


def wrote(*expected: tuple[int, int, int | None]) -> Callable[[Wire], bool]:
    """The server wrote exactly these frames on the stream: (type, flags, RST_STREAM code or None)."""
    def check(w: Wire) -> bool:
        got = [(t, f, int.from_bytes(p, "big") if t == fr.RST_STREAM else None) for t, f, s, p in w.frames()
               if s == SID]
        return got == list(expected)
    return check


H, D, RST = fr.HEADERS, fr.DATA, fr.RST_STREAM
EH, ES = fr.END_HEADERS, fr.END_STREAM


@dataclass
class Step:
    """Something done on either side, the events it causes in order, and a check of what else holds.
    ``refused``: a frame received that the table does not allow in the state before the step."""

    what: str
    do: Callable[[Wire], None]
    events: tuple[StreamEvent, ...]
    check: Callable[[Wire], object] = lambda w: True
    refused: StreamEvent | None = None


SCENARIOS: dict[str, list[Step]] = {
    "a request with END_STREAM on its HEADERS": [
        Step("HEADERS + END_STREAM", headers(True), (E.RECV_HEADERS, E.RECV_END_STREAM),
             lambda w: w.stream().body_done and SID in w.conn.streams),
        Step("a whole response", app(answer), (E.SEND_HEADERS, E.SEND_DATA, E.SEND_END_STREAM),
             wrote((H, EH, None), (D, ES, None))),
    ],
    "a body in two DATA frames, a response in three sends": [
        Step("HEADERS", headers(False), (E.RECV_HEADERS,), lambda w: not w.stream().body_done),
        Step("DATA", data(b"ab", False), (E.RECV_DATA,)),
        Step("DATA + END_STREAM", data(b"cd", True), (E.RECV_DATA, E.RECV_END_STREAM),
             lambda w: w.stream().take_buffered_body() == b"abcd"),
        Step("the response head", app(lambda st: st.send_head(200, [])), (E.SEND_HEADERS,), wrote((H, EH, None))),
        Step("a piece of body", app(lambda st: st.send_body(b"x")), (E.SEND_DATA,), wrote((D, 0, None))),
        Step("the end", app(lambda st: st.send_body(b"", end=True)), (E.SEND_DATA, E.SEND_END_STREAM),
             wrote((D, ES, None))),
    ],
    "trailers both ways": [
        Step("HEADERS", headers(False), (E.RECV_HEADERS,)),
        Step("DATA", data(b"ab", False), (E.RECV_DATA,)),
        Step("trailers + END_STREAM", trailers, (E.RECV_HEADERS, E.RECV_END_STREAM),
             lambda w: w.stream().take_buffered_body() == b"ab"),
        Step("a head announcing trailers", app(lambda st: st.send_head(200, [], trailers=True)), (E.SEND_HEADERS,)),
        Step("the body", app(lambda st: st.send_body(b"x", end=True)), (E.SEND_DATA,),
             wrote((H, EH, None), (D, 0, None))),
        Step("the trailers end it", app(lambda st: st.send_trailers([(b"x-done", b"1")])),
             (E.SEND_HEADERS, E.SEND_END_STREAM), wrote((H, EH | ES, None))),
    ],
    "100-continue": [
        Step("HEADERS asking for 100-continue", headers(False, (("expect", "100-continue"),)), (E.RECV_HEADERS,),
             wrote()),
        Step("the app reads: 100", start_reading, (E.SEND_HEADERS,), wrote((H, EH, None))),
        Step("the body", data(b"abc", True), (E.RECV_DATA, E.RECV_END_STREAM)),
        Step("the response", app(answer), (E.SEND_HEADERS, E.SEND_DATA, E.SEND_END_STREAM)),
    ],
    "answered while the client is still sending": [
        Step("HEADERS", headers(False), (E.RECV_HEADERS,)),
        Step("some DATA", data(b"ab", False), (E.RECV_DATA,)),
        Step("a whole response: then RST_STREAM NO_ERROR", app(answer),
             (E.SEND_HEADERS, E.SEND_DATA, E.SEND_END_STREAM, E.SEND_RST_STREAM),
             lambda w: wrote((H, EH, None), (D, ES, None), (RST, 0, fr.NO_ERROR))(w) and SID not in w.conn.streams),
        Step("late DATA: dropped quietly", data(b"cd", False), (), lambda w: wrote()(w) and not w.conn.closed),
    ],
    "the client resets mid-response": [
        Step("HEADERS + END_STREAM", headers(True), (E.RECV_HEADERS, E.RECV_END_STREAM)),
        Step("the response head", app(lambda st: st.send_head(200, [])), (E.SEND_HEADERS,)),
        Step("RST_STREAM from the client", client_reset, (E.RECV_RST_STREAM,),
             lambda w: w.stream().disconnected and w.stream().cancelled and SID not in w.conn.streams),
        Step("the app's late body: not written", app(lambda st: st.send_body(b"late", end=True)), (),
             lambda w: wrote((H, EH, None))(w)),
    ],
    "the client resets mid-upload": [
        Step("HEADERS", headers(False), (E.RECV_HEADERS,)),
        Step("RST_STREAM from the client", client_reset, (E.RECV_RST_STREAM,),
             lambda w: w.stream().disconnected and SID not in w.conn.streams),
        Step("the app's late answer: not written", app(answer), (), wrote()),
    ],
    "the app gives up mid-response": [
        Step("HEADERS + END_STREAM", headers(True), (E.RECV_HEADERS, E.RECV_END_STREAM)),
        Step("a head declaring 10 bytes", app(lambda st: st.send_head(200, [(b"content-length", b"10")])),
             (E.SEND_HEADERS,)),
        Step("3 bytes, then the end: reset", app(lambda st: st.send_body(b"abc", end=True)),
             (E.SEND_DATA, E.SEND_RST_STREAM),
             lambda w: wrote((H, EH, None), (D, 0, None), (RST, 0, fr.INTERNAL_ERROR))(w) and w.stream().disconnected),
    ],
    "the app gives up mid-upload": [
        Step("HEADERS", headers(False), (E.RECV_HEADERS,)),
        Step("abort", app(lambda st: st.abort()), (E.SEND_RST_STREAM,), wrote((RST, 0, fr.INTERNAL_ERROR))),
    ],
    "DATA after END_STREAM": [
        Step("HEADERS + END_STREAM", headers(True), (E.RECV_HEADERS, E.RECV_END_STREAM)),
        Step("DATA on the ended side: STREAM_CLOSED", raw(D, 0, b"x"), (E.SEND_RST_STREAM,),
             lambda w: wrote((RST, 0, fr.STREAM_CLOSED))(w) and w.stream().disconnected, refused=E.RECV_DATA),
    ],
    "HEADERS after END_STREAM": [
        Step("HEADERS + END_STREAM", headers(True), (E.RECV_HEADERS, E.RECV_END_STREAM)),
        Step("HEADERS on the ended side: STREAM_CLOSED", raw(H, EH | ES), (E.SEND_RST_STREAM,),
             wrote((RST, 0, fr.STREAM_CLOSED)), refused=E.RECV_HEADERS),
    ],
    "trailers without END_STREAM": [
        Step("HEADERS", headers(False), (E.RECV_HEADERS,)),
        Step("a second HEADERS without END_STREAM: PROTOCOL_ERROR", raw(H, EH), (E.RECV_HEADERS, E.SEND_RST_STREAM),
             wrote((RST, 0, fr.PROTOCOL_ERROR))),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_real_connection_follows_the_table(loop: asyncio.AbstractEventLoop, name: str) -> None:
    wire = Wire(loop)
    state = S.IDLE
    for step in SCENARIOS[name]:
        if step.refused is not None:
            assert (state, step.refused) not in TRANSITIONS
        step.do(wire)
        for event in step.events:
            assert (state, event) in TRANSITIONS, f"{event.name} is not allowed in {state.name}"
            state = TRANSITIONS[state, event]
        assert wire.state() is state, f"after {step.what!r}: {wire.state().name}, the table says {state.name}"
        assert (SID in wire.conn.streams) is (state is not S.CLOSED)  # a closed stream leaves the table
        assert step.check(wire), f"after {step.what!r}"
        assert not wire.conn.closed


def test_the_scenarios_walk_every_pair_of_the_table() -> None:
    walked: set[tuple[StreamState, StreamEvent]] = set()
    for steps in SCENARIOS.values():
        state = S.IDLE
        for step in steps:
            for event in step.events:
                walked.add((state, event))
                state = TRANSITIONS[state, event]
    assert walked == set(TRANSITIONS) - NOT_LASTING


def test_a_lost_connection_closes_every_stream(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire(loop)
    headers(False)(wire)
    wire.client.send_headers(3, REQUEST, end_stream=True)
    wire.send()
    first, second = wire.dispatched
    assert (first.state, second.state) == (S.OPEN, S.HALF_CLOSED_REMOTE)
    wire.conn.connection_lost(None)
    assert first.state is second.state is S.CLOSED
    assert first.disconnected and second.disconnected


def test_a_reset_stream_leaves_the_others_going(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire(loop)
    for sid in (1, 3):
        wire.client.send_headers(sid, REQUEST, end_stream=True)
    wire.send()
    first, second = wire.dispatched
    wire.client.reset_stream(1, fr.CANCEL)
    wire.send()
    assert (first.state, second.state) == (S.CLOSED, S.HALF_CLOSED_REMOTE)
    second.send_simple(200, b"ok")
    wire.settle()
    assert second.state is S.CLOSED and not wire.conn.streams
    frames: list[Any] = [(t, s) for t, _, s, _ in wire.frames()]
    assert frames == [(fr.HEADERS, 3), (fr.DATA, 3)]
