"""HTTP/2 with real clients: curl, httpx, the ``h2`` library as a raw client, h2load and headless Chromium.

What each group proves:

- curl (``--http2-prior-knowledge`` and ``--http2``, which upgrades with ``Upgrade: h2c``) against an ASGI
  and a WSGI app: the transfer really is HTTP/2 (``%{http_version}``), a 1 MB upload comes back intact, HEAD
  has its content-length and no body, a 5 MB streamed response arrives whole, a framework's own 404 (Flask,
  Starlette) passes through, and an ASGI app's ``http.response.trailers`` arrive as HTTP/2 trailers.
- httpx over h2c (prior knowledge) and over TLS: 50 concurrent requests share one connection (the apps see
  one client port) and overlap in the app (more than one in flight at once).
- Flow control, with a raw client: a stream whose client grants no window stalls alone while another stream
  on the same connection completes, and finishes once granted; a request body is let in only as fast as
  the app reads it (the server's stream WINDOW_UPDATEs never run ahead of what the app has read).
- RST_STREAM: an ASGI app waiting in receive() gets ``http.disconnect`` when its stream is reset, before or
  in the middle of its body, and the connection's other streams go on.
- h2load: thousands of multiplexed requests to an ASGI and a WSGI app, none failed, all 2xx.
- TLS + ALPN: curl ``--http2`` gets HTTP/2 and ``--http1.1`` gets 1.1 on the same port; httpx negotiates h2;
  the scope and environ say ``https``.
- Chromium (headless, over TLS): the bascule demo page (ASGI and WSGI side by side) is served over h2, and
  its WebSocket echo works from the browser (over HTTP/2 with RFC 8441 when the server offers it).

Tools not installed are skipped with a reason: curl, h2load (Debian nghttp2-client), chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from conftest import Running, serve_in_thread
from it_h2 import AsgiApp, Cdp, RawH2, WsgiApp, digest, pattern
from it_support import APPS, wait_for
from tls_certs import ServerFiles, server_files, write_ca

Serve = Callable[..., contextlib.AbstractContextManager[Running]]
CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    result = subprocess.run([CURL, "--silent", "--show-error", "--max-time", "15", *args],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def versions(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The ``%{http_version}`` of each transfer, written by ``-w '\\n@@%{http_version}@@'``."""
    return re.findall(r"@@([0-9.]+)@@", result.stdout.decode(errors="replace"))


def body_of(result: subprocess.CompletedProcess[bytes]) -> bytes:
    return result.stdout.rsplit(b"\n@@", 1)[0]


