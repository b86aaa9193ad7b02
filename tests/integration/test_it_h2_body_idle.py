"""--timeout-body-idle over HTTP/2 on real sockets: a bascule process (``--timeout-body-idle 1``) serving
tests/integration/apps/it_sink.py (an ASGI app at / and a WSGI one under /wsgi, each reading its whole body),
and the ``h2`` library as a raw client on one prior-knowledge connection.

On that connection: a stream that sends its HEADERS and then no body (the attack: each such stream held an
app in receive() for as long as the connection lived, PINGs keeping it alive) is answered 408 and reset,
for the ASGI and the WSGI app alike; a stream that uploads a byte every 0.3 s, for three times the timeout
in all, completes; and the connection goes on serving.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from h2.errors import ErrorCodes
from it_h2 import RawH2
from it_support import APPS, clean_env, spawn, tcp_ready

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX sockets"),
              pytest.mark.timeout(60)]

TIMEOUT = 1.0


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    args = ["it_sink:asgi_app", "--mount", "/wsgi=it_sink:wsgi_app", "--port", str(port), "--no-access-log",
            "--timeout-body-idle", str(TIMEOUT)]
    with spawn(args, cwd=APPS, env=clean_env(), log=tmp_path / "server.log", ready=tcp_ready(port)):
        yield port


def test_stalled_uploads_get_408_while_a_slow_one_completes(port: int) -> None:
    client = RawH2(port)
    try:
        stalled = client.request("POST", "/", end=False)
        stalled_wsgi = client.request("POST", "/wsgi/", end=False)
        slow = client.request("POST", "/", end=False)
        start = time.monotonic()
        for _ in range(10):  # 3 s in all, never idle for the timeout
            client.idle(TIMEOUT * 0.3)
            client.conn.ping(b"12345678")  # a busy connection does not keep a stalled stream alive
            client.send_body(slow, b"x", end=False)
        client.send_body(slow, b"", end=True)
        assert client.wait(lambda: all(client.streams[s].done for s in (stalled, stalled_wsgi, slow)), 10)
        for sid in (stalled, stalled_wsgi):
            st = client.streams[sid]
            assert st.status == 408 and st.ended, (sid, st)
            assert b"timeout_body_idle" in st.data
            assert st.reset in (None, ErrorCodes.NO_ERROR)  # the upload is stopped after the 408 (RFC 9113 8.1)
        assert client.streams[slow].status == 200 and bytes(client.streams[slow].data) == b"10"
        assert client.streams[slow].reset is None
        assert time.monotonic() - start < 8
        after = client.request("POST", "/", body=b"abc")
        assert client.wait(lambda: client.streams[after].done, 5)
        assert bytes(client.streams[after].data) == b"3"
        assert client.terminated is None
    finally:
        client.close()
