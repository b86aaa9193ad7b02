"""--admin-bind, --readiness-check and --shutdown-delay in one serving process (server.py with ops/)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from conftest import free_port, http_exchange, serve_in_thread

from bascule.cli import main
from bascule.config import Config
from bascule.errors import ConfigError
from bascule.server import Server


async def hello(scope: dict[str, object], receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"hello"})  # type: ignore[operator]


def get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        raw = http_exchange(sock, f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("spec", ["127.0.0.1:9000", "127.0.0.2:0", "[::1]:9000", "localhost:9000", "unix:/tmp/a.sock"])
def test_admin_bind_accepts_loopback_and_unix(spec: str) -> None:
    assert Config(app="a:b", admin_bind=spec).admin_bind == spec


@pytest.mark.parametrize(("spec", "words"), [
    ("0.0.0.0:9000", "not a loopback address"),
    (":9000", "not a loopback address"),
    ("10.0.0.1:9000", "not a loopback address"),
    ("[::]:9000", "not a loopback address"),
    ("example.com:9000", "not a loopback address"),
    ("fd://3", "loopback HOST:PORT or unix:PATH"),
    ("proxy+127.0.0.1:9000", "loopback HOST:PORT or unix:PATH"),
    ("uwsgi://127.0.0.1:9000", "loopback HOST:PORT or unix:PATH"),
    ("127.0.0.1", "must look like HOST:PORT"),
])
def test_admin_bind_refuses_the_rest(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Config(app="a:b", admin_bind=spec)


@pytest.mark.parametrize(("spec", "message"), [
    ("unix:", "admin_bind 'unix:' needs a path: write unix:/run/app.sock"),
    ("127.0.0.1", "admin_bind '127.0.0.1' must look like HOST:PORT (port 0-65535), [::1]:PORT or unix:PATH"),
    ("127.0.0.1:99999", "admin_bind '127.0.0.1:99999' must look like HOST:PORT (port 0-65535), [::1]:PORT or "
                        "unix:PATH"),
])
def test_admin_bind_errors_name_admin_bind(spec: str, message: str) -> None:
    # the parser's words are --bind's: they named the wrong option, and offered fd://N, which admin_bind refuses
    with pytest.raises(ConfigError) as caught:
        Config(app="a:b", admin_bind=spec)
    assert str(caught.value) == message


def test_other_option_errors() -> None:
    with pytest.raises(ConfigError, match="shutdown_delay must be a number of seconds >= 0"):
        Config(app="a:b", shutdown_delay=-1)
    with pytest.raises(ConfigError, match="shutdown_delay"):
        Config(app="a:b", shutdown_delay=float("nan"))
    with pytest.raises(ConfigError, match="readiness_check 'nocolon' must look like MODULE:ATTR"):
        Config(app="a:b", readiness_check="nocolon")


@pytest.mark.parametrize("app_side", [
    {"uds": "/tmp/app16.sock"},
    {"bind": ("127.0.0.1:8001", "unix:/tmp/app16.sock")},
    {"bind": ("uwsgi://unix:/tmp/app16.sock",)},
])
def test_admin_bind_cannot_share_the_apps_unix_socket(app_side: dict[str, object]) -> None:
    # bind_unix replaces a socket file already there: the second listener would take the first one's path
    with pytest.raises(ConfigError, match=r"admin_bind 'unix:/tmp/app16\.sock' is also where the app listens"):
        Config(app="a:b", admin_bind="unix:/tmp/app16.sock", **app_side)  # type: ignore[arg-type]


@pytest.mark.parametrize(("app_side", "admin"), [
    ({"port": 9016}, "127.0.0.1:9016"),
    ({"host": "0.0.0.0", "port": 9016}, "127.0.0.1:9016"),
    ({"bind": (":9016",)}, "127.0.0.1:9016"),
    ({"bind": ("[::]:9016",)}, "[::1]:9016"),
    ({"bind": ("proxy+127.0.0.1:9016",)}, "127.0.0.1:9016"),
])
def test_admin_bind_cannot_share_the_apps_port(app_side: dict[str, object], admin: str) -> None:
    with pytest.raises(ConfigError, match="is also where the app listens"):
        Config(app="a:b", admin_bind=admin, **app_side)  # type: ignore[arg-type]


def test_admin_bind_beside_the_app() -> None:
    assert Config(app="a:b", port=9016, admin_bind="127.0.0.1:9017").admin_bind == "127.0.0.1:9017"
    assert Config(app="a:b", port=0, admin_bind="127.0.0.1:0").admin_bind == "127.0.0.1:0"
    assert Config(app="a:b", bind=("127.0.0.2:9016",), admin_bind="127.0.0.1:9016").admin_bind
    assert Config(app="a:b", uds="/tmp/app16.sock", admin_bind="unix:/tmp/admin16.sock").admin_bind


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BASCULE_")]:  # CI sets BASCULE_EXPECT_COMPILED
        monkeypatch.delenv(name)
    assert main(["a:b", "--admin-bind", "0.0.0.0:9000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bascule: admin_bind '0.0.0.0:9000' is not a loopback address")
    assert main(["a:b", "--shutdown-delay", "soon"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_admin_routes_in_process() -> None:
    port = free_port()
    with serve_in_thread(hello, admin_bind=f"127.0.0.1:{port}") as srv:
        assert get(port, "/livez") == (200, b"ok\n")
        assert get(port, "/readyz") == (200, b"ok\n")
        metrics = get(port, "/metrics")  # on by default with --admin-bind
        assert metrics[0] == 200 and b"# TYPE bascule_requests_total counter\n" in metrics[1]
        status = json.loads(get(port, "/status.json")[1])
        assert status["mode"] == "process" and status["ready"] is True and status["draining"] is False
        assert get(srv.port, "/readyz") == (200, b"hello")  # the app's port is the app's: no admin route there
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)  # closed with the server
    with serve_in_thread(hello, admin_bind=f"127.0.0.1:{port}", metrics=False):
        assert get(port, "/metrics")[0] == 404
        assert json.loads(get(port, "/status.json")[1])["metrics"] is None


def test_admin_port_in_use_is_one_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Exception, match=f"cannot bind 127.0.0.1:{port}"), \
                serve_in_thread(hello, admin_bind=f"127.0.0.1:{port}"):
            pass


def test_shutdown_delay_fails_readyz_at_once_and_serves_on() -> None:
    port = free_port()
    with serve_in_thread(hello, admin_bind=f"127.0.0.1:{port}", shutdown_delay=0.6) as srv:
        server = srv.server
        assert server is not None and server._loop is not None
        server._loop.call_soon_threadsafe(server._on_signal, signal.SIGTERM)
        time.sleep(0.1)
        assert get(port, "/readyz") == (503, b"draining: the server is stopping\n")
        assert get(port, "/livez") == (200, b"ok\n")
        assert get(srv.port, "/") == (200, b"hello")  # still accepting and serving during the delay
        assert json.loads(get(port, "/status.json")[1])["draining"] is True
        time.sleep(0.9)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1)  # the delay is over: stopped


def test_a_second_signal_skips_the_delay() -> None:
    with serve_in_thread(hello, shutdown_delay=30) as srv:
        server = srv.server
        assert server is not None and server._loop is not None
        server._loop.call_soon_threadsafe(server._on_signal, signal.SIGTERM)
        time.sleep(0.1)
        assert get(srv.port, "/") == (200, b"hello")
        started = time.monotonic()
        server._loop.call_soon_threadsafe(server._on_signal, signal.SIGTERM)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.02)
        assert time.monotonic() - started < 2


def test_readiness_check_in_process(tmp_path: Path) -> None:
    down = str(tmp_path / "down")
    (tmp_path / "probe_mod_b.py").write_text(f"import os\n\ndef ready():\n    return not os.path.exists({down!r})\n")
    port = free_port()
    with serve_in_thread(hello, admin_bind=f"127.0.0.1:{port}", readiness_check="probe_mod_b:ready",
                         app_dir=str(tmp_path)):
        deadline = time.monotonic() + 5  # a sync check runs in a thread: its first answer is a moment away
        while get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(port, "/readyz") == (200, b"ok\n")
        (tmp_path / "down").touch()
        deadline = time.monotonic() + 5
        while get(port, "/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get(port, "/readyz") == (503, b"readiness check failing: returned False\n")


def test_a_missing_readiness_check_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="nope"), serve_in_thread(hello, readiness_check="nope_mod_x:ready",
                                                                    app_dir=str(tmp_path)):
        pass


def test_uds_mode_applies_to_a_unix_admin_socket(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    assert Config(app="a:b", admin_bind=f"unix:{path}", uds_mode="660").uds_mode == "660"
    with serve_in_thread(hello, admin_bind=f"unix:{path}", uds_mode="600"):
        assert path.stat().st_mode & 0o777 == 0o600


async def failing_startup(scope: dict[str, object], receive: object, send: object) -> None:
    if scope["type"] == "lifespan":
        await receive()  # type: ignore[operator]
        await send({"type": "lifespan.startup.failed", "message": "no database"})  # type: ignore[operator]


def test_a_failed_startup_releases_the_admin_port() -> None:
    port = free_port()
    with pytest.raises(Exception, match="no database"), \
            serve_in_thread(failing_startup, admin_bind=f"127.0.0.1:{port}", lifespan="on"):
        pass
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # free again (SO_REUSEADDR is not set here: nothing may hold it)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_worker_is_ready_once_its_check_has_answered(tmp_path: Path, kind: str) -> None:
    # READY makes the master retire the worker this one replaces: with no answer yet, the master's /readyz
    # failed ('not run yet') between the two, on every SIGHUP and recycle of a single worker
    prefix = "async " if kind == "async" else ""
    (tmp_path / f"probe_mod_{kind}.py").write_text(f"{prefix}def ready():\n    return True\n")
    changes: list[tuple[bool, str]] = []
    seen_at_ready: list[list[tuple[bool, str]]] = []
    server: Server | None = None

    def on_ready() -> None:
        seen_at_ready.append(list(changes))
        assert server is not None
        server.request_exit()

    config = Config(app="x:y", port=0, access_log=False, readiness_check=f"probe_mod_{kind}:ready",
                    app_dir=str(tmp_path), lifespan="off")
    server = Server(config, hello, on_ready=on_ready, on_readiness=lambda ok, why: changes.append((ok, why)))
    asyncio.run(asyncio.wait_for(server.serve(), 10))
    assert seen_at_ready == [[(True, "")]]