VERSION = "\n@@%{http_version}@@"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[Running, Any]]]:
    """One in-process server per app kind for the module (the app objects are fresh, their counters too)."""
    asgi, wsgi = AsgiApp(), WsgiApp()
    with serve_in_thread(asgi) as a, serve_in_thread(wsgi) as w:
        yield {"asgi": (a, asgi), "wsgi": (w, wsgi)}


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["--http2-prior-knowledge", "--http2"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- curl -----------------------------------------------------------------------------------------------


@needs_curl
def test_curl_get(servers: dict[str, tuple[Running, Any]], kind: str, mode: str) -> None:
    srv, _ = servers[kind]
    result = curl(mode, "--verbose", "-w", VERSION, srv.url + "/hello")
    assert versions(result) == ["2"]
    assert body_of(result) == b"hello"
    trace = result.stderr.decode(errors="replace")
    assert "< HTTP/2 200" in trace
    if mode == "--http2":
        assert "< HTTP/1.1 101 Switching Protocols" in trace  # the upgrade really happened


@needs_curl
def test_curl_upload_1mb_echoed(servers: dict[str, tuple[Running, Any]], kind: str, mode: str,
                                tmp_path: Path) -> None:
    srv, _ = servers[kind]
    data = os.urandom(1024 * 1024 + 123)
    (tmp_path / "up.bin").write_bytes(data)
    # one request per curl: curl 7.88.1 (Debian 12) cannot reuse an h2c connection (curl/curl#10634)
    result = curl(mode, "-w", VERSION, "--data-binary", f"@{tmp_path / 'up.bin'}", "-H",
                  "content-type: application/octet-stream", srv.url + "/echo")
    # --http2 sends this POST with Upgrade: h2c (and Expect: 100-continue): the server may upgrade after
    # reading the body or answer over HTTP/1.1 (RFC 9113 3.2 lets it); either way the body must arrive whole
    assert versions(result) == ["2"] if mode == "--http2-prior-knowledge" else versions(result) in (["2"], ["1.1"])
    assert digest(body_of(result)) == digest(data)


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_h2c_upgrade_of_a_request_with_a_body(servers: dict[str, tuple[Running, Any]], kind: str,
                                              expect: bool) -> None:
    """``Upgrade: h2c`` on a POST with Content-Length: the app must get the body, over h2 or HTTP/1.1."""
    srv, _ = servers[kind]
    body = b"0123456789" * 100
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    settings = conn.initiate_upgrade_connection()
    assert settings is not None
    head = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: " + settings + b"\r\nContent-Length: %d\r\n" % len(body)
            + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")
    with srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(head)
        data = b""
        if expect:  # wait for 100 Continue (or a 101 that comes too early: the body then follows it anyway)
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        sock.sendall(body)
        upgraded = False
        received = bytearray()
        ended = False
        deadline = time.monotonic() + 5
        while not ended and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if not upgraded:
                if data.startswith(b"HTTP/1.1 100") and data.count(b"\r\n\r\n") >= 1:
                    data = data.split(b"\r\n\r\n", 1)[1]
                if data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
                    upgraded = True
                    with contextlib.suppress(OSError):  # the server may have given up on the connection
                        sock.sendall(conn.data_to_send())
                    chunk, data = data.split(b"\r\n\r\n", 1)[1], b""
                elif data.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in data:
                    ended = data.endswith(body) or data.endswith(b"content-length: 0\r\n\r\n")
                    continue
                else:
                    continue
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    received += event.data or b""
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, 1)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    ended = True
            with contextlib.suppress(OSError):
                sock.sendall(conn.data_to_send())
    if upgraded:
        echoed = bytes(received)
    else:  # answered over HTTP/1.1 (RFC 9113 3.2 lets the server decline): the body may be chunked
        head, _, echoed = data.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            echoed = dechunk(echoed)
    assert echoed == body, f"the app got {echoed[:60]!r} (upgraded: {upgraded}) instead of the request body"


def dechunk(data: bytes) -> bytes:
    """The payload of a complete chunked body."""
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2:]


@needs_curl
def test_curl_head(servers: dict[str, tuple[Running, Any]], kind: str, mode: str) -> None:
    srv, _ = servers[kind]
    result = curl(mode, "--head", "-w", VERSION, srv.url + "/big?n=12345")
    head, _, rest = result.stdout.removeprefix(SWITCHING).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    assert b"\r\ncontent-length: 12345" in head.lower()
    assert rest == b"\n@@2@@"  # no body


@needs_curl
def test_curl_large_streamed_response(servers: dict[str, tuple[Running, Any]], kind: str, mode: str) -> None:
    srv, _ = servers[kind]
    size = 5 * 1024 * 1024 + 7
    result = curl(mode, "-w", VERSION, srv.url + f"/big?n={size}")
    assert versions(result) == ["2"]
    assert digest(body_of(result)) == digest(pattern(size))


@needs_curl
def test_curl_404_from_the_app(servers: dict[str, tuple[Running, Any]], kind: str, mode: str) -> None:
    srv, _ = servers[kind]
    result = curl(mode, "-w", "\n@@%{http_version}@@%{http_code}", srv.url + "/nope")
    assert result.stdout == b"not found\n@@2@@404"


@needs_curl
@pytest.mark.parametrize("app", ["it_flask_app:app", "it_starlette_app:app"])
def test_curl_framework_pages_and_404(serve: Serve, app: str) -> None:
    with serve(app, app_dir=str(APPS)) as srv:
        for mode in ("--http2-prior-knowledge", "--http2"):
            ok = curl(mode, "-w", "\n@@%{http_version}@@%{http_code}", srv.url + "/")
            assert ok.stdout.endswith(b"\n@@2@@200") and ok.stdout.startswith(b"hello from ")
            missing = curl(mode, "-w", "\n@@%{http_version}@@%{http_code}", srv.url + "/no/such/page")
            assert missing.stdout.endswith(b"\n@@2@@404")
            assert b"Not Found" in missing.stdout


