"""Tests for bascule.gateways.asgi_ws: the WebSocket message state machine, pair by pair, on a fake session.

The session records what the cycle asked of the protocol, so each (state, message) pair is checked for
its effect as well as for being allowed; every pair outside TRANSITIONS must raise AppProtocolError and
leave the state and the session untouched.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import Any, cast

import pytest

from bascule.errors import AppProtocolError
from bascule.gateways.asgi_ws import TRANSITIONS, WebSocketCycle, WSState
from bascule.protocols.exchange import ClientDisconnected, Headers, WebSocketClosed, WebSocketSession

MESSAGES: dict[str, dict[str, Any]] = {
    "websocket.accept": {"type": "websocket.accept"},
    "websocket.send": {"type": "websocket.send", "text": "hi"},
    "websocket.close": {"type": "websocket.close", "code": 1000},
    "websocket.http.response.start": {"type": "websocket.http.response.start", "status": 403, "headers": []},
    "websocket.http.response.body": {"type": "websocket.http.response.body", "body": b"no", "more_body": True},
    "http.response.start": {"type": "http.response.start", "status": 200},
    "websocket.connect": {"type": "websocket.connect"},
    "websocket.receive": {"type": "websocket.receive", "text": "x"},
    "websocket.disconnect": {"type": "websocket.disconnect", "code": 1000},
}


class FakeSession(WebSocketSession):
    """Records calls; ``incoming`` feeds receive()."""

    def __init__(self, incoming: list[str | bytes | WebSocketClosed] | None = None, closed: bool = False) -> None:
        self.http_version = "1.1"
        self.scheme = "ws"
        self.raw_path = b"/ws"
        self.query_string = b""
        self.headers: Headers = []
        self.client = ("127.0.0.1", 1)
        self.server = ("127.0.0.1", 2)
        self.subprotocols = ["chat"]
        self.loop = cast(asyncio.AbstractEventLoop, None)  # only used by apps that suspend: none here
        self.calls: list[tuple[Any, ...]] = []
        self.incoming = list(incoming or [])
        self.closed = closed

    async def receive(self) -> str | bytes | WebSocketClosed:
        return self.incoming.pop(0) if self.incoming else WebSocketClosed(1000, "bye")

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise AppProtocolError("not offered")
        self.calls.append(("accept", subprotocol, headers))

    async def send(self, data: str | bytes) -> None:
        if self.closed:
            raise ClientDisconnected("gone")
        self.calls.append(("send", data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.calls.append(("close", code, reason))

    def deny_start(self, status: int, headers: Headers) -> None:
        self.calls.append(("deny_start", status, headers))

    def deny_body(self, body: bytes, more: bool) -> None:
        self.calls.append(("deny_body", body, more))

    def deny_simple(self, status: int, body: bytes) -> None:
        self.calls.append(("deny_simple", status))

    def abort(self) -> None:
        self.calls.append(("abort",))


def run(coro: Awaitable[Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def cycle_in(state: WSState, session: FakeSession | None = None) -> WebSocketCycle:
    cycle = WebSocketCycle(session or FakeSession())
    cycle.state = state
    cycle.connect_sent = True
    return cycle


@pytest.mark.parametrize(("state", "mtype"), list(itertools.product(WSState, MESSAGES)))
def test_every_state_and_message_pair(state: WSState, mtype: str) -> None:
    session = FakeSession()
    cycle = cycle_in(state, session)
    allowed = TRANSITIONS.get((state, mtype))
    if allowed is None:
        with pytest.raises(AppProtocolError, match="not allowed"):
            run(cycle.send(dict(MESSAGES[mtype])))
        assert cycle.state is state
        assert session.calls == []
    else:
        run(cycle.send(dict(MESSAGES[mtype])))
        assert cycle.state in allowed
        assert session.calls


def test_transitions_only_name_real_states_and_server_messages() -> None:
    for (state, mtype), targets in TRANSITIONS.items():
        assert isinstance(state, WSState) and targets <= set(WSState)
        assert mtype.startswith("websocket.") and mtype not in ("websocket.connect", "websocket.receive",
                                                                 "websocket.disconnect")
    assert not any(state is WSState.CLOSED for state, _ in TRANSITIONS)


def test_close_before_accept_is_a_403() -> None:
    session = FakeSession()
    run(cycle_in(WSState.CONNECTING, session).send({"type": "websocket.close", "code": 4000}))
    assert session.calls == [("deny_simple", 403)]


def test_accept_passes_subprotocol_and_headers() -> None:
    session = FakeSession()
    cycle = cycle_in(WSState.CONNECTING, session)
    run(cycle.send({"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-a", b"1")]}))
    assert session.calls == [("accept", "chat", [(b"x-a", b"1")])]
    assert cycle.state is WSState.OPEN


def test_accept_with_a_subprotocol_not_offered_fails_and_stays_connecting() -> None:
    cycle = cycle_in(WSState.CONNECTING)
    with pytest.raises(AppProtocolError):
        run(cycle.send({"type": "websocket.accept", "subprotocol": "nope"}))
    assert cycle.state is WSState.CONNECTING


@pytest.mark.parametrize("message", [
    {"type": "websocket.send"},
    {"type": "websocket.send", "text": "a", "bytes": b"b"},
    {"type": "websocket.send", "text": b"bytes as text"},
    {"type": "websocket.send", "bytes": "text as bytes"},
    {"type": "websocket.close", "code": "1000"},
    {"nope": 1},
])
def test_malformed_messages_are_app_errors(message: dict[str, Any]) -> None:
    with pytest.raises(AppProtocolError):
        run(cycle_in(WSState.OPEN).send(message))


def test_send_bytes_and_close_with_reason() -> None:
    session = FakeSession()
    cycle = cycle_in(WSState.OPEN, session)
    run(cycle.send({"type": "websocket.send", "bytes": bytearray(b"ab"), "text": None}))
    run(cycle.send({"type": "websocket.close", "code": 4001, "reason": "done"}))
    assert session.calls == [("send", b"ab"), ("close", 4001, "done")]
    assert cycle.state is WSState.CLOSED


def test_denial_response_start_then_body_until_the_last() -> None:
    session = FakeSession()
    cycle = cycle_in(WSState.CONNECTING, session)
    run(cycle.send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"a", b"b")]}))
    run(cycle.send({"type": "websocket.http.response.body", "body": b"x", "more_body": True}))
    assert cycle.state is WSState.RESPONSE
    run(cycle.send({"type": "websocket.http.response.body", "body": b"y"}))
    assert cycle.state is WSState.CLOSED
    assert session.calls == [("deny_start", 401, [(b"a", b"b")]), ("deny_body", b"x", True), ("deny_body", b"y", False)]


def test_send_after_the_client_left_raises_client_disconnected() -> None:
    cycle = cycle_in(WSState.OPEN, FakeSession(closed=True))
    with pytest.raises(ClientDisconnected):
        run(cycle.send({"type": "websocket.send", "text": "late"}))
    assert isinstance(ClientDisconnected(), OSError)  # ASGI 2.4 asks for an OSError


def test_receive_order_connect_then_messages_then_disconnect() -> None:
    session = FakeSession(["t", b"b", WebSocketClosed(1001, "away")])
    cycle = WebSocketCycle(session)
    got = [run(cycle.receive()) for _ in range(5)]
    assert got == [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "t"},
        {"type": "websocket.receive", "bytes": b"b"},
        {"type": "websocket.disconnect", "code": 1001, "reason": "away"},
        {"type": "websocket.disconnect", "code": 1000, "reason": "bye"},
    ]


@pytest.mark.parametrize(("state", "expected"), [
    (WSState.CONNECTING, ("deny_simple", 500)),
    (WSState.OPEN, ("close", 1011, "internal error")),
    (WSState.RESPONSE, ("abort",)),
])
def test_app_failure_in_each_state(state: WSState, expected: tuple[Any, ...]) -> None:
    session = FakeSession()
    cycle = cycle_in(state, session)
    cycle.failed(RuntimeError("boom"))
    assert session.calls == [expected]
    assert cycle.state is WSState.CLOSED


@pytest.mark.parametrize(("state", "cancelled", "expected"), [
    (WSState.CONNECTING, False, [("deny_simple", 500)]),
    (WSState.CONNECTING, True, [("deny_simple", 503)]),
    (WSState.OPEN, False, [("close", 1000, "")]),
    (WSState.OPEN, True, [("close", 1001, "server shutting down")]),
    (WSState.RESPONSE, False, [("abort",)]),
    (WSState.CLOSED, False, []),
])
def test_app_return_in_each_state(state: WSState, cancelled: bool, expected: list[tuple[Any, ...]]) -> None:
    session = FakeSession()
    cycle_in(state, session).ended(cancelled=cancelled)
    assert session.calls == expected


def test_an_app_that_raises_before_accepting_gets_a_500() -> None:
    session = FakeSession()

    async def app() -> None:
        raise RuntimeError("boom")

    async def go() -> None:
        session.loop = asyncio.get_running_loop()
        cycle = WebSocketCycle(session)
        await cycle.start(app())
        assert session.calls == [("deny_simple", 500)]

    asyncio.run(go())
