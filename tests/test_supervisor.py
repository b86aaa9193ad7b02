"""Tests for the process model's parts that need no process: the master's policies (backoff, exit
meanings, boot errors), the worker↔master messages, the request counter, the options and their
validation, and WEB_CONCURRENCY. The processes themselves are tested in integration/test_it_workers.py."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from bascule.cli import load_config
from bascule.config import Config, needs_master
from bascule.errors import AppLoadError, ConfigError, StartupError
from bascule.supervisor import MAX_BACKOFF, backoff, boot_error, describe_exit, resident_mib
from bascule.workers import (
    ERROR,
    HEARTBEAT,
    READY,
    PidFile,
    Reporter,
    WorkerSetup,
    frame,
    heartbeat_interval,
    request_counter,
    unframe,
)


def test_backoff_is_none_at_first_then_doubles_up_to_a_cap() -> None:
    assert backoff(0) == backoff(1) == 0.0
    assert [backoff(n) for n in (2, 3, 4)] == [0.1, 0.2, 0.4]
    assert backoff(100) == MAX_BACKOFF


def test_describe_exit() -> None:
    assert describe_exit(0) == (0, "exited with code 0")
    assert describe_exit(3 << 8) == (3, "exited with code 3")
    assert describe_exit(signal.SIGKILL) == (137, "was killed by SIGKILL")


def test_boot_errors_keep_the_workers_exit_code() -> None:
    assert isinstance(boot_error(3, "x"), AppLoadError) and boot_error(3, "x").exit_code == 3
    assert isinstance(boot_error(2, "x"), ConfigError)
    assert isinstance(boot_error(4, "x"), StartupError)
    assert boot_error(1, "crashed").exit_code == 4  # a crash before READY is a failed startup


def test_messages_survive_being_split_anywhere() -> None:
    stream = frame(READY) + frame(HEARTBEAT) + frame(ERROR, b'{"code": 3, "message": "m"}')
    for cut in range(len(stream) + 1):
        buffer = bytearray(stream[:cut])
        got = unframe(buffer)
        buffer += stream[cut:]
        got += unframe(buffer)
        assert got == [(READY, b""), (HEARTBEAT, b""), (ERROR, b'{"code": 3, "message": "m"}')]
        assert buffer == b""


def test_reporter_drops_heartbeats_when_the_pipe_is_full_and_ignores_a_gone_master() -> None:
    r, w = os.pipe()
    reporter = Reporter(w)
    for _ in range(20_000):  # far more than a pipe holds: must not block
        reporter.send(HEARTBEAT, droppable=True)
    os.close(r)
    reporter.send(READY)  # EPIPE: nobody to tell, not an error
    os.close(w)


def test_heartbeat_interval() -> None:
    assert heartbeat_interval(30) == 1.0
    assert heartbeat_interval(1) == 0.25
    assert heartbeat_interval(0) == 1.0  # the check is off; the beat still watches for a gone master


def test_request_counter_calls_once_at_the_limit() -> None:
    seen: list[int] = []
    hits: list[int] = []
    dispatch = request_counter(3, lambda: hits.append(len(seen)))(seen.append)
    for n in range(6):
        dispatch(n)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert hits == [2]  # before the third request ran, and only once


def test_worker_setup_round_trips_through_json() -> None:
    config = Config(app="m:a", workers=3, mount=("/x=m:b",), max_requests=10, max_requests_jitter=2)
    setup = WorkerSetup(config=config, socket_fds=(5, 6), report_fd=7, master_pid=1, number=2, max_requests=11)
    assert WorkerSetup.from_json(setup.to_json()) == setup


def test_pid_file(tmp_path: Path) -> None:
    path = tmp_path / "b.pid"
    with PidFile(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()
    with PidFile(str(path)):
        path.write_text("1\n")  # another process took it over: not ours to remove
    assert path.exists()
    with pytest.raises(StartupError, match="pid file"), PidFile(str(tmp_path / "missing" / "b.pid")):
        pass


def test_resident_memory_of_this_process() -> None:
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("no /proc here")
    rss = resident_mib(os.getpid())
    assert rss is not None and 5 < rss < 4096
    with socket.socket() as s:  # a pid that is surely gone: a closed socket's fd number is no pid we own
        assert resident_mib(2**22 + s.fileno()) is None


# -- options ------------------------------------------------------------------------------------------


def test_needs_master() -> None:
    assert not needs_master(Config(app="m:a"))
    assert needs_master(Config(app="m:a", workers=2))
    assert needs_master(Config(app="m:a", max_requests=100))
    assert needs_master(Config(app="m:a", max_worker_memory=500))
    assert needs_master(Config(app="m:a", reload=True))


@pytest.mark.parametrize(("options", "message"), [
    ({"workers": 0}, "workers must be at least 1"),
    ({"max_requests": 0}, "max_requests must be at least 1"),
    ({"max_requests_jitter": 5}, "needs max_requests"),
    ({"max_requests": 5, "max_requests_jitter": -1}, "max_requests_jitter must be >= 0"),
    ({"max_worker_memory": 0}, "at least 1 MiB"),
    ({"timeout_worker_healthcheck": -1.0}, "timeout_worker_healthcheck"),
    ({"timeout_worker_healthcheck": float("nan")}, "timeout_worker_healthcheck"),
    ({"reload_dir": ("src",)}, "only applies with reload"),
    ({"reload_exclude": ("*.tmp",)}, "only applies with reload"),
    ({"reload": True, "preload": True}, "exclude each other"),
    ({"pid": ""}, "pid must be a file path"),
])
def test_process_options_are_validated(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(app="m:a", **options)  # type: ignore[arg-type]


def test_web_concurrency_is_the_default_worker_count(tmp_path: Path) -> None:
    def load(*argv: str, **env: str) -> Config:
        return load_config(["m:a", *argv], environ=env, cwd=str(tmp_path))

    assert load().workers == 1
    assert load(WEB_CONCURRENCY="4").workers == 4
    assert load(WEB_CONCURRENCY="4", BASCULE_WORKERS="2").workers == 2
    assert load("--workers", "3", WEB_CONCURRENCY="4").workers == 3
    (tmp_path / "bascule.toml").write_text("workers = 5\n")
    assert load(WEB_CONCURRENCY="4").workers == 5
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY expects a number of workers, got 'lots'"):
        load(WEB_CONCURRENCY="lots")


def test_process_flags_from_the_command_line(tmp_path: Path) -> None:
    config = load_config(["m:a", "--workers", "4", "--max-requests", "1000", "--max-requests-jitter", "50",
                          "--max-worker-memory", "512", "--timeout-worker-healthcheck", "10", "--preload",
                          "--bind", "127.0.0.1:1", "--bind", "unix:/tmp/b.sock", "--uds-mode", "660",
                          "--reuse-port", "--pid", "/tmp/b.pid"], environ={}, cwd=str(tmp_path))
    assert (config.workers, config.max_requests, config.max_requests_jitter, config.max_worker_memory) == \
        (4, 1000, 50, 512)
    assert config.preload and config.reuse_port and config.timeout_worker_healthcheck == 10.0
    assert config.bind == ("127.0.0.1:1", "unix:/tmp/b.sock")
    assert (config.uds_mode, config.pid) == ("660", "/tmp/b.pid")
    reload = load_config(["m:a", "--reload", "--reload-dir", "src", "--reload-include", "*.html",
                          "--reload-exclude", "build"], environ={}, cwd=str(tmp_path))
    assert reload.reload and reload.reload_dir == ("src",)
    assert reload.reload_include == ("*.html",) and reload.reload_exclude == ("build",)
