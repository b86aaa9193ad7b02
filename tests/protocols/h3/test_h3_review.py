"""Hostile-client cases found in review of the HTTP/3 wire: QPACK expansion, and streams the server is made
to reset while their apps still run ("MadeYouReset").

The same real server and aioquic client as the other HTTP/3 tests (h3_support.py); where a client must send
what aioquic's client never would, raw bytes are written on its QUIC streams.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioquic.h3.connection import FrameType, encode_frame
from h3_support import h3_client, h3_server, run, until

import bascule.protocols.h3.connection as h3_connection
from bascule.protocols.h2.headers import _integer  # the RFC 7541 5.1 prefixed integer QPACK shares

Scope = dict[str, Any]




async def ok(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_qpack_bomb_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One 4 KB entry in the QPACK dynamic table, referenced by one byte each: a 2 KB HEADERS frame would
    decode to 8 MB (a frame within the header limits, to gigabytes). The server keeps no dynamic table
    (SETTINGS_QPACK_MAX_TABLE_CAPACITY 0), so the decoded list stays within a small multiple of the frame."""
    decoded: list[int] = []
    check_size = h3_connection.check_size

    def measuring(fields: Any, limits: Any) -> None:
        decoded.append(sum(len(name) + len(value) for name, value in fields))
        check_size(fields, limits)

    monkeypatch.setattr(h3_connection, "check_size", measuring)
    refs = 2000

    async def main() -> None:
        async with h3_server(ok) as srv, h3_client(srv.port) as client:
            assert (await client.request()).status == 200
            quic = client._quic
            encoder_stream = client.h3._local_encoder_stream_id
            assert encoder_stream is not None
            name, value = b"x-a", b"v" * 4000
            insert = (_integer(4096, 5, 0x20) + _integer(len(name), 5, 0x40) + name
                      + _integer(len(value), 7, 0) + value)
            quic.send_stream_data(encoder_stream, insert)
            # required insert count 1 (encoded 2), base 1; :method GET, :scheme https, :path / (static), an
            # :authority; then indexed field lines: dynamic, relative index 0
            pseudo = b"\xd1\xd7\xc1\x50\x09127.0.0.1"
            block = b"\x02\x00" + pseudo + b"\x80" * refs
            sid = quic.get_next_available_stream_id()
            quic.send_stream_data(sid, encode_frame(FrameType.HEADERS, block), end_stream=True)
            client.transmit()
            await until(lambda: client.terminated is not None or bool(decoded[1:]), 5)
            await asyncio.sleep(0.1)
            assert all(size <= 100 * (len(block) + len(insert)) for size in decoded), decoded
    run(main())


