"""Hypothesis drives a FastCGI connection (protocols/fastcgi) with record sequences, well-formed or not.

The parser is fuzzed on its own in tests/protocols/test_fastcgi_wire.py; this feeds whole connections over a
fake transport, with an app that answers at once, to check what the connection does with any input: no
exception escapes ``data_received``, everything written is well-formed records, every request that got
STDOUT gets an END_REQUEST after it, and nothing more is written once the connection is closing.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from fakes import FakeTransport
from hypothesis import given, settings
from hypothesis import strategies as st

from bascule.config import Config
from bascule.context import ServerContext
from bascule.protocols.fastcgi.connection import FcgiConnection
from bascule.protocols.fastcgi_wire import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    END_REQUEST,
    GET_VALUES,
    KEEP_CONN,
    PARAMS,
    STDIN,
    STDOUT,
    encode_pairs,
    record,
)

GOOD_PARAMS = encode_pairs([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/x?y=1"), (b"CONTENT_LENGTH", b"")])

_content = st.one_of(st.binary(max_size=40), st.just(GOOD_PARAMS), st.just(b""),
                     st.just(struct.pack("!HB5x", 1, KEEP_CONN)), st.just(struct.pack("!HB5x", 1, 0)),
                     st.just(struct.pack("!HB5x", 2, 0)))
_record = st.builds(record, st.sampled_from([BEGIN_REQUEST, ABORT_REQUEST, PARAMS, STDIN, GET_VALUES, 8, 12, 200]),
                    st.integers(0, 3), _content)
_noise = st.binary(min_size=1, max_size=12)  # bytes that are not a record: a bad version, a cut header


def answer(ex: Any) -> None:
    ex.send_simple(200, b"ok")


def parse_out(out: bytes) -> list[tuple[int, int, bytes]]:
    records = []
    pos = 0
    while pos < len(out):
        assert len(out) - pos >= 8, "a cut record header in the output"
        version, kind, rid, length, padding = struct.unpack_from("!BBHHBx", out, pos)
        assert version == 1 and pos + 8 + length + padding <= len(out)
        records.append((kind, rid, out[pos + 8:pos + 8 + length]))
        pos += 8 + length + padding
    return records


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_record, _noise), max_size=12), st.lists(st.integers(1, 60), max_size=6))
def test_any_record_sequence_leaves_the_connection_sane(pieces: list[bytes], cuts: list[int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        ctx = ServerContext(Config(app="x:y", access_log=False), loop, answer, access_log=False)
        conn = FcgiConnection(ctx)
        transport = FakeTransport()
        conn.connection_made(transport)
        data = b"".join(pieces)
        pos = 0
        for size in [*cuts, len(data)]:  # the stream cut into reads anywhere
            if pos >= len(data) or transport.closing:
                break
            conn.data_received(data[pos:pos + size])
            pos += size
        conn.outbox.flush()
        out = parse_out(bytes(transport.out))
        ended: set[int] = set()
        for kind, rid, content in out:
            if kind == STDOUT:
                assert rid not in ended, f"STDOUT for request {rid} after its END_REQUEST"
            elif kind == END_REQUEST:
                assert len(content) == 8
                ended.add(rid)
        stdout_ids = {rid for kind, rid, content in out if kind == STDOUT and content}
        assert stdout_ids <= ended or transport.closing
        assert ctx.in_flight == 0 or conn.exchanges
    finally:
        loop.close()