@needs_curl
def test_curl_response_trailers(servers: dict[str, tuple[Running, Any]], mode: str) -> None:
    srv, _ = servers["asgi"]
    result = curl(mode, "--verbose", "-H", "TE: trailers", "-w", VERSION, srv.url + "/trailers")
    assert body_of(result) == b"body before trailers\n"
    assert versions(result) == ["2"]
    expected = hashlib.sha256(b"body before trailers\n").hexdigest()
    assert f"< x-checksum: {expected}" in result.stderr.decode(errors="replace")


def test_trailers_with_raw_client(servers: dict[str, tuple[Running, Any]]) -> None:
    srv, _ = servers["asgi"]
    client = RawH2(srv.port)
    try:
        st = client.streams[client.request("GET", "/trailers", headers=[("te", "trailers")])]
        assert client.wait(lambda: st.done)
        assert st.status == 200 and st.ended and bytes(st.data) == b"body before trailers\n"
        assert st.trailers == {"x-checksum": hashlib.sha256(b"body before trailers\n").hexdigest()}
        assert "content-length" not in st.headers
    finally:
        client.close()


# -- httpx ----------------------------------------------------------------------------------------------


async def fifty_at_once(url: str, **client_options: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=15, **client_options) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(50)))


def test_httpx_concurrent_requests_share_one_connection(servers: dict[str, tuple[Running, Any]], kind: str) -> None:
    srv, app = servers[kind]
    app.max_active = 0
    responses = asyncio.run(asyncio.wait_for(fifty_at_once(srv.url + "/port?delay=0.05"), 30))
    assert {r.status_code for r in responses} == {200}
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert len({r.text for r in responses}) == 1  # one client port: one connection
    assert app.max_active > 1  # and the requests were in the app at the same time


# -- flow control ---------------------------------------------------------------------------------------


def test_stalled_stream_does_not_block_others(servers: dict[str, tuple[Running, Any]], kind: str) -> None:
    srv, _ = servers[kind]
    window = 16384
    size = 2 * 1024 * 1024
    client = RawH2(srv.port, window=window)
    try:
        a = client.request("GET", f"/big?n={size}")
        client.held.add(a)  # A's DATA is never acknowledged: its window stays shut
        stream_a = client.streams[a]
        assert client.wait(lambda: len(stream_a.data) >= window, 5)
        b = client.request("GET", "/hello")
        stream_b = client.streams[b]
        assert client.wait(lambda: stream_b.done, 5), "stream B was blocked behind the stalled stream A"
        assert stream_b.status == 200 and bytes(stream_b.data) == b"hello"
        client.idle(0.3)
        assert not stream_a.done and len(stream_a.data) == window  # never more than it was granted
        client.grant(a, 2 * size)
        assert client.wait(lambda: stream_a.done, 10)
        assert stream_a.ended and stream_a.status == 200
        assert digest(bytes(stream_a.data)) == digest(pattern(size))
        c = client.streams[client.request("GET", "/hello")]  # and the connection goes on
        assert client.wait(lambda: c.done, 5) and bytes(c.data) == b"hello"
    finally:
        client.close()


