"""Tests for bascule.protocols.stream_pipe: the WebSocket pipe over an extended CONNECT stream, wire-neutral.

The wires' own tests (tests/protocols/h2, tests/protocols/h3/test_h3_websocket.py) run it over real HTTP/2
and HTTP/3 streams; here a recording wire and session pin down what the pipe asks of each, call by call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bascule.protocols.stream_pipe import StreamPipe


class Wire:
    """A StreamWire that records the pipe's calls: a response under way, both sides open, window to spare."""

    response_started, finished, disconnected, write_paused = True, False, False, False
    local_open = remote_open = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def send_body(self, data: bytes, end: bool = False) -> None:
        self.calls.append(("send", (data, end)))

    def can_send(self) -> bool:
        return self.local_open

    def peer_ended(self) -> bool:
        return not self.remote_open

    def reset_stream(self) -> None:
        self.local_open = self.remote_open = False
        self.calls.append(("reset", None))

    def consumed(self, n: int) -> None:
        self.calls.append(("consumed", n))

    def hold(self, n: int) -> None:
        self.calls.append(("hold", n))

    def release(self, n: int) -> None:
        self.calls.append(("release", n))


class Session:
    """A PipeSession that records what the pipe delivers."""

    def __init__(self) -> None:
        self.taking = True
        self.calls: list[tuple[str, Any]] = []

    def start(self, handler: Callable[[Any], None], leftover: bytes) -> None:
        self.calls.append(("start", leftover))

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))

    def pause_writing(self) -> None:
        self.calls.append(("pause_writing", None))

    def resume_writing(self) -> None:
        self.calls.append(("resume_writing", None))

    def takes_input(self) -> bool:
        return self.taking

    def input_ended(self) -> None:
        self.calls.append(("input_ended", None))


def make() -> tuple[StreamPipe, Wire, Session]:
    wire, session = Wire(), Session()
    pipe = StreamPipe(wire)
    pipe.ws = session
    return pipe, wire, session


def test_bytes_read_at_once_are_consumed_at_once() -> None:
    pipe, wire, session = make()
    pipe.feed(b"abc")
    pipe.feed(b"")  # an empty DATA frame: nothing for anyone
    assert session.calls == [("data", b"abc")]
    assert wire.calls == [("consumed", 3)]


def test_bytes_fed_while_paused_are_held_until_reading_resumes() -> None:
    pipe, wire, session = make()
    pipe.pause_reading()
    pipe.feed(b"abc")
    pipe.feed(b"de")
    assert session.calls == [("data", b"abc"), ("data", b"de")]  # the session still gets them: it buffers
    assert wire.calls == [("hold", 3), ("hold", 2)]  # a client that stops being read gets no more window
    pipe.resume_reading()
    pipe.resume_reading()  # nothing held any more: no second release
    assert wire.calls[2:] == [("release", 5)]
    pipe.feed(b"f")
    assert wire.calls[3:] == [("consumed", 1)]


def test_bytes_the_session_drops_are_consumed_even_while_paused() -> None:
    pipe, wire, session = make()
    pipe.pause_reading()
    pipe.feed(b"abc")
    session.taking = False  # closing, or a denied handshake: the bytes are dropped unread
    pipe.feed(b"xyz")
    assert session.calls == [("data", b"abc")]
    assert wire.calls == [("hold", 3), ("consumed", 3)]
    pipe.resume_reading()
    assert wire.calls[2:] == [("release", 3)]  # the held ones still come back


def test_writes_go_out_as_data_while_the_response_is_open() -> None:
    pipe, wire, session = make()
    pipe.write(b"ab")
    pipe.writelines([b"c", b"d"])
    pipe.write(b"")
    assert wire.calls == [("send", (b"ab", False)), ("send", (b"cd", False))]
    wire.write_paused = True
    pipe.write(b"e")
    assert session.calls == [("pause_writing", None)]
    wire.finished = True
    pipe.write(b"f")
    assert wire.calls[-1] == ("send", (b"e", False))


def test_nothing_is_written_before_the_handshake_is_answered() -> None:
    pipe, wire, _ = make()
    wire.response_started = False
    pipe.write(b"ab")
    pipe.close()
    assert wire.calls == [] and pipe.is_closing()


def test_close_ends_our_side_once_and_stops_writes() -> None:
    pipe, wire, _ = make()
    assert not pipe.is_closing()
    pipe.close()
    pipe.close()
    pipe.write(b"late")
    assert pipe.is_closing()
    assert wire.calls == [("send", (b"", True))]


def test_close_after_the_client_vanished_sends_nothing() -> None:
    pipe, wire, _ = make()
    wire.disconnected = True
    pipe.close()
    assert wire.calls == [] and pipe.is_closing()


def test_abort_resets_a_stream_still_open_on_our_side_only() -> None:
    pipe, wire, _ = make()
    pipe.abort()
    pipe.abort()  # the stream is reset already: once is all
    assert pipe.is_closing() and wire.calls == [("reset", None)]
    pipe, wire, _ = make()
    wire.local_open = False  # our END_STREAM/FIN is out: nothing to reset
    pipe.abort()
    assert pipe.is_closing() and wire.calls == []


def test_the_session_is_lost_once_both_sides_are_over() -> None:
    pipe, wire, session = make()
    wire.remote_open = False
    pipe.peer_done()  # the client ended; we have not
    assert session.calls == [("input_ended", None)]
    wire.local_open = False
    pipe.maybe_lost()
    pipe.maybe_lost()
    assert session.calls[1:] == [("lost", None)]


def test_a_vanished_client_counts_as_our_side_over() -> None:
    pipe, wire, session = make()
    pipe.maybe_lost()
    assert session.calls == []  # both sides open
    wire.disconnected = True
    pipe.maybe_lost()
    assert session.calls == []  # the client's side is not ended
    wire.remote_open = False
    pipe.maybe_lost()
    assert session.calls == [("lost", None)]


def test_writes_resume_only_when_the_stream_may_send() -> None:
    pipe, wire, session = make()
    wire.write_paused = True
    pipe.writable()
    assert session.calls == []
    wire.write_paused = False
    pipe.writable()
    assert session.calls == [("resume_writing", None)]
