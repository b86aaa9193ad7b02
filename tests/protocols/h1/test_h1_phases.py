"""HTTP/1.1 connection phases (protocols/h1/phases.py): the table pair by pair, then a real connection.

The table is checked against the phases written out again here, independently of the code. Then an
:class:`H1Connection` on a fake transport is driven with raw bytes (and its app's answers, its ticks, the
loss of its transport) through keep-alive, pipelining, bodies, 100-continue, Upgrades taken (h2c,
WebSocket, the HTTP/2 preface, the front door's sniff) and not taken, refusals and lingering closes,
with the upgrade registry filled as the server fills it. Each step of a scenario names the events it
causes, and the phase the connection reaches must be the one the table gives for them; every pair of the
table is walked by at least one scenario (the one the code keeps only as a defence is named).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.listen.accept import FrontDoor, install_upgrades
from bascule.listen.listeners import Listener
from bascule.protocols.exchange import Exchange
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h1.exchange import H1Exchange
from bascule.protocols.h1.phases import TRANSITIONS, Event, Phase

P = Phase
E = Event

EXPECTED: dict[tuple[Phase, Event], Phase] = {
    (P.IDLE, E.URL): P.HEAD,
    (P.IDLE, E.SWITCH): P.SWITCHED,
    (P.IDLE, E.UPGRADE_REFUSED): P.STOPPED,
    (P.IDLE, E.UPGRADE_BODY): P.UPGRADE_BODY,
    (P.IDLE, E.REFUSE): P.STOPPED,
    (P.IDLE, E.LOST): P.CLOSED,
    (P.HEAD, E.URL): P.HEAD,
    (P.HEAD, E.HEADERS_COMPLETE): P.BODY,
    (P.HEAD, E.SWITCH): P.SWITCHED,
    (P.HEAD, E.REFUSE): P.STOPPED,
    (P.HEAD, E.LOST): P.CLOSED,
    (P.BODY, E.MESSAGE_COMPLETE): P.IDLE,
    (P.BODY, E.REFUSE): P.STOPPED,
    (P.BODY, E.LINGER): P.LINGERING,
    (P.BODY, E.LOST): P.CLOSED,
    (P.UPGRADE_BODY, E.UPGRADE_BODY_READ): P.STOPPED,
    (P.UPGRADE_BODY, E.REFUSE): P.STOPPED,
    (P.UPGRADE_BODY, E.LINGER): P.LINGERING,
    (P.UPGRADE_BODY, E.LOST): P.CLOSED,
    (P.STOPPED, E.LINGER): P.LINGERING,
    (P.STOPPED, E.LOST): P.CLOSED,
    (P.LINGERING, E.LOST): P.CLOSED,
}
"""The phases of an HTTP/1.1 connection, written out independently of the code under test."""

DEFENSIVE = {(P.UPGRADE_BODY, E.REFUSE)}
"""Pairs the code handles but bytes cannot reach: an Upgrade body over --limit-request-body is refused with
its head (its length is declared), before any of it is read."""


# -- the table ------------------------------------------------------------------------------------------


def test_transition_table_is_the_spec() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("event", list(Event), ids=lambda e: e.name)
@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_every_phase_and_event_pair(phase: Phase, event: Event) -> None:
    assert TRANSITIONS.get((phase, event)) is EXPECTED.get((phase, event))


def test_switched_and_closed_are_final_and_every_phase_is_reachable() -> None:
    sources = {phase for phase, _ in TRANSITIONS}
    assert sources == set(Phase) - {P.SWITCHED, P.CLOSED}
    reached = {P.IDLE}
    while True:
        more = {TRANSITIONS[pair] for pair in TRANSITIONS if pair[0] in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(Phase)


def test_every_phase_that_owns_the_transport_can_lose_it() -> None:
    for phase in set(Phase) - {P.SWITCHED, P.CLOSED}:
        assert TRANSITIONS[phase, E.LOST] is P.CLOSED


# -- a connection on a fake transport -------------------------------------------------------------------


class Transport(FakeTransport):
    def __init__(self, *, eof: bool) -> None:
        super().__init__()
        self.eof_ok = eof
        self.eof = False
        self.protocol: Any = None

    def can_write_eof(self) -> bool:
        return self.eof_ok

    def write_eof(self) -> None:
        self.eof = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return 0


class Wire:
    """One H1Connection, the exchanges it dispatched, and the bytes it wrote."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, eof: bool = True, websocket: bool = False,
                 **options: Any) -> None:
        self.loop = loop
        self.dispatched: list[H1Exchange] = []
        self.sessions: list[Any] = []
        self.ctx = ServerContext(Config(app="x:y", access_log=False, **options), loop, self._dispatch,
                                 access_log=False)
        if websocket:
            self.ctx.websocket_route = lambda path: self.sessions.append
        install_upgrades(self.ctx)  # as the server does: HTTP/2 (h2c, a preface in pieces), WebSocket
        self.conn = H1Connection(self.ctx)
        self.transport = Transport(eof=eof)

    def _dispatch(self, ex: Exchange) -> None:
        assert isinstance(ex, H1Exchange)
        self.dispatched.append(ex)

    def open(self) -> None:
        self.transport.protocol = self.conn  # as a real transport knows the protocol it was made for
        self.conn.connection_made(self.transport)

    def feed(self, data: bytes) -> None:
        self.conn.data_received(data)
        self.settle()

    def settle(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))  # one loop pass: queued writes reach the transport

    def answer(self, body: bytes = b"ok") -> None:
        """The app of the request being answered replies at once, without reading the rest of its body."""
        ex = self.conn.active
        assert ex is not None
        ex.send_simple(200, body)
        self.settle()

    def read_body(self, ex: H1Exchange | None = None) -> bytes:
        """What the app reads of the active request's body (or ``ex``'s: a closed connection holds none)."""
        ex = ex or self.conn.active
        assert ex is not None
        task = self.loop.create_task(ex.receive_body())
        self.settle()
        return task.result() if task.done() else b"<waiting>"

    def tick(self, later: float) -> None:
        self.conn.on_tick(self.loop.time() + later)
        self.settle()

    def lose(self) -> None:
        self.conn.connection_lost(None)

    @property
    def out(self) -> bytes:
        return bytes(self.transport.out)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


