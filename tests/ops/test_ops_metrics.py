"""The worker-side collector (bascule.ops.metrics) on a real in-process server: what it counts per request,
the gauges it reads at snapshot time, the lag probe, the snapshots it publishes, and its options."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import serve_in_thread
from websockets.sync.client import connect

from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import ConfigError
from bascule.ops import metrics as m
from bascule.ops.merge import Totals
from bascule.protocols.exchange import Exchange
from bascule.workers import HEARTBEAT, SNAPSHOT, Reporter, frame, unframe


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def collector(srv: Any) -> m.Collector:
    metrics = srv.server.metrics
    assert isinstance(metrics, m.Collector)
    return metrics


def wait_requests(col: m.Collector, count: int, timeout: float = 5.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    snap: dict[str, Any] = {}
    while time.monotonic() < end:
        snap = col.snapshot()
        if sum(row[3] for row in snap["requests"]) >= count:
            return snap
        time.sleep(0.02)
    return snap


def test_counts_by_method_status_and_protocol_with_bytes_and_durations() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        with httpx.Client() as client:
            for _ in range(3):
                assert client.get(srv.url + "/").status_code == 200
            assert client.post(srv.url + "/missing", content=b"abcdef").status_code == 404
        with httpx.Client(http1=False, http2=True) as client:  # h2c with prior knowledge
            assert client.get(srv.url + "/").status_code == 200
        snap = wait_requests(collector(srv), 5)
    rows = {(meth, status, proto): n for meth, status, proto, n in snap["requests"]}
    assert rows == {("GET", "200", "http/1.1"): 3, ("POST", "404", "http/1.1"): 1, ("GET", "200", "h2"): 1}
    assert sum(snap["duration"]) == 5
    assert snap["received"] == 6
    assert snap["sent"] == 25
    assert snap["bounds"] == list(m.DEFAULT_BUCKETS)
    assert snap["pid"] == os.getpid()
    totals = Totals.of(json.loads(json.dumps(snap)))  # JSON-ready, and what the master reads
    assert totals.requests_total == 5


def test_durations_are_finer_than_the_loops_millisecond_clock() -> None:
    """uvloop's loop.time() counts whole milliseconds once per pass: durations come from perf_counter."""
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        with httpx.Client() as client:
            for _ in range(20):
                assert client.get(srv.url + "/").status_code == 200
        snap = wait_requests(collector(srv), 20)
    total_ms = snap["duration_sum"] * 1000.0
    assert total_ms > 0 and abs(total_ms - round(total_ms)) > 1e-6  # not a sum of whole milliseconds


def test_durations_land_in_their_bucket() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off", metrics_buckets="0.1,0.25,1") as srv:
        with httpx.Client() as client:
            client.get(srv.url + "/slow")
            client.get(srv.url + "/")
        snap = wait_requests(collector(srv), 2)
    assert snap["bounds"] == [0.1, 0.25, 1.0]
    assert snap["duration"] == [1, 0, 1, 0]  # / fast; /slow 0.5 s
    assert 0.45 < snap["duration_sum"] < 1.5


def test_a_client_gone_first_is_a_499_without_a_duration() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.1)
        snap = wait_requests(collector(srv), 1)
    assert [row[:3] for row in snap["requests"]] == [["GET", m.DROPPED_STATUS, "http/1.1"]]
    assert sum(snap["duration"]) == 0


def test_other_methods_are_folded() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        with httpx.Client() as client:
            client.request("PROPFIND", srv.url + "/")
            client.request("MKCOL", srv.url + "/")
        snap = wait_requests(collector(srv), 2)
    assert [row[:4] for row in snap["requests"]] == [["other", "200", "http/1.1", 2]]


def test_static_hits(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"static\n")
    with serve_in_thread(app, metrics=True, lifespan="off", static=(f"/s={tmp_path}",)) as srv:
        with httpx.Client() as client:
            assert client.get(srv.url + "/s/a.txt").status_code == 200
            assert client.get(srv.url + "/s/nope.txt").status_code == 404
            assert client.get(srv.url + "/").status_code == 200  # the app: not static
        snap = wait_requests(collector(srv), 3)
    assert sorted(snap["static"]) == [["200", 1], ["404", 1]]


def test_connections_and_websockets_are_read_at_snapshot_time() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        col = collector(srv)
        with httpx.Client() as client:
            client.get(srv.url + "/")
            with connect(f"ws://{srv.host}:{srv.port}/ws") as ws:
                time.sleep(0.1)
                snap = col.snapshot()
                assert snap["connections"] == {"http/1.1": 1, "websocket": 1}
                assert snap["websockets"] == 1
                ws.send("x")
        time.sleep(0.2)
        snap = col.snapshot()
    assert snap["connections"] == {}
    assert snap["websockets"] == 0
    rows = {(meth, status, proto) for meth, status, proto, _ in snap["requests"]}
    assert ("GET", "101", "http/1.1") in rows  # the handshake is the exchange


