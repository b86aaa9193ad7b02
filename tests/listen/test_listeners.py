"""Tests for bascule.listen.listeners and the listener options: --bind specs, --uds-mode, --reuse-port and systemd
socket activation (LISTEN_FDS/LISTEN_PID), on real loopback sockets in this process."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bascule.config import Config
from bascule.errors import ConfigError, StartupError
from bascule.listen.listeners import SD_LISTEN_FDS_START, bind_sockets, owned_unix_paths, systemd_sockets
from bascule.specs import parse_bind, parse_uds_mode


@pytest.mark.parametrize(("spec", "parsed"), [
    ("127.0.0.1:8000", ("tcp", ("127.0.0.1", 8000))),
    ("[::1]:9000", ("tcp", ("::1", 9000))),
    (":80", ("tcp", ("", 80))),
    ("localhost:0", ("tcp", ("localhost", 0))),
    ("unix:/run/app.sock", ("unix", "/run/app.sock")),
    ("fd://3", ("fd", 3)),
])
def test_parse_bind(spec: str, parsed: tuple[str, object]) -> None:
    assert parse_bind(spec) == parsed


@pytest.mark.parametrize(("spec", "hint"), [
    ("127.0.0.1", "HOST:PORT"),
    ("127.0.0.1:http", "HOST:PORT"),
    ("127.0.0.1:70000", "HOST:PORT"),
    ("::1:8000", "brackets"),
    ("[::1:8000", "brackets"),
    ("unix:", "needs a path"),
    ("fd://x", "file descriptor"),
])
def test_bad_bind_specs_say_what_to_write(spec: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        Config(app="m:a", bind=(spec,))


def test_bind_replaces_host_port_uds_and_fd_loudly() -> None:
    with pytest.raises(ConfigError, match="bind replaces host and port"):
        Config(app="m:a", bind=("127.0.0.1:1",), port=9000)
    with pytest.raises(ConfigError, match="unix:PATH"):
        Config(app="m:a", bind=("127.0.0.1:1",), uds="/tmp/x.sock")
    with pytest.raises(ConfigError, match="fd://N"):
        Config(app="m:a", bind=("127.0.0.1:1",), fd=3)


def test_uds_mode() -> None:
    assert parse_uds_mode("660") == 0o660
    assert parse_uds_mode("0o600") == 0o600
    for bad in ("rw", "999", "1777"):
        with pytest.raises(ConfigError, match="uds_mode"):
            parse_uds_mode(bad)
    with pytest.raises(ConfigError, match="Unix sockets only"):
        Config(app="m:a", uds_mode="660")
    Config(app="m:a", uds="/tmp/x.sock", uds_mode="660")
    Config(app="m:a", bind=("unix:/tmp/x.sock",), uds_mode="660")


def test_several_binds_tcp_and_unix_with_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    config = Config(app="m:a", bind=("127.0.0.1:0", f"unix:{path}"), uds_mode="640")
    sockets = bind_sockets(config, environ={})
    try:
        assert [s.family for s in sockets] == [socket.AF_INET, socket.AF_UNIX]
        assert os.stat(path).st_mode & 0o777 == 0o640
        assert owned_unix_paths(config) == [path]
    finally:
        for sock in sockets:
            sock.close()


def test_unix_sockets_default_to_666_whatever_the_umask(tmp_path: Path) -> None:
    """nginx's worker runs as another user: a socket left to a 022 or 077 umask answers it 502."""
    path = str(tmp_path / "d.sock")
    old = os.umask(0o077)
    try:
        sockets = bind_sockets(Config(app="m:a", uds=path), environ={})
    finally:
        os.umask(old)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o666
    finally:
        for sock in sockets:
            sock.close()


def test_a_failed_bind_closes_those_already_bound(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        config = Config(app="m:a", bind=(f"127.0.0.1:{free_port}", f"127.0.0.1:{port}"))
        with pytest.raises(StartupError, match=f"cannot bind 127.0.0.1:{port}"):
            bind_sockets(config, environ={})
        with socket.socket() as again:  # the first one was released
            again.bind(("127.0.0.1", free_port))


def test_reuse_port_lets_a_second_server_bind() -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT here")
    [first] = bind_sockets(Config(app="m:a", port=0, reuse_port=True), environ={})
    try:
        first.listen()
        port = first.getsockname()[1]
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        [second] = bind_sockets(Config(app="m:a", port=port, reuse_port=True), environ={})
        second.close()
        with pytest.raises(StartupError, match="Address already in use"):
            bind_sockets(Config(app="m:a", port=port), environ={})
    finally:
        first.close()


def test_systemd_variables_for_another_process_are_ignored_and_removed() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "OTHER": "1"}
    assert systemd_sockets(env) == []
    assert env == {"OTHER": "1"}
    assert systemd_sockets({}) == []
    with pytest.raises(StartupError, match="not numbers"):
        systemd_sockets({"LISTEN_PID": "me", "LISTEN_FDS": "1"})


@pytest.fixture
def on_fd_3() -> Iterator[socket.socket]:
    """A listening socket placed on fd 3, as systemd passes it (whatever held fd 3 is kept aside)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    saved = None
    with contextlib.suppress(OSError):
        saved = os.dup(SD_LISTEN_FDS_START)
    os.dup2(sock.fileno(), SD_LISTEN_FDS_START)
    yield sock
    if saved is not None:
        os.dup2(saved, SD_LISTEN_FDS_START)
        os.close(saved)
    sock.close()


def test_systemd_sockets_replace_the_default_address(on_fd_3: socket.socket) -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    [sock] = bind_sockets(Config(app="m:a"), environ=env)
    assert sock.fileno() == SD_LISTEN_FDS_START
    assert sock.getsockname() == on_fd_3.getsockname()
    assert env == {}
    sock.detach()  # fd 3 goes back to the fixture
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    with pytest.raises(ConfigError, match="drop those options"):
        bind_sockets(Config(app="m:a", bind=("127.0.0.1:0",)), environ=env)
