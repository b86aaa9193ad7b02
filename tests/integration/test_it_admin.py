"""The admin listener as a user runs it: a master with workers (and one process alone) as real processes.

/livez, /readyz and /status.json from the master while workers boot, serve, fail their readiness check and
die; the admin socket is the master's alone (no worker holds it); --shutdown-delay keeps serving with /readyz
failing, then stops; a second SIGTERM skips the delay; the graceful stop sends HTTP/2 GOAWAY and closes
WebSockets with 1001. Loads are a few sequential requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h2.config
import h2.connection
import h2.events
from conftest import free_port
from it_support import APPS, clean_env, exit_within, spawn, tcp_ready, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

APP = "it_admin_app:app"


def get(port: int | str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET over a new connection (a TCP port on loopback, or a Unix socket path); (status, body)."""
    if isinstance(port, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(port)
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def status(port: int | str) -> dict[str, object]:
    code, body = get(port, "/status.json")
    assert code == 200
    result: dict[str, object] = json.loads(body)
    return result


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:``port`` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on {port}")


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@contextmanager
def master(tmp_path: Path, *extra: str, env: dict[str, str] | None = None,
           wait_ready: bool = True) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    port, admin = free_port(), free_port()
    args = [APP, "--port", str(port), "--admin-bind", f"127.0.0.1:{admin}", "--no-access-log", *extra]
    with spawn(args, env=env or clean_env(), log=tmp_path / "log", ready=tcp_ready(admin)) as proc:
        if wait_ready:
            assert wait_for(lambda: all_serving(admin, int(extra[extra.index("--workers") + 1])), 15), \
                (tmp_path / "log").read_text()
        yield proc, port, admin


def all_serving(admin: int, count: int) -> bool:
    rows = status(admin)["workers"]
    assert isinstance(rows, list)
    return len(rows) == count and all(row["state"] == "serving" for row in rows) and get(admin, "/readyz")[0] == 200


def test_master_serves_the_admin_routes_with_workers(tmp_path: Path) -> None:
    with master(tmp_path, "--workers", "2") as (proc, port, admin):
        assert get(admin, "/livez") == (200, b"ok\n")
        assert get(admin, "/readyz") == (200, b"ok\n")
        assert get(admin, "/metrics")[0] == 200  # on by default with --admin-bind (test_it_prometheus reads it)
        assert get(admin, "/nope")[0] == 404
        assert wait_for(lambda: len(children(proc.pid)) == 2)
        info = status(admin)
        workers = info["workers"]
        assert isinstance(workers, list)
        assert info["mode"] == "master" and info["ready"] is True and info["draining"] is False
        assert {w["pid"] for w in workers} == children(proc.pid)
        assert all(w["state"] == "serving" and w["rss_mib"] > 1 and w["restarts"] == 0 for w in workers)
        assert get(port, "/readyz")[1].startswith(b"app ")  # the app's port is the app's


def test_workers_do_not_hold_the_admin_socket(tmp_path: Path) -> None:
    with master(tmp_path, "--workers", "2") as (proc, _, admin):
        inode = listening_inode(admin)
        assert inode in socket_inodes(proc.pid)
        workers = children(proc.pid)
        assert len(workers) == 2
        for pid in workers:
            assert inode not in socket_inodes(pid)


def test_readyz_fails_until_a_worker_is_up(tmp_path: Path) -> None:
    env = clean_env(IT_STARTUP_DELAY="1.5")
    with master(tmp_path, "--workers", "2", env=env, wait_ready=False) as (_, port, admin):
        assert get(admin, "/livez") == (200, b"ok\n")
        assert get(admin, "/readyz") == (503, b"no worker serving yet\n")
        assert wait_for(lambda: get(admin, "/readyz")[0] == 200, 15)
        assert get(port, "/")[0] == 200


def test_readiness_check_reported_by_the_workers(tmp_path: Path) -> None:
    flag = tmp_path / "not-ready"
    env = clean_env(IT_NOT_READY=str(flag))
    with master(tmp_path, "--workers", "2", "--readiness-check", "it_admin_app:ready", env=env) as (_, port, admin):
        flag.touch()
        assert wait_for(lambda: get(admin, "/readyz")[0] == 503, 5)
        assert get(admin, "/readyz") == (503, b"readiness check failing: returned False\n")
        assert get(port, "/")[0] == 200  # not ready is a hint to balancers: serving goes on
        flag.unlink()
        assert wait_for(lambda: get(admin, "/readyz")[0] == 200, 5)
    log = (tmp_path / "log").read_text()
    assert log.count("readiness check failing: returned False") == 2  # once per worker, once per change


def test_a_killed_worker_is_replaced_and_counted(tmp_path: Path) -> None:
    with master(tmp_path, "--workers", "2") as (proc, _, admin):
        assert wait_for(lambda: len(children(proc.pid)) == 2)
        victim = min(children(proc.pid))
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            rows = status(admin)["workers"]
            assert isinstance(rows, list)
            return len(rows) == 2 and victim not in {w["pid"] for w in rows} and all(
                w["state"] == "serving" for w in rows)

        assert wait_for(replaced, 10)
        info = status(admin)
        rows = info["workers"]
        assert isinstance(rows, list)
        assert info["restarts"] == 1 and sorted(w["restarts"] for w in rows) == [0, 1]


def test_shutdown_delay_with_workers(tmp_path: Path) -> None:
    with master(tmp_path, "--workers", "2", "--shutdown-delay", "1.5") as (proc, port, admin):
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_for(lambda: get(admin, "/readyz")[0] == 503, 1)
        assert get(admin, "/readyz") == (503, b"draining: the server is stopping\n")
        assert get(admin, "/livez") == (200, b"ok\n")
        served = 0
        while time.monotonic() - signalled < 1.2:  # accepting and serving all through the delay
            assert get(port, "/")[0] == 200
            served += 1
            time.sleep(0.05)
        assert served > 10
        assert exit_within(proc, 10) is not None and proc.returncode == 0
        assert time.monotonic() - signalled >= 1.5
        assert not tcp_ready(port)()
    assert "--shutdown-delay is over: stopping gracefully" in (tmp_path / "log").read_text()


def test_shutdown_delay_when_the_whole_process_group_gets_sigterm(tmp_path: Path) -> None:
    """systemd's default KillMode (and a shell's ``kill -TERM -PGID``) signal the workers too: they serve on
    through the delay instead of stopping at once and being replaced as crashed."""
    with master(tmp_path, "--workers", "2", "--shutdown-delay", "1.5") as (proc, port, admin):
        workers = children(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)  # spawn starts the master in a session of its own
        signalled = time.monotonic()
        assert wait_for(lambda: get(admin, "/readyz")[0] == 503, 1)
        served = 0
        while time.monotonic() - signalled < 1.2:
            assert get(port, "/")[0] == 200
            served += 1
            time.sleep(0.05)
        assert served > 10
        assert children(proc.pid) == workers  # the same workers: none stopped early, none replaced
        assert status(admin)["restarts"] == 0
        assert exit_within(proc, 10) is not None and proc.returncode == 0
        assert time.monotonic() - signalled >= 1.5
    log = (tmp_path / "log").read_text()
    assert "--shutdown-delay is over: stopping gracefully" in log
    assert log.count("serving on until it stops the workers") == 2, log
    assert "keep dying" not in log and "crash" not in log, log


def test_a_second_sigterm_skips_the_delay(tmp_path: Path) -> None:
    with master(tmp_path, "--workers", "2", "--shutdown-delay", "60") as (proc, port, admin):
        proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: get(admin, "/readyz")[0] == 503, 1)
        assert get(port, "/")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert exit_within(proc, 10) is not None and proc.returncode == 0
    assert "skipping the rest of --shutdown-delay" in (tmp_path / "log").read_text()