class Stubborn:
    """An app that ignores disconnects: each request waits for ``release`` (counting those running)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
        finally:
            self.running -= 1


def test_streams_the_server_is_made_to_reset_keep_their_slots() -> None:
    """MadeYouReset (as HTTP/2, CVE-2025-8671): a body longer than its content-length makes the server reset
    the stream; while its app still runs, the stream must keep counting against MAX_STREAMS, or a client gets
    any number of apps running on one connection."""
    app = Stubborn()

    async def main() -> None:
        async with h3_server(app, h2_max_concurrent_streams=2) as srv, h3_client(srv.port) as client:
            sids = []
            for _ in range(5):
                sid = client.start("/", "POST", headers=[(b"content-length", b"1")], end=False)
                sids.append(sid)
                await asyncio.sleep(0.05)
                client.send(sid, b"xx")  # one byte more than declared: H3_MESSAGE_ERROR
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.6)  # a tick, where slots of finished apps come back
            assert app.peak <= 2, app.peak
            app.release.set()
            await until(lambda: srv.ctx.in_flight == 0 and app.running == 0)
            await asyncio.sleep(0.6)
            assert (await client.request()).status == 200
    run(main())


def test_resets_a_client_provokes_count_against_its_budget() -> None:
    """Streams made to fail before any app runs free their slots at once; so the client could make the server
    reset them without end: past the per-tick reset budget the connection closes (H3_EXCESSIVE_LOAD)."""

    async def main() -> None:
        async with h3_server(ok) as srv, h3_client(srv.port) as client:
            for _ in range(40):  # bounded: 40 rounds of up to 20 streams, the budget is 200 per tick
                if client.terminated is not None:
                    break
                for _ in range(20):
                    if client._quic._streams_blocked_bidi:
                        break
                    sid = client.start("/", "POST", headers=[(b"content-length", b"1")], end=False)
                    client.send(sid, b"xx")  # no FIN: aioquic itself would close the connection at a FIN
                await asyncio.sleep(0.005)
            await until(lambda: client.terminated is not None, 5)
            assert client.terminated is not None and client.terminated.error_code == 0x107  # H3_EXCESSIVE_LOAD
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_stream_slots_hold_release_and_budget() -> None:
    """StreamSlots alone: a slot is taken back once per stream while its app runs, given back when it
    returned, and the budget counts resets per tick."""
    from types import SimpleNamespace

    from aioquic.quic.connection import Limit

    from bascule.protocols.h3.quic import StreamCredit
    from bascule.protocols.h3.slots import RESETS_PER_TICK, StreamSlots

    limit = StreamCredit(Limit(frame_type=0x12, name="max_streams_bidi", value=10))
    slots = StreamSlots(SimpleNamespace(credit=limit))  # type: ignore[arg-type]

    class Task:
        finished = False

        def done(self) -> bool:
            return self.finished

    running, returned = Task(), Task()
    returned.finished = True
    st = SimpleNamespace(stream_id=0, app_task=running)
    slots.hold(st)  # type: ignore[arg-type]
    slots.hold(st)  # type: ignore[arg-type]
    slots.hold(SimpleNamespace(stream_id=4, app_task=returned))  # type: ignore[arg-type]
    slots.hold(SimpleNamespace(stream_id=8, app_task=None))  # type: ignore[arg-type]
    assert limit.value == 10 and list(slots.orphans) == [0]  # credit sent is never taken back...
    limit.value += 1  # ...the next raise (aioquic discarding a stream) is taken instead
    assert limit.value == 10
    assert not slots.tick() and limit.value == 10
    running.finished = True
    assert slots.tick() and limit.value == 11 and not slots.orphans  # given back
    limit.value += 1  # raises pass again
    assert limit.value == 12
    slots.hold(SimpleNamespace(stream_id=12, app_task=Task()))  # type: ignore[arg-type]
    slots.orphans[12].app_task.finished = True
    assert slots.tick() and limit.value == 12  # released before any raise came: nothing was taken
    limit.value += 1
    assert limit.value == 13
    assert not any(slots.charge() for _ in range(RESETS_PER_TICK)) and slots.charge()
    slots.tick()
    assert not slots.charge()


def test_a_held_slot_never_takes_back_stream_credit_already_sent() -> None:
    """MAX_STREAMS, once sent, cannot be taken back (RFC 9000 4.6). A client that cancels a running request
    and then opens the streams it was granted must be served, not closed with STREAM_LIMIT_ERROR: the held
    slot is withheld from the next raise of the limit instead."""
    app = Stubborn()

    async def main() -> None:
        async with h3_server(app, h2_max_concurrent_streams=4) as srv, h3_client(srv.port) as client:
            first = client.start("/")
            await until(lambda: app.running == 1)
            client._quic.reset_stream(first, 0x10C)
            client._quic.stop_stream(first, 0x10C)
            others = [client.start("/") for _ in range(3)]  # stream counts 2-4: within the 4 granted
            await asyncio.sleep(0.3)
            assert client.terminated is None, client.terminated
            await until(lambda: app.running == 4)
            app.release.set()
            for sid in others:
                assert (await client.wait(sid)).body == b"done"
            await until(lambda: srv.ctx.in_flight == 0 and app.running == 0)
            await asyncio.sleep(0.6)  # a tick: the held slot comes back
            replies = await asyncio.gather(*(client.request() for _ in range(4)))
            assert [r.status for r in replies] == [200] * 4
    run(main())


def test_a_headers_frame_that_arrives_whole_is_bounded_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A HEADERS frame over twice --limit-request-header-size is refused while it is incomplete; one that
    arrives whole (one packet, or pieces sent out of order) was decoded first, up to the stream window, at up
    to 69 bytes decoded per byte. It must not be decoded: the connection is closed (H3_EXCESSIVE_LOAD)."""
    decoded: list[int] = []
    check_size = h3_connection.check_size

    def measuring(fields: Any, limits: Any) -> None:
        decoded.append(sum(len(name) + len(value) for name, value in fields))
        check_size(fields, limits)

    monkeypatch.setattr(h3_connection, "check_size", measuring)

    async def main() -> None:
        async with h3_server(ok, limit_request_header_size=300) as srv, h3_client(srv.port) as client:
            assert (await client.request()).status == 200
            decoded.clear()
            quic = client._quic
            # no dynamic table: required insert count 0, base 0; pseudo-headers; then 300 two-byte references
            # to static entry 98 (RFC 9204 A): a 615-byte frame, in one packet
            block = b"\x00\x00\xd1\xd7\xc1\x50\x09127.0.0.1" + b"\xff\x23" * 300
            sid = quic.get_next_available_stream_id()
            quic.send_stream_data(sid, encode_frame(FrameType.HEADERS, block), end_stream=True)
            client.transmit()
            await until(lambda: client.terminated is not None or bool(decoded), 5)
            assert decoded == []
            assert client.terminated is not None and client.terminated.error_code == 0x107, client.terminated
    run(main())