def test_request_body_enters_only_as_the_app_reads(serve: Serve, kind: str) -> None:
    window = 64 * 1024
    app = AsgiApp() if kind == "asgi" else WsgiApp()
    # what the app may not have read yet although the server took it off the stream: nothing for ASGI (a
    # receive() hands over all that is buffered); for WSGI, what wsgi.input holds between read(16384) calls
    slack = 0 if kind == "asgi" else window
    data = os.urandom(6 * window + 1000)
    with serve(app, h2_initial_window_size=window) as srv:
        client = RawH2(srv.port)
        try:
            assert client.remote_settings.get(4) == window  # SETTINGS_INITIAL_WINDOW_SIZE as configured
            sid = client.request("POST", "/slow-read?first=0.3", end=False)
            checks: list[tuple[int, int]] = []  # (stream window granted beyond the initial one, app's read total)

            def on_stall() -> None:
                granted = sum(inc for s, inc in client.window_updates if s == sid)
                checks.append((granted, app.read_total))

            start = time.monotonic()
            client.send_body(sid, data, on_stall=on_stall)
            st = client.streams[sid]
            assert client.wait(lambda: st.done, 10)
        finally:
            client.close()
    assert json.loads(bytes(st.data)) == digest(data)
    assert checks, "the client never had to wait: the server let in more than its window"
    # before the app read anything (it sleeps 0.3 s first), nothing beyond the initial window was granted
    assert checks[0] == (0, 0)
    assert time.monotonic() - start >= 0.3
    for granted, read in checks:
        assert granted <= read + slack, f"the server granted {granted} bytes of window when the app had read {read}"
    assert sum(inc for s, inc in client.window_updates if s == sid) <= len(data)


# -- RST_STREAM -> http.disconnect ------------------------------------------------------------------------


@pytest.mark.parametrize("body_sent", [True, False], ids=["after-body", "mid-body"])
def test_reset_stream_is_http_disconnect(serve: Serve, body_sent: bool) -> None:
    app = AsgiApp()
    with serve(app) as srv:
        client = RawH2(srv.port)
        try:
            other = client.streams[client.request("GET", "/big?n=100000")]
            sid = client.request("POST", "/wait-disconnect", body=b"partial" if not body_sent else b"whole",
                                 end=body_sent)
            assert wait_for(app.waiting.is_set, 5)
            client.idle(0.1)
            assert not app.disconnected.is_set()
            client.reset(sid)
            assert wait_for(app.disconnected.is_set, 5), f"the app saw {app.messages}, not http.disconnect"
            assert app.messages[-1] == "http.disconnect"
            assert client.wait(lambda: other.done, 5) and other.ended
            assert digest(bytes(other.data)) == digest(pattern(100000))
            after = client.streams[client.request("GET", "/hello")]
            assert client.wait(lambda: after.done, 5) and bytes(after.data) == b"hello"
            assert client.terminated is None
        finally:
            client.close()