def test_in_flight_gauge() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        col = collector(srv)
        with httpx.Client() as client:
            thread = threading.Thread(target=client.get, args=(srv.url + "/slow",))
            thread.start()
            time.sleep(0.2)
            assert col.snapshot()["in_flight"] == 1
            thread.join()
        assert col.snapshot()["in_flight"] == 0


def test_lag_probe_runs() -> None:
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        time.sleep(m.LAG_INTERVAL * 3)
        snap = collector(srv).snapshot()
    assert sum(snap["lag"]) >= 2
    assert len(snap["lag"]) == len(m.LAG_BUCKETS) + 1


def test_observe_lag_buckets() -> None:
    loop = asyncio.new_event_loop()
    try:
        col = m.Collector(ServerContext(Config(app="a:b"), loop, lambda ex: None, access_log=False))
        col.observe_lag(0.0)
        col.observe_lag(0.003)
        col.observe_lag(60.0)
        snap = col.snapshot()
    finally:
        loop.close()
    assert snap["lag"][0] == 1 and snap["lag"][2] == 1 and snap["lag"][-1] == 1
    assert snap["lag_last"] == 60.0
    assert snap["lag_sum"] == pytest.approx(60.003)


def test_snapshots_are_published_every_second_and_at_the_end() -> None:
    sent: list[tuple[dict[str, Any], bool]] = []
    with serve_in_thread(app, metrics=True, lifespan="off") as srv:
        col = collector(srv)
        col.publish = lambda data, final: sent.append((json.loads(data), final))
        with httpx.Client() as client:
            client.get(srv.url + "/")
        time.sleep(1.4)
        assert sent and not any(final for _, final in sent)
    assert sent[-1][1] is True
    assert sum(row[3] for row in sent[-1][0]["requests"]) == 1


def test_no_collector_unless_asked() -> None:
    with serve_in_thread(app, lifespan="off") as srv:
        assert srv.server.metrics is None
        assert srv.server.ctx is not None and srv.server.ctx.observers == []


def test_enabled_follows_the_admin_listener_unless_told() -> None:
    assert m.enabled(Config(app="a:b", metrics=True))
    assert not m.enabled(Config(app="a:b", metrics=False))
    assert not m.enabled(Config(app="a:b"))
    assert m.enabled(Config(app="a:b", admin_bind="127.0.0.1:9999"))
    assert not m.enabled(Config(app="a:b", admin_bind="127.0.0.1:9999", metrics=False))


def test_parse_buckets() -> None:
    assert m.parse_buckets("") == m.DEFAULT_BUCKETS
    assert m.parse_buckets(" 0.1, 1 ,10") == (0.1, 1.0, 10.0)
    for bad in ("0.1,0.1", "1,0.5", "-1", "0", "inf", "nan", "x", "1,,2", ",".join(["1"] * 65)):
        with pytest.raises(ValueError):
            m.parse_buckets(bad)


def test_metrics_buckets_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="metrics_buckets"):
        Config(app="a:b", metrics_buckets="1,0.5")


def test_labels() -> None:
    assert m.protocol_label("http", "1.0") == "http/1.0"
    assert m.protocol_label("h2", "2") == "h2"
    assert m.protocol_label("uwsgi", "1.1") == "uwsgi"
    assert m.method_label("GET") == "GET"
    assert m.method_label("get") == "other"


def test_reporter_finishes_a_snapshot_it_began() -> None:
    """A droppable message is dropped whole or sent whole: half a frame would garble the master's reading."""
    r, w = os.pipe()
    reporter = Reporter(w)  # sets w non-blocking
    reporter.capacity = 0  # no room check: the write begins, and must be finished
    beat = frame(HEARTBEAT)
    for _ in range(100_000):  # fill the pipe with whole heartbeats (atomic: under PIPE_BUF)
        try:
            os.write(w, beat)
        except BlockingIOError:
            break
    buffer = bytearray()
    buffer += os.read(r, 4096)  # room for part of the snapshot only
    payload = json.dumps({"x": "y" * 20_000}).encode()

    def drain() -> None:
        time.sleep(0.2)
        os.set_blocking(r, False)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                break
            buffer.extend(chunk)

    thread = threading.Thread(target=drain)
    thread.start()
    reporter.send(SNAPSHOT, payload, droppable=True)
    os.close(w)
    thread.join()
    os.close(r)
    messages = unframe(buffer)
    assert buffer == b""
    assert messages[-1] == (SNAPSHOT, payload)
    assert all(kind == HEARTBEAT for kind, _ in messages[:-1])


def test_reporter_drops_a_large_snapshot_the_pipe_has_no_room_for() -> None:
    """A snapshot over PIPE_BUF is not begun while the master is behind: the worker's loop never waits on it."""
    r, w = os.pipe()
    reporter = Reporter(w)
    assert reporter.capacity > 0 and reporter.room() == reporter.capacity
    beat = frame(HEARTBEAT)
    while True:
        try:
            os.write(w, beat)
        except BlockingIOError:
            break
    os.read(r, len(beat) * 800)  # whole frames out: room for a few KiB, not for the snapshot
    assert 0 < reporter.room() < 20_000
    payload = json.dumps({"x": "y" * 20_000}).encode()
    started = time.monotonic()
    reporter.send(SNAPSHOT, payload, droppable=True)
    assert time.monotonic() - started < 0.1
    os.set_blocking(r, False)
    buffer = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(r, 65536):
            buffer += chunk
    assert all(kind == HEARTBEAT for kind, _ in unframe(buffer)) and buffer == b""
    os.close(r)
    os.close(w)


