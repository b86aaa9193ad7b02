"""H1Exchange.send_from_thread (a WSGI pool thread writing a complete response itself, protocols/thread_writer.py)
against what the loop does to the same request at the same moment. A real uvloop connection; the interleavings
are forced: a logging handler that runs while the loop is between a check and the write it decides on (logging
is Python code that writes to a stream, so the GIL can pass there in any build) starts the pool thread's send."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
import uvloop

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h1.exchange import H1Exchange
from bascule.protocols.http1x import status_line


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
def served() -> Iterator[Callable[..., Any]]:
    """Run ``body(conn, ex, reader, writer)`` on a uvloop with one H1Connection holding one active GET request
    (the app never answers: dispatch does nothing)."""
    loop = uvloop.new_event_loop()
    ctx = ServerContext(Config(app="x:y", access_log=False), loop, lambda ex: None, access_log=False)
    conns: list[H1Connection] = []

    def factory() -> H1Connection:
        conn = H1Connection(ctx)
        conns.append(conn)
        return conn

    def run(body: Callable[..., Any], observer: Any = None) -> None:
        if observer is not None:
            ctx.observe(observer)

        async def main() -> None:
            server = await loop.create_server(factory, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await _until(lambda: len(conns) == 1 and conns[0].active is not None)
            conn = conns[0]
            ex = conn.active
            assert isinstance(ex, H1Exchange)
            try:
                await body(conn, ex, reader, writer)
            finally:
                writer.close()
                server.close()
                await server.wait_closed()

        loop.run_until_complete(main())

    try:
        yield run
    finally:
        loop.close()


def _paused_before_the_claim(action: Callable[[], Any]) -> tuple[threading.Thread, threading.Event, threading.Event,
                                                             list[Any]]:
    """Run ``action`` (a send_from_thread call) on a thread that stops on send_from_thread's claim (the line that
    tests response_started), having made the checks before it, until ``go`` is set. Interpreted code only (a
    line trace)."""
    source, first = inspect.getsourcelines(H1Exchange.send_from_thread)
    stop_line = first + next(i for i, line in enumerate(source) if "if self.response_started or" in line)
    past, go = threading.Event(), threading.Event()
    results: list[Any] = []

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == stop_line:
            past.set()
            go.wait(5)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_name == "send_from_thread" else None

    def run() -> None:
        sys.settrace(tracer)
        try:
            results.append(action())
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=run)
    thread.start()
    assert past.wait(5)
    return thread, past, go, results


async def _thread_writes_ok(ex: H1Exchange) -> bytes:
    """The pool thread's whole response to ``ex`` (200, "ok"), written by send_from_thread from an executor
    thread, as the WSGI gateway's thread would; what the socket did not take (nothing)."""
    ex.prepare_thread_send()
    rest = await asyncio.get_running_loop().run_in_executor(
        None, ex.send_from_thread, 200, [(b"content-length", b"2")], b"ok")
    assert rest == b""  # all of it taken by the socket
    return rest


class _OnLog(logging.Handler):
    """Calls ``action`` once, while the loop logs."""

    def __init__(self, action: Callable[[], Any]) -> None:
        super().__init__()
        self.action: Callable[[], Any] | None = action

    def emit(self, record: logging.LogRecord) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


@pytest.mark.skipif(not hasattr(H1Exchange.send_from_thread, "__code__"), reason="compiled: no line trace")
def test_a_thread_send_during_the_timeout_is_either_the_response_or_the_504(served: Callable[..., Any]) -> None:
    """--timeout-request expires as the app's thread sends: the thread has made its first checks (keep-alive
    among them), then the loop times the request out and decides on a 504 (nothing started), and while it logs
    that, the thread claims and writes the app's response. The 504 must not follow it (nor raise "already
    started" out of on_tick, which would stop the server's tick for every connection): exactly one response
    reaches the client, then the connection closes."""
    async def body(conn: H1Connection, ex: H1Exchange, reader: asyncio.StreamReader, _w: Any) -> None:
        ex.prepare_thread_send()
        assert conn.writer is not None
        status_line(200)  # known (cached) status lines only are the thread's
        thread, _past, go, results = _paused_before_the_claim(
            lambda: ex.send_from_thread(200, [(b"content-length", b"2")], b"ok"))
        logger = logging.getLogger("bascule.error")
        handler = _OnLog(lambda: (go.set(), thread.join(2)))  # the thread goes on while the loop is in logging
        logger.addHandler(handler)
        try:
            conn._app_timed_out(ex, 1.0)
        finally:
            go.set()
            logger.removeHandler(handler)
        thread.join(5)
        assert not thread.is_alive() and len(results) == 1
        rest = results[0]
        if rest is not None:  # the thread's claim came first: it finishes on the loop, as the gateway would post it
            ex.finish_thread_send(rest)
        data = await asyncio.wait_for(reader.read(), 5)  # everything, up to the close
        assert data.count(b"HTTP/1.1 ") == 1, data
        assert data.startswith((b"HTTP/1.1 504 ", b"HTTP/1.1 200 ")), data

    served(body)