# -- h2load ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(H2LOAD is None, reason="h2load is not installed (Debian: apt-get install nghttp2-client)")
def test_h2load(servers: dict[str, tuple[Running, Any]], kind: str) -> None:
    assert H2LOAD is not None
    srv, _ = servers[kind]
    result = subprocess.run([H2LOAD, "-n", "5000", "-c", "4", "-m", "16", srv.url + "/hello"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Application protocol: h2c" in out, out
    assert re.search(r"requests: 5000 total, 5000 started, 5000 done, 5000 succeeded, 0 failed, 0 errored", out), out
    assert re.search(r"status codes: 5000 2xx, 0 3xx, 0 4xx, 0 5xx", out), out


# -- TLS + ALPN -----------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path)


@pytest.fixture
def https(serve: Serve, files: ServerFiles) -> Callable[..., contextlib.AbstractContextManager[Running]]:
    def start(app: Any, **options: Any) -> contextlib.AbstractContextManager[Running]:
        return serve(app, ssl_certfile=str(files.cert), ssl_keyfile=str(files.key), **options)

    return start


@needs_curl
def test_tls_alpn_with_curl(https: Callable[..., Any], files: ServerFiles, tmp_path: Path, kind: str) -> None:
    ca = write_ca(files.ca, tmp_path / "ca.pem")
    with https(AsgiApp() if kind == "asgi" else WsgiApp()) as srv:
        url = f"https://127.0.0.1:{srv.port}/scope"
        h2 = curl("--http2", "--cacert", str(ca), "-w", VERSION, url)
        h11 = curl("--http1.1", "--cacert", str(ca), "-w", VERSION, url)
        upload = os.urandom(300_000)
        (tmp_path / "up.bin").write_bytes(upload)
        echoed = curl("--http2", "--cacert", str(ca), "-w", VERSION, "--data-binary", f"@{tmp_path / 'up.bin'}",
                      url.replace("/scope", "/echo"))
    assert versions(h2) == ["2"] and versions(h11) == ["1.1"]
    facts_h2, facts_h11 = json.loads(body_of(h2)), json.loads(body_of(h11))
    assert facts_h2["scheme"] == facts_h11["scheme"] == "https"
    assert facts_h2["http_version"] in ("2", "HTTP/2") and facts_h11["http_version"] in ("1.1", "HTTP/1.1")
    assert versions(echoed) == ["2"] and digest(body_of(echoed)) == digest(upload)


def test_tls_httpx_http2(https: Callable[..., Any], files: ServerFiles, kind: str) -> None:
    app = AsgiApp() if kind == "asgi" else WsgiApp()
    with https(app) as srv:
        url = f"https://127.0.0.1:{srv.port}"
        with httpx.Client(http2=True, verify=files.client_context(), timeout=10) as client:
            r = client.get(url + "/scope")
        responses = asyncio.run(asyncio.wait_for(
            fifty_at_once(url + "/port?delay=0.05", verify=files.client_context()), 30))
    assert r.http_version == "HTTP/2"
    assert r.json()["scheme"] == "https"
    assert {x.http_version for x in responses} == {"HTTP/2"} and len({x.text for x in responses}) == 1
    assert app.max_active > 1


def test_tls_flow_control_and_reset(https: Callable[..., Any], files: ServerFiles) -> None:
    """The raw-client checks once more over TLS, where writes go through the SSL transport's buffer."""
    app = AsgiApp()
    with https(app) as srv:
        client = RawH2(srv.port, window=16384, tls=files.client_context())
        try:
            a = client.request("GET", "/big?n=1000000")
            client.held.add(a)
            b = client.streams[client.request("GET", "/scope")]
            assert client.wait(lambda: b.done, 5) and json.loads(bytes(b.data))["scheme"] == "https"
            sid = client.request("GET", "/wait-disconnect")
            assert wait_for(app.waiting.is_set, 5)
            client.reset(sid)
            assert wait_for(app.disconnected.is_set, 5)
            client.grant(a, 2_000_000)
            assert client.wait(lambda: client.streams[a].done, 10)
            assert digest(bytes(client.streams[a].data)) == digest(pattern(1000000))
        finally:
            client.close()


# -- headless Chromium ----------------------------------------------------------------------------------


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@contextlib.contextmanager
def chromium(profile: Path, extra: Sequence[str] = ()) -> Iterator[str]:
    """A headless Chromium with no network of its own; yields its DevTools WebSocket URL. ``extra``: more
    command-line flags (tests/integration/test_it_h3_browser.py forces QUIC with them)."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", "--ignore-certificate-errors",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
            "--no-proxy-server", *extra, "about:blank"]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        if not wait_for(lambda: proc.poll() is not None or (port_file.exists() and port_file.read_text().count("\n")),
                        20):
            pytest.skip("chromium did not start within 20 s")
        if proc.poll() is not None:
            pytest.skip(f"chromium exited with {proc.returncode}: "
                        f"{(profile.parent / 'chromium.log').read_text(errors='replace')[-500:]}")
        port, path = port_file.read_text().split("\n")[:2]
        yield f"ws://127.0.0.1:{port.strip()}{path.strip()}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


ECHO_IN_PAGE = """
new Promise((resolve, reject) => {
  const ws = new WebSocket("wss://" + location.host + "/ws-echo");
  const timer = setTimeout(() => reject(new Error("no echo within 5 s")), 5000);
  ws.onopen = () => ws.send("ping over " + location.protocol);
  ws.onmessage = (event) => { clearTimeout(timer); ws.close(); resolve(event.data); };
  ws.onerror = () => { clearTimeout(timer); reject(new Error("websocket error")); };
})
"""


WAIT_OPEN = """
new Promise((resolve, reject) => {
  const t = Date.now();
  const f = () => { const status = document.getElementById("status")?.textContent;
    status === "open" ? resolve(true) : Date.now() - t > 5000 ? reject(new Error("page WebSocket: " + status))
    : setTimeout(f, 20); };
  f();
})
"""
TYPE_AND_WAIT = """
new Promise((resolve, reject) => {
  document.getElementById("text").value = "hi from chromium";
  document.querySelector("#form button").click();
  const t = Date.now();
  const f = () => { const log = document.getElementById("log").textContent;
    log.includes("echo: ") ? resolve(log) : Date.now() - t > 5000 ? reject(new Error("no echo: " + log))
    : setTimeout(f, 20); };
  f();
})
"""


async def drive_demo(devtools: str, origin: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    async with connect(devtools, max_size=None, open_timeout=10) as ws:
        cdp = Cdp(ws)
        try:
            await cdp.open_page()
            await cdp.call("Network.enable")
            await cdp.call("Page.enable")
            await cdp.call("Runtime.enable")
            facts: dict[str, Any] = {}
            for path in ("/", "/wsgi/"):
                await cdp.navigate(origin + path)
                facts[path] = await cdp.evaluate("document.body.innerText")
            await cdp.navigate(origin + "/ws-echo")
            try:  # a WebSocket of our own from the page, then the page's own script (its form and log)
                facts["echo"] = await cdp.evaluate(ECHO_IN_PAGE, timeout=10)
            except (RuntimeError, TimeoutError) as exc:
                facts["echo"] = f"failed: {str(exc)[:300]}"
            try:
                await cdp.evaluate(WAIT_OPEN)
                facts["page_log"] = await cdp.evaluate(TYPE_AND_WAIT)
            except (RuntimeError, TimeoutError) as exc:
                facts["page_log"] = f"failed: {str(exc)[:200]}"
            facts["page_errors"] = [e["exceptionDetails"]["exception"].get("description", "")
                                    for e in cdp.seen("Runtime.exceptionThrown")]
            facts["responses"] = {r["response"]["url"]: r["response"].get("protocol")
                                  for r in cdp.seen("Network.responseReceived")}
            facts["ws_events"] = [(e["method"], e["params"].get("response", e["params"].get("errorMessage")))
                                  for e in cdp.events if e.get("method", "").startswith("Network.webSocket")
                                  and "Frame" not in e["method"]]
            facts["ws_handshakes"] = [r["response"]["status"]
                                      for r in cdp.seen("Network.webSocketHandshakeResponseReceived")]
            return facts
        finally:
            cdp.reader.cancel()


def test_chromium_loads_the_demo_over_h2(serve: Serve, files: ServerFiles) -> None:
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="bascule-chromium-") as tmp, \
            serve("bascule.demo:asgi_app", mount=("/wsgi=bascule.demo:wsgi_app",), ssl_certfile=str(files.cert),
                  ssl_keyfile=str(files.key)) as srv, \
            chromium(Path(tmp) / "profile") as devtools:
        origin = f"https://127.0.0.1:{srv.port}"
        facts = asyncio.run(asyncio.wait_for(drive_demo(devtools, origin), 40))
    assert "Answered by the ASGI app" in facts["/"] and "served over HTTP/2." in facts["/"]
    assert "Answered by the WSGI app" in facts["/wsgi/"] and "served over HTTP/2." in facts["/wsgi/"]
    for path in ("/", "/wsgi/", "/ws-echo"):
        assert facts["responses"][origin + path] == "h2", facts["responses"]
    # a WebSocket opened from the page: over h2 with RFC 8441 its handshake is a 200 to an extended CONNECT,
    # over HTTP/1.1 a 101
    print(f"chromium WebSocket handshake statuses: {facts['ws_handshakes']}")
    assert facts["echo"] == "ping over https:", facts["ws_events"]
    assert facts["ws_handshakes"] and set(facts["ws_handshakes"]) <= {200, 101}
    # the demo page's own script: it opens its WebSocket on load, sends what is typed, logs the echo
    assert not facts["page_errors"], f"the demo page's script does not run: {facts['page_errors']}"
    assert "sent: hi from chromium" in facts["page_log"] and "echo: hi from chromium" in facts["page_log"]
