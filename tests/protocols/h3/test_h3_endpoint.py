"""HTTP/3 connections and the endpoint: admission, limits, resets, GOAWAY, idle and forced closes.

The same real server and aioquic client as test_h3_stream.py; raw UDP datagrams where the test is about what
the endpoint answers before any connection exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from aioquic.buffer import encode_uint_var
from aioquic.quic.packet import QuicProtocolVersion
from h3_support import Reply, h3_client, h3_server, run, until

from bascule.protocols.h3.connection import GOAWAY_GRACE, H3Conn
from bascule.protocols.h3.stream import SEND_BUFFER

Scope = dict[str, Any]


def h3_conns(ctx: Any) -> list[H3Conn]:
    return [c for c in ctx.connections if isinstance(c, H3Conn)]


class Gate:
    """An app whose requests wait for ``release`` (counting those running), and notes disconnects."""

    def __init__(self) -> None:
        self.running = 0
        self.release = asyncio.Event()
        self.disconnects = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.running += 1
        try:
            if scope["path"] == "/read":
                body = b""
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.disconnects += 1
                        return
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
                self.bodies.append(body)
            else:
                await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
        finally:
            self.running -= 1


async def ok(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_connections_are_registered_and_unregistered() -> None:
    async def main() -> None:
        async with h3_server(ok) as srv:
            async with h3_client(srv.port) as client:
                assert (await client.request()).body == b"ok"
                assert len(h3_conns(srv.ctx)) == 1
                assert len(srv.quic.conns) == 1 and srv.quic.routes
                client.close()
                await client.wait_closed()
            await until(lambda: not h3_conns(srv.ctx) and not srv.quic.conns and not srv.quic.routes)
    run(main())


def test_goaway_on_close_lets_streams_finish() -> None:
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate) as srv, h3_client(srv.port) as client:
            first = client.start("/slow")
            await until(lambda: gate.running == 1)
            srv.quic.close()
            await until(lambda: client.goaway_ids() != [])
            assert client.goaway_ids() == [first + 4]
            late = client.start("/late")  # above the GOAWAY's id: refused, the client may retry elsewhere
            reply = await client.wait(late)
            assert reply.reset == 0x10B
            gate.release.set()
            reply = await client.wait(first)
            assert reply.body == b"done"
            await asyncio.wait_for(srv.quic.wait_closed(), 5)
            await until(lambda: client.terminated is not None)
            assert not srv.ctx.connections
    run(main())


def test_new_initials_are_dropped_after_close() -> None:
    async def main() -> None:
        async with h3_server(ok) as srv:
            srv.quic.close()
            try:
                async with asyncio.timeout(1.5):
                    async with h3_client(srv.port):
                        raise AssertionError("connected to a closed endpoint")
            except (TimeoutError, ConnectionError):
                pass
            assert not srv.quic.conns
    run(main())


def test_idle_connection_is_closed_after_keep_alive() -> None:
    async def main() -> None:
        async with h3_server(ok, timeout_keep_alive=0.5) as srv, h3_client(srv.port) as client:
            assert (await client.request()).body == b"ok"
            await until(lambda: client.terminated is not None, 5)
            assert client.goaway_ids() == [4]
            assert client.terminated is not None and client.terminated.error_code == 0x100
            await until(lambda: not srv.quic.conns)
    run(main())


def test_force_close_disconnects_the_streams() -> None:
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate) as srv, h3_client(srv.port) as client:
            sid = client.start("/read", "POST", end=False)
            client.send(sid, b"part")
            await until(lambda: gate.running == 1)
            (conn,) = h3_conns(srv.ctx)
            conn.force_close()
            assert not srv.ctx.connections
            await until(lambda: gate.disconnects == 1)
            await until(lambda: client.terminated is not None)
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_concurrent_streams_are_limited_by_max_streams() -> None:
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate, h2_max_concurrent_streams=2) as srv, h3_client(srv.port) as client:
            sids = [client.start("/slow") for _ in range(4)]
            await until(lambda: gate.running == 2)
            await asyncio.sleep(0.2)
            assert gate.running == 2  # the others wait for MAX_STREAMS in the client
            gate.release.set()
            replies = [await client.wait(sid) for sid in sids]
            assert [r.body for r in replies] == [b"done"] * 4
    run(main())


def test_a_reset_stream_keeps_its_slot_until_its_app_returns() -> None:
    """Rapid reset buys nothing: a stream the client resets while its app runs still counts against
    MAX_STREAMS (our side of it stays open) until the app returns."""
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate, h2_max_concurrent_streams=1) as srv, h3_client(srv.port) as client:
            first = client.start("/slow")
            await until(lambda: gate.running == 1)
            client.reset(first)
            second = client.start("/slow")
            await asyncio.sleep(0.3)
            assert gate.running == 1  # the second request waits: the first app still runs
            gate.release.set()
            reply = await client.wait(second)
            assert reply.body == b"done"
            assert client.replies[first].reset == 0x10C and not client.replies[first].ended
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_client_reset_mid_body_is_a_disconnect_for_the_app() -> None:
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate) as srv, h3_client(srv.port) as client:
            sid = client.start("/read", "POST", end=False)
            client.send(sid, b"x" * 1000)
            await until(lambda: gate.running == 1)
            client.reset(sid)
            await until(lambda: gate.disconnects == 1)
            await until(lambda: srv.ctx.in_flight == 0)
            assert (await client.request("/read", "POST", body=b"again")).body == b"done"
            assert gate.bodies == [b"again"]
    run(main())


def test_oversized_headers_get_431() -> None:
    async def main() -> None:
        async with h3_server(ok, limit_request_headers=20, limit_request_field_size=100,
                             limit_request_header_size=1500) as srv, h3_client(srv.port) as client:
            reply = await client.request(headers=[(b"x-%d" % i, b"v") for i in range(30)])
            assert reply.status == 431 and b"--limit-request-headers" in reply.body
            reply = await client.request(headers=[(b"x-big", b"v" * 200)])
            assert reply.status == 431 and b"--limit-request-field-size" in reply.body
            reply = await client.request(headers=[(b"x-%d" % i, b"v" * 90) for i in range(12)])
            assert reply.status == 431 and b"--limit-request-header-size" in reply.body
            assert (await client.request()).status == 200
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_body_over_the_limit_gets_413() -> None:
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate, limit_request_body=1000) as srv, h3_client(srv.port) as client:
            reply = await client.request("/read", "POST", headers=[(b"content-length", b"5000")], body=b"y" * 5000)
            assert reply.status == 413 and b"5000 bytes" in reply.body
            sid = client.start("/read", "POST", end=False)
            client.send(sid, b"y" * 800)
            client.send(sid, b"y" * 800)
            reply = await client.wait(sid)
            assert reply.status == 413
            assert (await client.request("/read", "POST", body=b"small")).body == b"done"
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_malformed_requests_are_reset_and_connect_is_refused() -> None:
    async def main() -> None:
        async with h3_server(ok) as srv, h3_client(srv.port) as client:
            reply = await client.request("nopath")
            assert reply.reset == 0x10E
            sid = client.start("/", "CONNECT")
            reply = await client.wait(sid)
            assert reply.status == 405 or reply.reset is not None
            sid = client.start("/chat", "CONNECT", extra_pseudo=[(b":protocol", b"websocket")])
            reply = await client.wait(sid)
            assert reply.status == 404
            assert (await client.request()).body == b"ok"
    run(main())


def test_a_client_that_stops_reading_does_not_grow_the_servers_buffers() -> None:
    """A client that acknowledges nothing: the app's sends pause once SEND_BUFFER bytes are unacknowledged,
    so what the app has handed over stays bounded however much it has to send."""
    handed: list[int] = []

    async def flood(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] != "/flood":
            await send({"type": "http.response.body", "body": b"warm"})
            return
        chunk = b"f" * 16384
        for _ in range(1000):  # 16 MB if nothing held it back
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            handed.append(len(chunk))
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async with h3_server(flood) as srv, h3_client(srv.port) as client:
            assert (await client.request("/warm")).body == b"warm"
            handed.clear()
            client.deaf = True
            client.start("/flood")
            await asyncio.sleep(1.0)
            (conn,) = h3_conns(srv.ctx)
            buffered = sum(len(s.sender._buffer) for s in conn.quic._streams.values())
            assert sum(handed) <= SEND_BUFFER + 16384
            assert buffered <= SEND_BUFFER + 2 * 16384
            conn.force_close()
    run(main(), timeout=60)


def test_version_negotiation_and_what_gets_no_answer() -> None:
    async def main() -> None:
        async with h3_server(ok) as srv:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(0.5)
            try:
                dcid, scid = os.urandom(8), os.urandom(8)
                unknown = (b"\xc0" + (0x1A2A3A4A).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid)
                sock.sendto(unknown.ljust(1200, b"\0"), ("127.0.0.1", srv.port))
                answer = await asyncio.get_running_loop().run_in_executor(None, sock.recv, 2048)
                assert answer[1:5] == b"\0\0\0\0"  # Version Negotiation
                assert QuicProtocolVersion.VERSION_1.to_bytes(4, "big") in answer
                sock.sendto(unknown, ("127.0.0.1", srv.port))  # under 1200 bytes: no answer
                initial = b"\xc0" + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\0\0\0"
                sock.sendto(initial, ("127.0.0.1", srv.port))  # a short Initial: no answer, no state
                junk = (b"\xc0" + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\0\x44\x96")
                made = len(srv.quic.conns)
                srv.quic.datagram_received(junk.ljust(1200, b"\1"), ("127.0.0.1", 5555))  # does not decrypt
                assert made == len(srv.quic.conns) == 0 and not srv.quic.routes and not srv.ctx.connections
                try:
                    await asyncio.get_running_loop().run_in_executor(None, sock.recv, 2048)
                    raise AssertionError("answered a small datagram")
                except TimeoutError:
                    pass
                assert not srv.quic.conns
            finally:
                sock.close()
    run(main())


def test_retry_validates_the_address_first() -> None:
    async def main() -> None:
        async with h3_server(ok, retry=True) as srv, h3_client(srv.port) as client:
            assert (await client.request()).body == b"ok"
            assert client._quic._retry_count == 1
    run(main())


def test_limit_connections_counts_quic_connections() -> None:
    async def main() -> None:
        async with h3_server(ok, limit_connections=1) as srv, h3_client(srv.port) as client:
            assert (await client.request()).body == b"ok"
            try:
                async with asyncio.timeout(1.5):
                    async with h3_client(srv.port):
                        raise AssertionError("a second connection over --limit-connections")
            except (TimeoutError, ConnectionError):
                pass
            assert len(srv.quic.conns) == 1
    run(main())


def test_a_huge_or_slow_request_head_is_refused() -> None:
    async def main() -> None:
        async with h3_server(ok, timeout_request_head=0.5) as srv, h3_client(srv.port) as client:
            assert (await client.request()).body == b"ok"
            quic = client._quic
            huge = quic.get_next_available_stream_id()
            client.replies[huge] = Reply()
            client.waiters[huge] = asyncio.get_running_loop().create_future()
            quic.send_stream_data(huge, encode_uint_var(1) + encode_uint_var(1_000_000) + b"\0" * 100)
            client.transmit()
            reply = await client.wait(huge)
            assert reply.reset == 0x107  # H3_EXCESSIVE_LOAD
            slow = quic.get_next_available_stream_id()
            quic.send_stream_data(slow, encode_uint_var(1) + encode_uint_var(100) + b"\0" * 10)
            client.transmit()
            await until(lambda: client.terminated is not None, 5)
            assert client.terminated is not None and client.terminated.error_code == 0x10D
    run(main())


def test_the_app_hears_at_once_that_the_client_closed() -> None:
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate) as srv:
            async with h3_client(srv.port) as client:
                sid = client.start("/read", "POST", end=False)
                client.send(sid, b"part")
                await until(lambda: gate.running == 1)
                client.close()
            await until(lambda: gate.disconnects == 1, 1.0)
            assert not srv.ctx.connections
    run(main())


def test_the_servers_drain_loop_drains_quic_connections() -> None:
    """What Server._shutdown does (ctx.shutting_down, then on_tick every 20 ms): GOAWAY, the request in
    flight finishes, then the connection closes and leaves ctx.connections; wait_closed returns."""
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate) as srv, h3_client(srv.port) as client:
            sid = client.start("/slow")
            await until(lambda: gate.running == 1)
            srv.quic.close()
            srv.ctx.shutting_down = True
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, gate.release.set)
            deadline = loop.time() + 5
            while srv.ctx.connections and loop.time() < deadline:
                for conn in list(srv.ctx.connections):
                    conn.on_tick(loop.time())
                await asyncio.sleep(0.02)
            assert not srv.ctx.connections
            assert (await client.wait(sid)).body == b"done"
            assert client.goaway_ids() == [sid + 4]
            await asyncio.wait_for(srv.quic.wait_closed(), 5)
            assert srv.quic.transport is None or srv.quic.transport.is_closing()
    run(main())


def test_a_drain_tick_right_after_the_last_response_waits_for_its_bytes() -> None:
    """The stream leaves the table when its FIN is queued; the packets go out at the end of the loop pass. A
    drain tick in between (the app's timer and the drain loop's firing together) must not close the connection
    then: aioquic's CONNECTION_CLOSE would go out instead of the response. The connection closes once every
    byte it sent is acknowledged."""
    conns: list[H3Conn] = []
    ticked_at_once: list[bool] = []
    running = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        running.set()
        await asyncio.sleep(GOAWAY_GRACE + 0.1)  # the GOAWAY's grace is over
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        (conn,) = conns
        assert not conn.streams  # the FIN is queued, not sent
        conn.on_tick(asyncio.get_running_loop().time())  # in the same pass, before the flush
        ticked_at_once.append(conn.closed)

    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            sid = client.start("/")
            await asyncio.wait_for(running.wait(), 5)
            conns.extend(h3_conns(srv.ctx))
            srv.quic.close()
            srv.ctx.shutting_down = True
            reply = await client.wait(sid, 5)
            assert reply.body == b"done"
            assert ticked_at_once == [False]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while srv.ctx.connections and loop.time() < deadline:  # the server's drain loop, as above
                for conn in list(srv.ctx.connections):
                    conn.on_tick(loop.time())
                await asyncio.sleep(0.02)
            assert not srv.ctx.connections
            await asyncio.wait_for(srv.quic.wait_closed(), 5)
            await until(lambda: client.terminated is not None, 5)  # the client's draining period is over
            assert client.terminated is not None and client.terminated.error_code == 0x100  # H3_NO_ERROR
    run(main())


def test_session_tickets_resume_once_and_are_off_by_default() -> None:
    tickets: list[Any] = []

    def keep(configuration: Any) -> None:
        configuration.session_ticket = tickets[0] if tickets else None

    async def main(session_tickets: bool) -> list[bool]:
        tickets.clear()
        resumed = []
        async with h3_server(ok, session_tickets=session_tickets) as srv:
            for _ in range(3):
                async with h3_client(srv.port, configure=keep, ticket_handler=tickets.append) as client:
                    assert (await client.request()).body == b"ok"
                    resumed.append(client._quic.tls.session_resumed)
                    await asyncio.sleep(0.05)  # the ticket comes after the handshake
            assert len(srv.quic.tickets or {}) <= 3
        return resumed

    results: list[list[bool]] = []

    async def both() -> None:
        results.append(await main(True))
        results.append(await main(False))
    run(both())
    assert results == [[False, True, False], [False, False, False]]


def test_cancelled_and_refused_streams_leave_no_state_behind() -> None:
    """Streams the client cancels and streams we refuse leave aioquic's tables (QUIC and HTTP/3) once both
    sides are over: a long connection does not accumulate them."""
    gate = Gate()

    async def main() -> None:
        async with h3_server(gate, limit_request_headers=5) as srv, h3_client(srv.port) as client:
            gate.release.set()
            for _ in range(30):
                sid = client.start("/read", "POST", end=False)
                client.send(sid, b"x")
                client.reset(sid)
                refused = client.start("/", headers=[(b"x-%d" % i, b"v") for i in range(20)])
                assert (await client.wait(refused)).status == 431
                assert (await client.request("nopath")).reset == 0x10E  # reset by us, both ways
            assert (await client.request("/read", "POST", body=b"last")).body == b"done"
            (conn,) = h3_conns(srv.ctx)
            await until(lambda: len(conn.h3._stream) <= 8 and len(conn.quic._streams) <= 10 and not conn.streams)
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


def test_metrics_count_h3_connections_and_requests() -> None:
    from bascule.ops.metrics import Collector

    async def main() -> None:
        async with h3_server(ok) as srv, h3_client(srv.port) as client:
            collector = Collector(srv.ctx)
            srv.ctx.observe(collector)
            assert (await client.request()).body == b"ok"
            await until(lambda: srv.ctx.in_flight == 0)
            assert collector.gauges()[0] == {"h3": 1}
            collector.fold()
            assert collector.requests == {("GET", "200", "h3"): 1}
    run(main())


def test_a_spoofed_initial_gets_at_most_three_times_its_size_back() -> None:
    """Anti-amplification (RFC 9000 8.1): an Initial from an address that never answers (a spoofed victim)
    gets at most three times its bytes in return, retransmissions included, until the address is validated."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    async def main() -> None:
        async with h3_server(ok, idle_timeout=3.0) as srv:
            victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            victim.bind(("127.0.0.1", 0))
            victim.settimeout(0.2)
            try:
                quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["h3"]))
                loop = asyncio.get_running_loop()
                quic.connect(("127.0.0.1", srv.port), now=loop.time())
                sent = 0
                for data, _ in quic.datagrams_to_send(now=loop.time()):
                    victim.sendto(data, ("127.0.0.1", srv.port))
                    sent += len(data)
                received = 0
                deadline = loop.time() + 2.5  # several probe timeouts
                while loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        received += len(await loop.run_in_executor(None, victim.recv, 65536))
                assert sent >= 1200 and 0 < received <= 3 * sent
            finally:
                victim.close()
    run(main())


