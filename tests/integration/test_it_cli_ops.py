"""Operating the ``bascule`` command: signals and graceful shutdown, startup errors, listeners, headers,
limits, access logs, logging configs and the config-file/env/flag precedence. Every test runs the real
command as a subprocess (apps from apps/), because only a process shows signals, exit codes and stderr.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import APPS, can_connect, clean_env, exit_within, log_lines_with, spawn, tcp_ready, wait_for

from bascule import __version__

SERVER_ERROR_LINE = re.compile(r"^bascule: ")


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for reading several responses at the same time."""
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def get(url: str, timeout: float = 15.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout)


def send_requests(port: int, target: str, count: int) -> list[socket.socket]:
    """``count`` connections, each with one GET already sent: requests in flight once the server reads them.

    Raw sockets rather than client threads, so that "in flight" does not depend on how fast threads start.
    """
    socks = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(count)]
    for sock in socks:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return socks


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a reset counts as a close)."""
    data = b""
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def run_bascule(*args: str, cwd: Path | str = APPS,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m bascule ARGS`` for commands that end by themselves (errors, --help, --version)."""
    return subprocess.run([sys.executable, "-m", "bascule", *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=20)


def bascule_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if SERVER_ERROR_LINE.match(line)]


class Proc:
    """A started server: its process, port and log file."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``start(app, *flags, env=...)``: a bascule process on a fresh port, stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def _start(app: str, *flags: str, env: dict[str, str] | None = None) -> Proc:
            port = free_port()
            log = tmp_path / f"server-{port}.log"
            proc = stack.enter_context(spawn([app, *flags, "--port", str(port)], env=env or clean_env(), log=log,
                                             ready=tcp_ready(port)))
            return Proc(proc, port, log)

        yield _start


APPS_BY_KIND = {"asgi": "it_ops_asgi:app", "wsgi": "it_ops_wsgi:app"}


# -- signals and graceful shutdown -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_sigterm_lets_requests_in_flight_finish(kind: str, start: Callable[..., Proc], pool: ThreadPoolExecutor,
                                                tmp_path: Path) -> None:
    marker = tmp_path / "lifespan-shutdown"
    srv = start(APPS_BY_KIND[kind], env=clean_env(IT_MARKER=str(marker)))
    in_flight = send_requests(srv.port, "/sleep?s=1.5", 3)
    time.sleep(0.3)
    srv.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # the listener closes at once: new connections are refused while the three requests still run
    assert wait_for(lambda: not can_connect(socket.AF_INET, ("127.0.0.1", srv.port)), 1.0)
    futures = [pool.submit(read_to_eof, sock) for sock in in_flight]  # read all three at the same time
    responses = [f.result(timeout=10) for f in futures]
    for raw in responses:
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), raw
        assert b"\r\nconnection: close" in head.lower()
        assert body == b"slept"
    assert srv.proc.wait(10) == 0
    assert time.monotonic() - signalled > 0.8  # it did wait for them (they end ~1.2 s after the signal)
    if kind == "asgi":
        assert marker.read_text() == "shutdown"
    assert "received SIGTERM" in srv.log()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_graceful_shutdown_timeout_cuts_long_requests(kind: str, start: Callable[..., Proc]) -> None:
    srv = start(APPS_BY_KIND[kind], "--timeout-graceful-shutdown", "1")
    [stuck] = send_requests(srv.port, "/sleep?s=10", 1)
    time.sleep(0.3)
    srv.signal(signal.SIGTERM)
    took = exit_within(srv.proc, 3.5)
    assert took is not None and took < 3.0, f"still running after SIGTERM: {srv.log()}"
    assert srv.proc.returncode == 0
    assert read_to_eof(stuck) == b""  # the client sees its connection closed, not a made-up response
    assert "closing 1 connection(s) still busy" in srv.log()


def test_graceful_shutdown_timeout_bounds_stuck_wsgi_threads(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_wsgi:app", "--timeout-graceful-shutdown", "1", "--no-access-log")
    stuck = send_requests(srv.port, "/sleep?s=10", 3)
    time.sleep(0.3)  # three worker threads are now inside time.sleep(10)
    srv.signal(signal.SIGTERM)
    took = exit_within(srv.proc, 6)
    assert [read_to_eof(sock) for sock in stuck] == [b"", b"", b""]
    assert took is not None and took < 1.8, f"--timeout-graceful-shutdown 1 took {took} s with 3 stuck threads"


def test_sigterm_closes_idle_keepalive_connections_at_once(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_asgi:app", "--timeout-keep-alive", "30")
    used = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    used.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    head = used.recv(65536)
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"hello")
    never_used = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    time.sleep(0.1)
    srv.signal(signal.SIGTERM)
    took = exit_within(srv.proc, 5)
    assert took is not None and took < 2.0, f"idle keep-alive connections held the shutdown: {srv.log()}"
    assert srv.proc.returncode == 0
    for sock in (used, never_used):
        with sock:
            assert sock.recv(1024) == b""  # EOF, not a timeout


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_second_sigint_exits_at_once(kind: str, start: Callable[..., Proc]) -> None:
    srv = start(APPS_BY_KIND[kind])
    [stuck] = send_requests(srv.port, "/sleep?s=10", 1)
    time.sleep(0.3)
    srv.signal(signal.SIGINT)
    assert wait_for(lambda: "shutting down gracefully" in srv.log(), 3)
    assert srv.proc.poll() is None  # the first one waits for the request
    srv.signal(signal.SIGINT)
    took = exit_within(srv.proc, 3)
    assert took is not None and took < 1.5, f"second SIGINT did not stop it: {srv.log()}"
    assert read_to_eof(stuck) == b""
    assert "second interrupt" in srv.log()


def test_second_sigint_logs_no_traceback(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_asgi:app")
    [stuck] = send_requests(srv.port, "/sleep?s=10", 1)
    time.sleep(0.3)
    srv.signal(signal.SIGINT)
    assert wait_for(lambda: "shutting down gracefully" in srv.log(), 3)
    srv.signal(signal.SIGINT)
    assert exit_within(srv.proc, 3) is not None
    stuck.close()
    log = srv.log()
    assert "Traceback" not in log
    assert "CancelledError" not in log


# -- startup errors: one line, the right exit code ---------------------------------------------------


@pytest.fixture
def main_dir(tmp_path: Path) -> Path:
    """A directory with main.py holding an ASGI ``app``, as a user's project would."""
    (tmp_path / "main.py").write_text((APPS / "it_ops_asgi.py").read_text())
    return tmp_path