class _Finished:
    """A request observer noting each finished exchange's (status, dropped)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    def request_started(self, ex: Any) -> None:
        return

    def request_finished(self, ex: Any) -> None:
        self.seen.append((ex.status, ex.dropped))


def test_a_response_the_thread_wrote_whole_is_not_counted_dropped_when_the_client_closes_first(
        served: Callable[..., Any]) -> None:
    """The pool thread wrote the whole response; the client read it and closed, and the loop saw the close before
    the thread's completion (finish_thread_send) reached it (a loop busy with other connections). The client got
    its response: the access log and metrics must say 200, as the loop's own write would have, not 499."""
    observer = _Finished()

    async def body(conn: H1Connection, ex: H1Exchange, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        rest = await _thread_writes_ok(ex)
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), 5)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()
        await _until(lambda: conn.closed)  # the close came first
        ex.finish_thread_send(rest)  # the completion, late
        await loop.shutdown_default_executor()

    served(body, observer)
    assert observer.seen == [(200, False)]



def test_the_next_request_completes_a_response_the_thread_wrote_whole_and_goes_ahead(
        served: Callable[..., Any]) -> None:
    """The pool thread wrote the whole response, the client read it and sent its next request, and the loop
    read that before the thread's completion reached it: the response is completed then (200, once), the next
    request becomes the active one at once, reading is not paused, and the late completion changes nothing."""
    observer = _Finished()

    async def body(conn: H1Connection, ex: H1Exchange, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        rest = await _thread_writes_ok(ex)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), 5)
        writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        await _until(lambda: conn.active is not ex)
        nxt = conn.active
        assert nxt is not None and nxt.raw_path == b"/next"
        assert ex.finished and observer.seen == [(200, False)]
        assert not conn.queue and conn.outbox.paused_by == 0
        ex.finish_thread_send(rest)  # the completion, late
        assert conn.active is nxt and observer.seen == [(200, False)]
        await loop.shutdown_default_executor()

    served(body, observer)


def test_a_request_after_a_thread_response_the_504_ended_stays_queued(served: Callable[..., Any]) -> None:
    """The same, but keep-alive was cleared after the thread's claim, as the loop's 504 clears it first (the
    thread's response went out): the connection closes after that response, so the next request is not
    served."""
    observer = _Finished()

    async def body(conn: H1Connection, ex: H1Exchange, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        rest = await _thread_writes_ok(ex)
        ex.keep_alive = False  # as H1Connection._app_timed_out does first
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), 5)
        writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        await _until(lambda: len(conn.queue) == 1)
        assert conn.active is ex and not ex.finished
        ex.finish_thread_send(rest)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, /next never answered
        await loop.shutdown_default_executor()

    served(body, observer)
    assert observer.seen[0] == (200, False)


def test_a_request_after_a_thread_response_with_requests_queued_stays_queued(served: Callable[..., Any]) -> None:
    """Requests queued already behind the thread's response (pipelined): the next head parsed must not complete
    that response, which would dispatch the first queued request from inside the parser's callback; it
    queues behind them, and the completion serves them in order."""
    async def body(conn: H1Connection, ex: H1Exchange, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        await _until(lambda: len(conn.queue) == 1)  # behind the active request; reading paused
        rest = await _thread_writes_ok(ex)
        assert ex.thread_wrote_all
        conn.data_received(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")  # as if read with /one
        assert conn.active is ex and not ex.finished
        assert [q.raw_path for q in conn.queue] == [b"/one", b"/two"]
        ex.finish_thread_send(rest)  # the completion: /one goes ahead, /two waits behind it
        assert conn.active is not None and conn.active.raw_path == b"/one"
        assert [q.raw_path for q in conn.queue] == [b"/two"]
        await loop.shutdown_default_executor()

    served(body)