def walk(phase: Phase, events: tuple[Event, ...]) -> Phase:
    for event in events:
        assert (phase, event) in TRANSITIONS, f"{event.name} is not allowed in {phase.name}"
        phase = TRANSITIONS[phase, event]
    return phase


@dataclass
class Step:
    """Something done to the connection, the events it causes in order, and a check of what else holds."""

    what: str
    do: Callable[[Wire], None]
    events: tuple[Event, ...]
    check: Callable[[Wire], object] = lambda w: True


GET = b"GET /%s HTTP/1.1\r\nhost: a\r\n\r\n"
POST5 = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n"
UPGRADE = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n"
UPGRADE5 = b"POST / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: foo\r\ncontent-length: 5\r\n\r\n"
H2C = (b"GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\n"
       b"http2-settings: AAMAAABkAAQAAP__\r\n\r\n")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WEBSOCKET = (b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
             b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def feed(data: bytes) -> Callable[[Wire], None]:
    return lambda w: w.feed(data)


def answer(w: Wire) -> None:
    w.answer()


def lose(w: Wire) -> None:
    w.lose()


def through_the_front_door(data: bytes) -> Callable[[Wire], None]:
    """The connection the front door (listen/accept.py) makes for a cleartext listener, HTTP/2 on: HTTP/1.1
    itself, which hands a first read opening with the HTTP/2 preface over."""
    def do(w: Wire) -> None:
        conn = FrontDoor(w.ctx, Listener("tcp", ("", 1))).protocol_factory()()
        assert isinstance(conn, H1Connection)
        w.conn = conn
        w.open()
        w.feed(data)
    return do


def start_reading(w: Wire) -> None:
    """The app of the request being answered starts reading its body (and waits for it)."""
    ex = w.conn.active
    assert ex is not None
    w.loop.create_task(ex.receive_body())
    w.settle()


AT_LIMIT = "refused at connection_made"
FRONT_DOOR = "the first read, through the front door"


def open_over_the_limit(w: Wire) -> None:
    w.ctx.limit_connections = 0  # --limit-connections reached
    w.open()
    w.settle()


def status_count(w: Wire, status: bytes) -> int:
    return w.out.count(b"HTTP/1.1 " + status + b" ")


SCENARIOS: dict[str, tuple[dict[str, Any], list[Step]]] = {
    "keep-alive": ({}, [
        Step("a head in two reads, the first", feed(b"GET /a HTTP/1.1\r\nhost: a\r\n"), (E.URL,),
             lambda w: w.conn.active is None and not w.dispatched),
        Step("its end: no body, dispatched", feed(b"\r\n"), (E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE),
             lambda w: w.conn.active is w.dispatched[0] and w.conn.idle_since is None),
        Step("answered: idle, kept alive", answer, (),
             lambda w: w.conn.active is None and w.conn.idle_since is not None and not w.transport.closing),
        Step("a second request in one read", feed(GET % b"b"), (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE),
             lambda w: len(w.dispatched) == 2),
        Step("answered", answer, (), lambda w: status_count(w, b"200") == 2),
        Step("keep-alive timeout", lambda w: w.tick(w.ctx.keep_alive_timeout + 1), (),
             lambda w: w.transport.closing),
        Step("the transport goes", lose, (E.LOST,)),
    ]),
    "split target": ({}, [
        Step("a target cut in two", feed(b"GET /pa"), (E.URL,)),
        Step("its second piece", feed(b"th HTTP/1.1\r\nhost: a\r\n"), (E.URL,)),
        Step("the head ends", feed(b"\r\n"), (E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE),
             lambda w: w.dispatched[0].raw_path == b"/path"),
    ]),
    "body": ({}, [
        Step("a head and part of its body", feed(POST5 + b"ab"), (E.URL, E.HEADERS_COMPLETE),
             lambda w: w.conn.active is w.dispatched[0]),
        Step("the rest of the body", feed(b"cde"), (E.MESSAGE_COMPLETE,), lambda w: w.read_body() == b"abcde"),
        Step("answered", answer, (), lambda w: w.conn.active is None and not w.transport.closing),
    ]),
    "pipelining": ({}, [
        Step("two requests and a third head begun, in one read",
             feed(GET % b"1" + GET % b"2" + b"GET /3 HTTP/1.1\r\nho"),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE) * 2 + (E.URL,),
             lambda w: w.conn.active is w.dispatched[0] and len(w.conn.queue) == 1 and w.transport.paused),
        Step("the first answered: the second is next", answer, (),
             lambda w: w.conn.active is w.dispatched[1] and not w.conn.queue and not w.transport.paused),
        Step("the third head ends", feed(b"st: a\r\n\r\n"), (E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE),
             lambda w: len(w.conn.queue) == 1),
        Step("the second answered", answer, (), lambda w: w.conn.active is w.dispatched[2]),
        Step("the third answered", answer, (), lambda w: w.conn.active is None and status_count(w, b"200") == 3),
    ]),
    "100-continue": ({}, [
        Step("a head asking for 100-continue", feed(POST5.replace(b"\r\n\r\n", b"\r\nexpect: 100-continue\r\n\r\n")),
             (E.URL, E.HEADERS_COMPLETE), lambda w: b"100 Continue" not in w.out),
        Step("the app reads: 100 Continue", start_reading, (),
             lambda w: b"HTTP/1.1 100 Continue\r\n\r\n" in w.out),
        Step("the body comes", feed(b"abcde"), (E.MESSAGE_COMPLETE,)),
        Step("answered, kept alive", answer, (), lambda w: not w.transport.closing),
    ]),
    "answered before the body: lingering close": ({}, [
        Step("a head and part of a body", feed(POST5 + b"ab"), (E.URL, E.HEADERS_COMPLETE)),
        Step("answered without reading it: FIN, then lingering", answer, (E.LINGER,),
             lambda w: w.transport.eof and not w.transport.closing and status_count(w, b"200") == 1),
        Step("what still arrives is dropped", feed(b"cde" + GET % b"x"), (), lambda w: len(w.dispatched) == 1),
        Step("the transport goes", lose, (E.LOST,)),
    ]),
    "garbage: refused, lingering": ({}, [
        Step("not a request", feed(b"\x01\x02\r\n\r\n"), (E.REFUSE, E.LINGER),
             lambda w: status_count(w, b"400") == 1 and w.transport.eof and not w.dispatched),
        Step("the transport goes", lose, (E.LOST,)),
    ]),
    "garbage without a half-close: refused, closed": ({"eof": False}, [
        Step("not a request", feed(b"\x01\x02\r\n\r\n"), (E.REFUSE,),
             lambda w: status_count(w, b"400") == 1 and w.transport.closing),
        Step("the transport goes", lose, (E.LOST,)),
    ]),
    "a bad field in a head": ({"eof": False}, [
        Step("a head begins", feed(b"GET / HTTP/1.1\r\nhost: a\r\n"), (E.URL,)),
        Step("a field without a colon", feed(b"bad field\r\n\r\n"), (E.REFUSE,),
             lambda w: status_count(w, b"400") == 1 and not w.dispatched),
    ]),
    "a bad chunk in a body": ({}, [
        Step("a chunked head", feed(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"),
             (E.URL, E.HEADERS_COMPLETE)),
        Step("a chunk size that is not hex", feed(b"zz\r\n"), (E.REFUSE, E.LINGER),
             lambda w: status_count(w, b"400") == 1 and w.dispatched[0].disconnected),
    ]),
    "a bad request behind one being answered": ({}, [
        Step("a good request, then garbage", feed(GET % b"1" + b"\x01bad\r\n\r\n"),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.REFUSE),
             lambda w: w.conn.active is w.dispatched[0] and b"400" not in w.out),
        Step("the first is answered, then the refusal", answer, (E.LINGER,),
             lambda w: w.out.index(b" 200 ") < w.out.index(b" 400 ")),
    ]),
    "head deadline": ({}, [
        Step("a head that stops", feed(b"GET / HTTP/1.1\r\nhost: a\r\n"), (E.URL,)),
        Step("past timeout_request_head", lambda w: w.tick(w.ctx.timeout_request_head + 1), (E.REFUSE, E.LINGER),
             lambda w: status_count(w, b"408") == 1),
    ]),
    "body deadline": ({}, [
        Step("a body that stops", feed(POST5 + b"ab"), (E.URL, E.HEADERS_COMPLETE)),
        Step("a first tick marks it", lambda w: w.tick(0), ()),
        Step("past timeout_body_idle", lambda w: w.tick(w.ctx.timeout_body_idle + 1), (E.REFUSE, E.LINGER),
             lambda w: status_count(w, b"408") == 1 and w.dispatched[0].disconnected),
    ]),
    "too many connections": ({}, [
        Step(AT_LIMIT, open_over_the_limit, (E.REFUSE, E.LINGER), lambda w: status_count(w, b"503") == 1),
    ]),
    "an Upgrade not taken": ({}, [
        Step("Upgrade: foo, no body", feed(UPGRADE), (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.UPGRADE_REFUSED),
             lambda w: w.conn.active is w.dispatched[0] and w.transport.paused),
        Step("served, then closed", answer, (), lambda w: status_count(w, b"200") == 1 and w.transport.closing),
        Step("the transport goes", lose, (E.LOST,)),
    ]),
    "an Upgrade not taken, with a body": ({}, [
        Step("Upgrade: foo and part of a body", feed(UPGRADE5 + b"ab"),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.UPGRADE_BODY),
             lambda w: not w.dispatched[0].body_done),
        Step("the rest of the body", feed(b"cde"), (E.UPGRADE_BODY_READ,), lambda w: w.read_body() == b"abcde"),
        Step("served, then closed", answer, (), lambda w: w.transport.closing),
    ]),
    "an Upgrade not taken, answered before its body": ({}, [
        Step("Upgrade: foo and part of a body", feed(UPGRADE5 + b"ab"),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.UPGRADE_BODY)),
        Step("answered: lingering", answer, (E.LINGER,), lambda w: w.transport.eof),
        Step("the transport goes", lose, (E.LOST,), lambda w: w.dispatched[0].disconnected),
    ]),
    "an Upgrade with a chunked body": ({}, [
        Step("refused with 501", feed(UPGRADE5.replace(b"content-length: 5", b"transfer-encoding: chunked")),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.REFUSE, E.LINGER),
             lambda w: status_count(w, b"501") == 1 and not w.dispatched),
    ]),
    "h2c": ({}, [
        Step("Upgrade: h2c, head begun", feed(H2C[:-2]), (E.URL,)),
        Step("its end: 101, handed to HTTP/2", feed(H2C[-2:]), (E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.SWITCH),
             lambda w: b"101 Switching Protocols" in w.out and w.transport.protocol is not None
             and w.conn.closed and w.conn not in w.ctx.connections),
    ]),
    "HTTP/2 preface": ({}, [
        Step("the preface begins", feed(PREFACE[:8]), (E.URL,)),
        Step("the rest of it: handed to HTTP/2", feed(PREFACE[8:]), (E.SWITCH,),
             lambda w: w.transport.protocol is not None and w.conn.closed),
    ]),
    "the front door's connection, a preface first": ({}, [
        Step(FRONT_DOOR, through_the_front_door(PREFACE), (E.SWITCH,),
             lambda w: w.transport.protocol is not None and w.conn.closed and w.conn not in w.ctx.connections),
    ]),
    "the front door's connection, HTTP/1.1 first": ({}, [
        Step(FRONT_DOOR, through_the_front_door(GET % b"a"), (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE),
             lambda w: w.transport.protocol is w.conn and w.conn.active is w.dispatched[0]),
    ]),
    "WebSocket": ({"websocket": True}, [
        Step("Upgrade: websocket, head begun", feed(WEBSOCKET[:-2]), (E.URL,)),
        Step("its end: handed to WebSocket", feed(WEBSOCKET[-2:]), (E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.SWITCH),
             lambda w: len(w.sessions) == 1 and w.transport.protocol is not None and w.conn.closed
             and not w.dispatched),
    ]),
    "HTTP/2 preface in one read": ({}, [
        Step("the preface", feed(PREFACE), (E.URL, E.SWITCH), lambda w: w.transport.protocol is not None),
    ]),
    "lost while idle": ({}, [Step("the transport goes", lose, (E.LOST,))]),
    "lost in a head": ({}, [
        Step("a head begins", feed(b"GET /"), (E.URL,)),
        Step("the transport goes", lose, (E.LOST,)),
    ]),
    "lost in a body": ({}, [
        Step("a body begins", feed(POST5 + b"ab"), (E.URL, E.HEADERS_COMPLETE)),
        Step("the transport goes: the app sees it", lose, (E.LOST,),
             lambda w: w.dispatched[0].disconnected and w.read_body(w.dispatched[0]) == b"ab"),
    ]),
    "lost in an Upgrade body": ({}, [
        Step("Upgrade: foo and part of a body", feed(UPGRADE5 + b"ab"),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.UPGRADE_BODY)),
        Step("the transport goes", lose, (E.LOST,), lambda w: w.dispatched[0].disconnected),
    ]),
    "lost while stopped": ({}, [
        Step("Upgrade: foo, no body", feed(UPGRADE),
             (E.URL, E.HEADERS_COMPLETE, E.MESSAGE_COMPLETE, E.UPGRADE_REFUSED)),
        Step("the transport goes", lose, (E.LOST,), lambda w: w.dispatched[0].disconnected),
    ]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_real_connection_follows_the_table(loop: asyncio.AbstractEventLoop, name: str) -> None:
    options, steps = SCENARIOS[name]
    wire = Wire(loop, **options)
    if steps[0].what not in (AT_LIMIT, FRONT_DOOR):
        wire.open()
    phase = P.IDLE
    assert wire.conn.phase is phase
    for step in steps:
        step.do(wire)
        phase = walk(phase, step.events)
        assert wire.conn.phase is phase, f"after {step.what!r}: {wire.conn.phase.name}, the table says {phase.name}"
        assert wire.conn.closed is (phase in (P.SWITCHED, P.CLOSED))
        assert step.check(wire), f"after {step.what!r}"


def test_the_scenarios_walk_every_pair_of_the_table() -> None:
    walked: set[tuple[Phase, Event]] = set()
    for _, steps in SCENARIOS.values():
        phase = P.IDLE
        for step in steps:
            for event in step.events:
                walked.add((phase, event))
                phase = TRANSITIONS[phase, event]
    assert walked == set(TRANSITIONS) - DEFENSIVE


def test_a_lingering_connection_is_not_ticked_into_anything(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire(loop)
    wire.open()
    wire.feed(b"\x01\r\n\r\n")
    assert wire.conn.phase is P.LINGERING
    wire.tick(1e6)  # every deadline long past
    assert wire.conn.phase is P.LINGERING
    assert wire.out.count(b"HTTP/1.1 ") == 1