def test_random_datagrams_do_no_harm(caplog: Any) -> None:
    import random

    async def main() -> None:
        async with h3_server(ok) as srv:
            rnd = random.Random(17)
            for _ in range(2000):
                size = rnd.choice((1, 5, 30, 1199, 1200, 1350))
                first = rnd.choice((0xC0, 0xC3, 0xD0, 0xE0, 0xF0, 0x40, 0x00))
                version = rnd.choice((b"\0\0\0\1", b"\0\0\0\0", b"\x6b\x33\x43\xcf", bytes(rnd.randbytes(4))))
                cid = bytes([8]) + rnd.randbytes(8)
                data = (bytes([first]) + version + cid + cid + rnd.randbytes(size)).ljust(size, b"\0")[:max(size, 1)]
                srv.quic.datagram_received(data, ("127.0.0.1", 40000 + rnd.randrange(100)))
            assert not srv.quic.conns and not srv.quic.routes and not srv.ctx.connections
            async with h3_client(srv.port) as client:
                assert (await client.request()).body == b"ok"
    run(main())
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_request_in_0rtt_early_data_is_marked() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def record(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["headers"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    tickets: list[Any] = []

    def resume(configuration: Any) -> None:
        configuration.session_ticket = tickets[0] if tickets else None

    async def main() -> None:
        async with h3_server(record, session_tickets=True) as srv:
            async with h3_client(srv.port, ticket_handler=tickets.append) as client:
                assert (await client.request("/first")).body == b"ok"
                await until(lambda: bool(tickets))
            async with h3_client(srv.port, configure=resume, wait_connected=False) as client:
                reply = await client.request("/early")
                assert reply.body == b"ok"
                assert client._quic.tls.early_data_accepted
    run(main())
    assert (b"early-data", b"1") not in seen[0]
    assert (b"early-data", b"1") in seen[1]
