"""StreamExchange (protocols/stream_exchange.py): the HTTP/2 and HTTP/3 response rules, seen through a wire
that only records what it was asked to write. The h2 and h3 suites check the same rules on the real wires;
these pin the hooks' contract (what a wire is asked, in what order) independently of either."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import AppProtocolError
from bascule.protocols.exchange import Headers
from bascule.protocols.stream_exchange import StreamExchange


class RecordingStream(StreamExchange):
    """A wire whose fields are ``b"name: value"`` lines, whose blocks are lists of them, and whose frames are
    recorded rather than written."""

    def __init__(self, method: str = "GET", loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.method, self.raw_path, self.http_version, self.start_time = method, b"/", "9", 0.0
        self.disconnected = self.response_started = self.write_paused = self.expect_continue = False
        self.status = self.sent = 0
        self.cancel_app = None
        if loop is not None:
            self.loop = loop
        self.frames: list[tuple[Any, ...]] = []
        self.done = 0
        self.aborted = 0
        self.credited: list[int] = []

    def _encode_head(self, status: int, headers: Headers) -> tuple[Any, list[Any], int | None]:
        declared = [int(value) for name, value in headers if name == b"content-length"]
        return b":status: %d" % status, [self._field(*pair) for pair in headers], declared[0] if declared else None

    def _length_field(self, length: int) -> Any:
        return b"content-length: %d" % length

    def _drop_length(self, parts: list[Any]) -> list[Any]:
        return [line for line in parts if not line.startswith(b"content-length:")]

    def _field(self, name: bytes, value: bytes) -> Any:
        return name + b": " + value

    def _interim_block(self, status: Any, parts: list[Any]) -> Any:
        return [status, *parts]

    def _final_block(self, status: Any, parts: list[Any]) -> Any:
        return [status, b"server: test", *parts]

    def _wire_headers(self, block: Any, end: bool) -> None:
        self.frames.append(("headers", block, end))

    def _wire_whole(self, block: Any, body: bytes) -> None:
        self.frames.append(("whole", block, body))

    def _wire_data(self, data: bytes, end: bool) -> None:
        self.frames.append(("data", data, end))

    def _wire_trailers(self, trailers: Headers) -> None:
        self.frames.append(("trailers", trailers))

    def _admit(self, n: int) -> bool:
        return not self.finished

    def _body_taken(self, n: int) -> None:
        self.credited.append(n)

    def _response_done(self) -> None:
        self.done += 1

    def abort(self) -> None:
        self.aborted += 1
        self.finished = True
        self.on_disconnect()


def test_a_complete_response_is_one_whole_write_with_its_length() -> None:
    st = RecordingStream()
    st.send_head(200, [(b"content-type", b"text/plain")], b"hello", end=True)
    assert st.frames == [("whole", [b":status: 200", b"server: test", b"content-type: text/plain",
                                    b"content-length: 5"], b"hello")]
    assert st.finished and st.done == 1 and st.sent == 5


def test_the_request_id_echo_follows_the_apps_fields() -> None:
    st = RecordingStream()
    st.rid, st.rid_header = "abc", b"x-request-id"
    st.send_head(204, [], end=True)
    assert st.frames[0][1][-1] == b"x-request-id: abc"


def test_head_keeps_the_declared_length_and_sends_no_body() -> None:
    st = RecordingStream("HEAD")
    st.send_head(200, [(b"content-length", b"10")])
    st.send_body(b"0123456789", end=True)
    assert st.frames == [("headers", [b":status: 200", b"server: test", b"content-length: 10"],
                          False), ("data", b"", True)]
    assert st.sent == 0 and st.finished


def test_a_204_drops_the_apps_content_length() -> None:
    st = RecordingStream()
    st.send_head(204, [(b"content-length", b"0")], end=True)
    assert st.frames == [("headers", [b":status: 204", b"server: test"], True)]


def test_bytes_past_the_declared_length_reset_the_stream_unsent() -> None:
    st = RecordingStream()
    st.send_head(200, [(b"content-length", b"3")], b"abcd")
    assert st.frames == [] and st.aborted == 1  # nor the head they came with


def test_a_body_short_of_its_length_goes_out_then_the_stream_resets() -> None:
    st = RecordingStream()
    st.send_head(200, [(b"content-length", b"5")])
    st.send_body(b"ab", end=True)
    assert [frame[0] for frame in st.frames] == ["headers", "data"]
    assert st.frames[1] == ("data", b"ab", False) and st.aborted == 1


def test_trailers_end_the_response_not_the_last_body_bytes() -> None:
    st = RecordingStream()
    st.send_head(200, [], b"a", trailers=True)
    st.send_body(b"b", end=True)
    assert not st.finished
    st.send_trailers([(b"x-checksum", b"1")])
    assert st.frames[1:] == [("data", b"a", False), ("data", b"b", False), ("trailers", [(b"x-checksum", b"1")])]
    assert st.finished and st.done == 1


def test_interim_responses_carry_only_the_apps_fields() -> None:
    st = RecordingStream()
    st.send_informational(103, [(b"link", b"</a.css>; rel=preload")])
    st.send_head(100, [])
    assert st.frames == [("headers", [b":status: 103", b"link: </a.css>; rel=preload"], False),
                         ("headers", [b":status: 100"], False)]
    assert not st.response_started


def test_101_names_the_wires_version() -> None:
    with pytest.raises(AppProtocolError, match="HTTP/9"):
        RecordingStream().send_head(101, [])


def test_the_first_read_sends_100_continue_and_takes_the_body() -> None:
    async def main() -> None:
        st = RecordingStream(loop=asyncio.get_running_loop())
        st.expect_continue = True
        st._body = [b"ab", b"c"]
        st.end_body()
        assert await st.receive_body() == b"abc"
        assert st.frames == [] and st.credited == [3]  # the body was all there: no 100 Continue
        st2 = RecordingStream(loop=asyncio.get_running_loop())
        st2.expect_continue = True
        asyncio.get_running_loop().call_soon(st2.end_body)
        assert await st2.receive_body() == b""
        assert st2.frames == [("headers", [b":status: 100"], False)]

    asyncio.run(main())


def test_feed_buffers_what_the_wire_admits() -> None:
    st = RecordingStream()
    st.feed(b"")
    st.feed(b"ab")
    st.feed(b"c")
    assert st.received == 3 and st.take_buffered_body() is None  # not complete yet
    st.finished = True  # the response is over: the wire admits nothing more
    st.feed(b"dd")
    st.end_body()
    assert st.received == 5 and st.take_buffered_body() == b"abc" and st.credited == [3]


def test_take_on_starts_the_clock_and_reports_the_request() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ctx = ServerContext(Config(app="a:b"), loop, lambda ex: None, access_log=False)
        st = RecordingStream(loop=loop)
        st.take_on(ctx)
        assert st.start_time > 0 and st.live  # live: the context took it on (request_finished must follow)

    asyncio.run(main())


def test_sendfile_is_refused_by_name() -> None:
    st = RecordingStream()
    assert not st.can_sendfile
    with pytest.raises(RuntimeError, match="HTTP/9"):
        st.send_file_blocking(None, 0, 0)  # type: ignore[arg-type]