def test_one_process_on_a_unix_admin_socket(tmp_path: Path) -> None:
    port, path = free_port(), str(tmp_path / "admin.sock")
    args = [APP, "--port", str(port), "--admin-bind", f"unix:{path}", "--shutdown-delay", "2", "--no-access-log"]
    with spawn(args, log=tmp_path / "log", ready=tcp_ready(port)) as proc:
        assert get(path, "/readyz") == (200, b"ok\n")
        info = status(path)
        assert info["mode"] == "process" and info["workers"][0]["pid"] == proc.pid  # type: ignore[index]
        proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: get(path, "/readyz")[0] == 503, 1)
        assert get(port, "/")[0] == 200
        assert exit_within(proc, 10) is not None and proc.returncode == 0
    assert not os.path.exists(path)


def test_graceful_stop_sends_goaway_and_closes_websockets_1001(tmp_path: Path) -> None:
    port = free_port()
    with spawn([APP, "--port", str(port), "--no-access-log"], log=tmp_path / "log", ready=tcp_ready(port)) as proc:
        h2sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")],
                          end_stream=True)
        h2sock.sendall(conn.data_to_send())

        async def websocket_close() -> int | None:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                except ConnectionClosed as exc:
                    return exc.rcvd.code if exc.rcvd is not None else None
            return None

        assert asyncio.run(websocket_close()) == 1001
        events: list[h2.events.Event] = []
        deadline = time.monotonic() + 5
        terminated = h2.events.ConnectionTerminated
        with h2sock:
            while time.monotonic() < deadline and not any(isinstance(e, terminated) for e in events):
                data = h2sock.recv(65536)
                if not data:
                    break
                events += conn.receive_data(data)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == 0 and goaway[0].last_stream_id == 1
        assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events)
        assert exit_within(proc, 10) is not None and proc.returncode == 0
    assert APPS.exists()


def test_admin_port_in_use_stops_the_master_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "bascule", APP, "--port", str(free_port()), "--workers", "2",
                               "--admin-bind", f"127.0.0.1:{admin}"], cwd=APPS, env=clean_env(),
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 4
    assert proc.stderr.strip().splitlines()[-1] == (f"bascule: cannot bind 127.0.0.1:{admin}: Address already in use "
                                                    f"(is another server running? pick another --admin-bind)")


def test_a_readiness_check_that_cannot_be_imported_stops_the_master(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bascule", APP, "--port", str(free_port()), "--workers", "2",
                           "--admin-bind", f"127.0.0.1:{free_port()}", "--readiness-check", "it_admin_app:nope"],
                          cwd=APPS, env=clean_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1].startswith("bascule: ")
    assert "nope" in proc.stderr.strip().splitlines()[-1]