def test_misspelt_module_suggests_the_real_one(main_dir: Path) -> None:
    result = run_bascule("mian:app", cwd=main_dir)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bascule: ")
    assert "did you mean 'main'" in lines[0]


def test_misspelt_attribute_suggests_the_real_one(main_dir: Path) -> None:
    result = run_bascule("main:ap", cwd=main_dir)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bascule: ")
    assert "did you mean 'app'" in lines[0]


def test_module_raising_at_import_names_exception_and_user_line() -> None:
    result = run_bascule("it_broken:app")
    assert result.returncode == 3
    assert "Traceback (most recent call last)" not in result.stderr
    lines = bascule_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "KeyError" in lines[0] and "DATABASE_URL" in lines[0]
    assert 'it_broken.py", line 7' in result.stderr  # the raise inside the user's function
    assert 'it_broken.py", line 10' in result.stderr  # and the module-level call that got there
    assert "importlib" not in result.stderr and "bascule/" not in result.stderr


def test_bad_port_value_is_a_usage_error(main_dir: Path) -> None:
    result = run_bascule("main:app", "--port", "abc", cwd=main_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["bascule: --port expects an integer, got 'abc'"]


def test_unknown_flag_suggests_the_close_one(main_dir: Path) -> None:
    result = run_bascule("main:app", "--prot", "1", cwd=main_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bascule: ")
    assert "did you mean --port" in lines[0]


def test_unknown_key_in_bascule_toml(main_dir: Path) -> None:
    (main_dir / "bascule.toml").write_text('app = "main:app"\nprot = 8000\n')
    result = run_bascule(cwd=main_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bascule: ")
    assert "'prot'" in lines[0] and "bascule.toml" in lines[0] and "did you mean 'port'" in lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_is_exit_4_with_one_clear_line(busy_port: int) -> None:
    result = run_bascule("it_ops_wsgi:app", "--port", str(busy_port))
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    lines = bascule_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert f"cannot bind 127.0.0.1:{busy_port}" in lines[0]
    assert "Address already in use" in lines[0] and "--port" in lines[0]


def test_port_in_use_with_lifespan_app_prints_no_traceback(busy_port: int) -> None:
    result = run_bascule("it_ops_asgi:app", "--port", str(busy_port))
    assert result.returncode == 4
    assert len(bascule_lines(result.stderr)) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_help() -> None:
    result = run_bascule("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"bascule {__version__}"
    result = run_bascule("--help")
    assert result.returncode == 0
    for flag in ("--port", "--host", "--uds", "--fd", "--root-path", "--limit-concurrency", "--access-log-format",
                 "--no-access-log", "--log-config", "--timeout-graceful-shutdown", "--header", "MODULE:ATTR"):
        assert flag in result.stdout
    assert "BASCULE_PORT" in result.stdout


# -- listeners ---------------------------------------------------------------------------------------


def test_unix_domain_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sock")
    log = tmp_path / "uds.log"
    with (spawn(["it_ops_asgi:app", "--uds", path], log=log, ready=lambda: can_connect(socket.AF_UNIX, path)),
          httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client):
        r = client.get("http://bascule/hello")
        assert r.status_code == 200 and r.text == "hello"
        r = client.post("http://bascule/echo", content=b"x" * 100_000)
        assert r.json()["size"] == 100_000
    assert f"http+unix:{path}" in log.read_text()


def test_inherited_file_descriptor(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # as systemd socket activation hands it over
    port = sock.getsockname()[1]
    fd = sock.fileno()
    log = tmp_path / "fd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bascule", "it_ops_wsgi:app", "--fd", str(fd)], cwd=APPS,
                                env=clean_env(), stdout=out, stderr=subprocess.STDOUT, pass_fds=(fd,))
    sock.close()  # the server owns it now
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10)
        assert r.status_code == 200 and r.text == "hello"
        assert wait_for(lambda: f"http://127.0.0.1:{port}" in log.read_text(), 2)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_ipv6_loopback(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not available here")
    port = free_port()
    log = tmp_path / "v6.log"
    with spawn(["it_ops_asgi:app", "--host", "::1", "--port", str(port)], log=log, ready=tcp_ready(port, "::1")):
        r = httpx.get(f"http://[::1]:{port}/hello", timeout=10)
        assert r.status_code == 200 and r.text == "hello"
        assert not can_connect(socket.AF_INET, ("127.0.0.1", port))  # bound to ::1 only
    assert f"http://[::1]:{port}" in log.read_text()


# -- what the server adds to requests and responses --------------------------------------------------


def test_root_path_reaches_asgi_and_wsgi(start: Callable[..., Proc]) -> None:
    asgi = start("it_ops_asgi:app", "--root-path", "/api")
    wsgi = start("it_ops_wsgi:app", "--root-path", "/api")
    assert get(asgi.url + "/scope").json() == {"root_path": "/api", "path": "/api/scope"}
    assert get(wsgi.url + "/environ").json() == {"SCRIPT_NAME": "/api", "PATH_INFO": "/environ"}


def test_header_flags(start: Callable[..., Proc]) -> None:
    plain = start("it_ops_asgi:app")
    r = get(plain.url + "/hello")
    assert r.headers["server"] == "bascule"
    assert "date" in r.headers
    assert "x-frame-options" not in r.headers
    srv = start("it_ops_asgi:app", "--header", "X-Frame-Options: DENY", "--header", "X-Extra: 1",
                "--no-server-header", "--no-date-header")
    r = get(srv.url + "/hello")
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-extra"] == "1"
    assert "server" not in r.headers
    assert "date" not in r.headers


def test_limit_concurrency_answers_503(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_asgi:app", "--limit-concurrency", "1")
    [slow] = send_requests(srv.port, "/sleep?s=1", 1)
    time.sleep(0.3)
    r = get(srv.url + "/hello")
    assert r.status_code == 503
    assert r.headers["connection"] == "close"
    slow.settimeout(5)
    assert slow.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    slow.close()
    assert get(srv.url + "/hello").status_code == 200


def test_wsgi_app_exception_is_500_and_server_keeps_serving(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_wsgi:app")
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/raise").status_code == 500
        assert client.get("/hello").text == "hello"
    assert wait_for(lambda: "the app failed on purpose" in srv.log(), 3)


# -- access log --------------------------------------------------------------------------------------


def test_default_access_log_line(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_asgi:app")
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        client.get("/hello", params={"x": "1"})
        client.post("/echo", content=b"abc")
    lines = log_lines_with(srv.log_path, '" 200 ', count=2)
    assert re.search(r'127\.0\.0\.1:\d+ - "GET /hello\?x=1 HTTP/1\.1" 200 5 \d+\.\dms$', lines[0]), lines
    assert re.search(r'127\.0\.0\.1:\d+ - "POST /echo HTTP/1\.1" 200 \d+ \d+\.\dms$', lines[1]), lines


def test_custom_access_log_format(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_wsgi:app", "--access-log-format", "{method} {path} {status}")
    get(srv.url + "/hello?q=1")
    get(srv.url + "/nothing-here-but-hello")
    assert log_lines_with(srv.log_path, "GET /hello 200")[0].endswith("] GET /hello 200")
    assert log_lines_with(srv.log_path, "GET /nothing-here-but-hello 200")


def test_no_access_log(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_asgi:app", "--no-access-log")
    for _ in range(3):
        assert get(srv.url + "/hello").status_code == 200
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0
    log = srv.log()
    assert "bascule stopped" in log
    assert "/hello" not in log


def test_access_log_escapes_control_and_non_ascii_bytes(start: Callable[..., Proc]) -> None:
    srv = start("it_ops_asgi:app", "--access-log-format", "UA={user_agent} T={target}")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b'GET /a%0d%0aFAKE/"q\\ HTTP/1.1\r\nHost: x\r\nUser-Agent: tab\there"quote\\bs\xffhigh\r\n\r\n')
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    # an ESC in a header value never reaches the app or the log: llhttp refuses the request
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /esc HTTP/1.1\r\nHost: x\r\nUser-Agent: \x1b[31mred\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")
    get(srv.url + "/after")
    lines = log_lines_with(srv.log_path, "UA=", count=2)
    assert len(lines) == 2, lines  # one line per served request, none forged by %0d%0a
    assert lines[0].endswith(r'UA=tab\x09here\x22quote\x5cbs\xffhigh T=/a%0d%0aFAKE/\x22q\x5c'), lines
    assert "T=/after" in lines[1]
    raw = srv.log_path.read_bytes()
    assert b"\x1b" not in raw and b"\xff" not in raw and b"\t" not in raw
    assert b"FAKE" in raw and raw.count(b"FAKE") == 1


LOG_CONFIGS = {
    "json": lambda out: json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": "ACCESS %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out), "formatter": "plain"}},
        "loggers": {"bascule.access": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }),
    "yaml": lambda out: f"""\
version: 1
formatters:
  plain:
    format: "ACCESS %(message)s"
handlers:
  file:
    class: logging.FileHandler
    filename: {json.dumps(str(out))}
    formatter: plain
loggers:
  bascule.access:
    handlers: [file]
    level: INFO
    propagate: false
""",
    "ini": lambda out: f"""\
[loggers]
keys=root,access

[handlers]
keys=file

[formatters]
keys=plain

[logger_root]
level=WARNING
handlers=

[logger_access]
level=INFO
handlers=file
qualname=bascule.access
propagate=0

[handler_file]
class=FileHandler
formatter=plain
args=({str(out)!r}, 'a')

[formatter_plain]
format=ACCESS %(message)s
""",
}


@pytest.mark.parametrize("suffix", list(LOG_CONFIGS))
def test_log_config_routes_access_log_to_a_file(suffix: str, start: Callable[..., Proc], tmp_path: Path) -> None:
    out = tmp_path / "access.log"
    config = tmp_path / f"logging.{suffix}"
    config.write_text(LOG_CONFIGS[suffix](out))
    srv = start("it_ops_asgi:app", "--log-config", str(config))
    get(srv.url + "/hello")
    get(srv.url + "/second")
    lines = log_lines_with(out, "ACCESS ", count=2)
    assert len(lines) == 2
    assert '"GET /hello HTTP/1.1" 200' in lines[0] and lines[0].startswith("ACCESS 127.0.0.1:")
    assert '"GET /second HTTP/1.1" 200' in lines[1]
    assert "GET /hello" not in srv.log()  # the file config decides everything: nothing on stdout


# -- config file, environment, flags -----------------------------------------------------------------


def test_config_file_env_and_flag_precedence(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    (tmp_path / "bascule.toml").write_text(
        f'app = "it_ops_asgi:app"\napp-dir = {json.dumps(str(APPS))}\nport = {file_port}\n'
        f'header = ["X-From: file"]\nserver_header = false\n')

    def check(env: dict[str, str], flags: list[str], port: int, source: str) -> None:
        log = tmp_path / f"{source}.log"
        with spawn(flags, cwd=tmp_path, env=clean_env(**env), log=log, ready=tcp_ready(port)):
            r = get(f"http://127.0.0.1:{port}/hello")
            assert r.headers["x-from"] == source
            assert "server" not in r.headers  # from the file, untouched by env and flags
            for other in {file_port, env_port, flag_port} - {port}:
                assert not can_connect(socket.AF_INET, ("127.0.0.1", other))

    check({}, [], file_port, "file")
    check({"BASCULE_PORT": str(env_port), "BASCULE_HEADER": "X-From: env"}, [], env_port, "env")
    check({"BASCULE_PORT": str(env_port), "BASCULE_HEADER": "X-From: env"},
          ["--port", str(flag_port), "--header", "X-From: flag"], flag_port, "flag")

