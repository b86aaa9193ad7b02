"""HTTP/2 clients that acknowledge every DATA frame (issue 12, defect 7): normal behaviour, not a flood.

Browsers and curl give window back as they consume DATA, often one WINDOW_UPDATE per frame for the stream
and another for the connection, sometimes in pieces smaller than the frame (what one ``recv`` consumed).
The client here (the ``h2`` library over a plain socket, prior knowledge) keeps the default 64 KiB windows
and answers every DATA frame with WINDOW_UPDATEs for its stream and for the connection, each split into
:data:`PIECES` increments, while it downloads :data:`TOTAL` bytes of an endless stream
(tests/integration/apps/it_h2_stream_app.py).

Checked: the server never answers this with GOAWAY (it used to charge every WINDOW_UPDATE to the
control-frame budget, so a fast download hit ENHANCE_YOUR_CALM), and the DATA frames do not shrink to the
size of the increments (each WINDOW_UPDATE used to release a frame of its own size at once, so small
increments made small frames, which made smaller increments): their median stays at least
:data:`MIN_MEDIAN_FRAME` bytes.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import free_port
from it_support import APPS, clean_env, spawn, tcp_ready

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX sockets"),
              pytest.mark.timeout(60)]

TOTAL = 48 * 1024 * 1024
PIECES = 2
MIN_MEDIAN_FRAME = 4096


@pytest.fixture(params=["/stream", "/wsgi/stream"])
def download(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, str]]:
    port = free_port()
    args = ["it_h2_stream_app:app", "--mount", "/wsgi=it_h2_stream_app:wsgi_app", "--port", str(port),
            "--no-access-log"]
    with spawn(args, cwd=APPS, env=clean_env(), log=tmp_path / "server.log", ready=tcp_ready(port)):
        yield port, str(request.param)


def ack_in_pieces(conn: h2.connection.H2Connection, sid: int, n: int) -> None:
    """Give ``n`` bytes of window back to the stream and to the connection, in PIECES increments each."""
    piece, rest = divmod(n, PIECES)
    sizes = [piece] * PIECES
    sizes[-1] += rest
    for size in sizes:
        if size:
            conn.increment_flow_control_window(size, stream_id=sid)
            conn.increment_flow_control_window(size)


def test_a_client_acking_every_data_frame_is_served_in_full_frames(download: tuple[int, str]) -> None:
    port, path = download
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"),
                            (":path", path)], end_stream=True)
    sock.sendall(conn.data_to_send())
    sizes: list[int] = []
    received = 0
    goaway: h2.events.ConnectionTerminated | None = None
    deadline = time.monotonic() + 30
    try:
        while received < TOTAL and goaway is None and time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                break
            events = conn.receive_data(data)
            for event in events:
                if isinstance(event, h2.events.ConnectionTerminated):
                    goaway = event
            for event in events:
                if isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    sizes.append(len(event.data))
                    received += len(event.data)
                    if goaway is None:
                        ack_in_pieces(conn, sid, event.flow_controlled_length)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    finally:
        sock.close()
    median = statistics.median(sizes) if sizes else 0
    print(f"{path}: {received} bytes in {len(sizes)} DATA frames, median {median:.0f} B, "
          f"smallest {min(sizes, default=0)} B; {len(sizes) * 2 * PIECES} WINDOW_UPDATEs sent; GOAWAY {goaway}")
    assert goaway is None, f"the server answered window acknowledgements with {goaway}"
    assert received >= TOTAL, f"only {received} bytes arrived"
    assert median >= MIN_MEDIAN_FRAME, f"DATA frames shrank to a median of {median} bytes"