def test_scgi_requests_are_labelled_and_their_bodies_counted() -> None:
    from bascule.protocols.scgi_wire import encode_head

    body = b"0123456789"
    head = encode_head([(b"CONTENT_LENGTH", str(len(body)).encode()), (b"SCGI", b"1"), (b"REQUEST_METHOD", b"POST"),
                        (b"REQUEST_URI", b"/"), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"127.0.0.1"),
                        (b"REMOTE_PORT", b"5000"), (b"SERVER_PORT", b"80"), (b"SERVER_NAME", b"x")])
    with serve_in_thread(app, metrics=True, lifespan="off", bind=("scgi://127.0.0.1:0",), port=8000) as srv:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.settimeout(5)
            sock.sendall(head + body)
            while sock.recv(65536):
                pass
        snap = wait_requests(collector(srv), 1)
    assert [row[:4] for row in snap["requests"]] == [["POST", "200", "scgi", 1]]
    assert snap["received"] == len(body)


class Finished(Exchange):
    """Only what the collector reads of a finished exchange (an Exchange: the compiled collector checks)."""

    def __init__(self, method: str, status: int, wire: str = "http", version: str = "1.1", *, dropped: bool = False,
                 sent: int = 0, received: int = 0, static: bool = False, start_time: float = 0.0) -> None:
        self.method, self.status, self.wire, self.http_version = method, status, wire, version
        self.dropped, self.sent, self.received, self.static = dropped, sent, received, static
        self.start_time = self.perf_start = start_time

    body_done = True  # type: ignore[assignment]

    async def receive_body(self) -> bytes:
        raise NotImplementedError

    def take_buffered_body(self) -> bytes | None:
        raise NotImplementedError

    def send_head(self, status: int, headers: Any, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        raise NotImplementedError

    def send_body(self, data: bytes, end: bool = False) -> None:
        raise NotImplementedError

    def send_trailers(self, trailers: Any) -> None:
        raise NotImplementedError

    def send_simple(self, status: int, body: bytes, content_type: bytes = b"") -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    async def wait_disconnect(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    can_sendfile = False  # type: ignore[assignment]

    def send_file_blocking(self, file: Any, offset: int, count: int) -> int:
        raise NotImplementedError


def test_runs_and_folds_count_every_request_whatever_the_order() -> None:
    import random
    from collections import Counter

    loop = asyncio.new_event_loop()
    try:
        col = m.Collector(ServerContext(Config(app="a:b"), loop, lambda ex: None, access_log=False), (0.5, 1.0))
        kinds = [("GET", 200, "http", "1.1"), ("GET", 200, "h2", "2"), ("POST", 201, "http", "1.1"),
                 ("GET", 404, "http", "1.0"), ("BREW", 418, "fastcgi", "1.1")]
        rng = random.Random(16)
        want: Counter[tuple[str, str, str]] = Counter()
        sent = 0
        for n in range(3000):
            method, status, wire, version = rng.choice(kinds) if rng.random() < 0.3 else kinds[0]
            dropped = rng.random() < 0.05
            col.request_finished(Finished(method, status, wire, version, dropped=dropped, sent=n,
                                          start_time=time.perf_counter() - rng.choice((0.1, 0.7, 2.0))))
            sent += n
            want[(m.method_label(method), "499" if dropped else str(status), m.protocol_label(wire, version))] += 1
            if rng.random() < 0.01:
                col.fold()
        snap = col.snapshot()
    finally:
        loop.close()
    assert Counter({(a, b, c): n for a, b, c, n in snap["requests"]}) == want
    assert snap["sent"] == sent
    assert sum(snap["duration"]) == sum(n for (_, s, _), n in want.items() if s != "499")
    assert all(count > 0 for count in snap["duration"])  # 0.1 s, 0.7 s and 2 s: each bucket


def test_a_duration_on_a_bound_is_in_that_bucket() -> None:
    loop = asyncio.new_event_loop()
    try:
        col = m.Collector(ServerContext(Config(app="a:b"), loop, lambda ex: None, access_log=False), (0.5, 1.0))
        col.clock = lambda: 10.5
        col.request_finished(Finished("GET", 200, start_time=10.0))  # exactly 0.5 s: le="0.5"
        col.request_finished(Finished("GET", 200, start_time=9.5))  # exactly 1 s: le="1.0"
        col.request_finished(Finished("GET", 200, static=True, start_time=0.0))  # above every bound
        snap = col.snapshot()
    finally:
        loop.close()
    assert snap["duration"] == [1, 1, 1]
    assert snap["static"] == [["200", 1]]
