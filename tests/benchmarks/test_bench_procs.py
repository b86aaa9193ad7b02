"""The benchmarks' process helpers, on real child processes on loopback: start one in its own session, wait for
its port or Unix socket (or learn why it never listened), measure its tree, stop it with whatever it forked."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import procs

#: Listens on argv[1] after forking a child that sleeps: a master and its worker, as a server under test.
LISTENER = """
import os, socket, sys, time
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", os.getcwd(), flush=True)
time.sleep(60)
"""


def test_a_server_is_started_measured_and_stopped_with_its_worker(tmp_path: Path) -> None:
    port = procs.free_port()
    log = tmp_path / "server.log"
    proc = procs.spawn([sys.executable, "-c", LISTENER, str(port)], log)
    try:
        assert procs.not_started(port, proc, 10) == ""
        tree = procs._tree(proc.pid)
        assert tree[0] == proc.pid and len(tree) == 2  # the master and its forked child
        assert procs.tree_rss_kib(proc.pid) > procs._rss_kib(proc.pid) > 0
        assert procs._cpu_ticks(proc.pid) >= 0
        with procs.RssSampler(proc.pid, interval=0.01) as sampler:
            time.sleep(0.05)
        assert sampler.peak >= procs._rss_kib(proc.pid)
    finally:
        procs.stop(proc)
    assert proc.returncode is not None
    worker = tree[1]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and procs._rss_kib(worker):  # the worker goes with its master's session
        time.sleep(0.02)
    assert procs._rss_kib(worker) == 0
    assert log.read_text().split() == ["listening", str(procs.HERE)]  # started in benchmarks/, output logged
    assert procs.log_tail(log) == f"listening {procs.HERE}"


def test_why_a_server_did_not_start(tmp_path: Path) -> None:
    port = procs.free_port()
    exits = procs.spawn([sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"], tmp_path / "x.log")
    assert procs.not_started(port, exits, 10) == "exited with 3"
    assert procs.log_tail(tmp_path / "x.log") == "bad flag"
    mute = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "m.log")
    try:
        assert procs.not_started(port, mute, 0.3) == "no port after 0 s"
        assert procs.wait_port(port, mute, 0.1) is False
    finally:
        procs.stop(mute)
    assert mute.returncode == -15  # SIGTERM was enough


#: Binds a Unix socket at argv[1] but listens only after argv[2] seconds: the file exists before the server
#: takes connections, as between a server's bind() and its listen().
UNIX_LISTENER = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
time.sleep(float(sys.argv[2]))
s.listen()
time.sleep(60)
"""


def test_a_unix_socket_server_is_started_once_a_connect_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "up.sock"
    proc = procs.spawn([sys.executable, "-c", UNIX_LISTENER, str(path), "0.3"], tmp_path / "u.log")
    started = time.monotonic()
    try:
        assert procs.not_started(path, proc, 10) == ""
        assert time.monotonic() - started >= 0.3  # not merely bound: the file was there before the listen()
    finally:
        procs.stop(proc)


def test_a_unix_socket_already_listening(tmp_path: Path) -> None:
    path = tmp_path / "ready.sock"
    alive = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "a.log")  # only alive
    try:  # the listener is the test's own: wait_unix connects to it
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            listener.listen()
            assert procs.wait_unix(path, alive, 5) is True
    finally:
        procs.stop(alive)


def test_a_unix_socket_that_never_listens(tmp_path: Path) -> None:
    absent, stale = tmp_path / "absent.sock", tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as left:  # a socket file nobody listens on, as an earlier run leaves
        left.bind(str(stale))
    mute = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "m.log")
    try:
        assert procs.wait_unix(absent, mute, 0.2) is False
        assert procs.wait_unix(stale, mute, 0.2) is False
        assert procs.not_started(absent, mute, 0.3) == f"no socket at {absent} after 0 s"
    finally:
        procs.stop(mute)
    exits = procs.spawn([sys.executable, "-c", "import sys; sys.exit(2)"], tmp_path / "x.log")
    assert procs.not_started(absent, exits, 10) == "exited with 2"


def test_stop_kills_a_server_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    deaf = procs.spawn([sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "print('ready', flush=True)\ntime.sleep(30)"], tmp_path / "deaf.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ready" not in (tmp_path / "deaf.log").read_text():
        time.sleep(0.02)
    started = time.monotonic()
    procs.stop(deaf, grace=0.3)
    assert deaf.returncode == -9 and 0.3 <= time.monotonic() - started < 5


def test_log_tail_keeps_the_last_lines_short(tmp_path: Path) -> None:
    log = tmp_path / "l.log"
    assert procs.log_tail(log) == ""  # no file
    log.write_text("one\n  two  \nthree\nfour\n\n")
    assert procs.log_tail(log) == "two / three / four"
    assert procs.log_tail(log, 1) == "four"
    log.write_text("x" * 500)
    assert procs.log_tail(log) == "x" * 300


def test_pin_prefix() -> None:
    assert procs.pin(None) == []
    assert procs.pin("1") == ["taskset", "-c", "1"]


def test_free_port_is_free() -> None:
    port = procs.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_pinning_needs_two_cpus_and_taskset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/taskset")
    assert procs.can_pin(False) is True
    assert procs.can_pin(True) is False
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert procs.can_pin(False) is False
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert procs.can_pin(False) is False


def test_raise_nofile_asks_for_65536_within_the_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, int]] = []
    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: asked.append(value))
    procs.raise_nofile()
    limits["now"] = (1024, resource.RLIM_INFINITY)
    procs.raise_nofile()
    limits["now"] = (65536, 1 << 20)
    procs.raise_nofile()  # enough already
    assert asked == [(4096, 4096), (65536, resource.RLIM_INFINITY)]
