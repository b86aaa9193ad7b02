"""Tests for the typed listener specs (bascule.listen.listeners.Listener): what each option makes, how a socket
carries its spec, and how the specs cross to the workers."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from pathlib import Path

import pytest

from bascule.config import Config
from bascule.listen.listeners import BoundListener, Listener, bind_listeners, describe, listener_specs
from bascule.specs import Endpoint, parse_bind
from bascule.workers import WorkerSetup


def test_a_listener_is_a_frozen_record_with_flags_off_by_default() -> None:
    spec = Listener("tcp", ("127.0.0.1", 8000))
    assert (spec.tls, spec.proxy_protocol) == (False, False)
    assert spec.endpoint == Endpoint("tcp", ("127.0.0.1", 8000)) == ("tcp", ("127.0.0.1", 8000))
    assert spec.scheme == "http" and Listener("unix", "/s", tls=True).scheme == "https"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.tls = True  # type: ignore[misc]
    assert Listener.at(parse_bind("unix:/run/a.sock"), tls=True) == Listener("unix", "/run/a.sock", True, False)


@pytest.mark.parametrize(("spec", "scheme"), [
    (Listener("tcp", ("127.0.0.1", 8000)), "http"),
    (Listener("tcp", ("127.0.0.1", 8000), tls=True), "https"),
    (Listener("tcp", ("127.0.0.1", 8000), proxy_protocol=True), "proxy+http"),
    (Listener("tcp", ("127.0.0.1", 8000), tls=True, proxy_protocol=True), "proxy+https"),
    (Listener("systemd", 3, proxy_protocol=True), "proxy+http"),
    (Listener("unix", "/run/u.sock", protocol="uwsgi"), "uwsgi"),
])
def test_the_startup_scheme_says_what_a_client_must_send(spec: Listener, scheme: str) -> None:
    assert spec.scheme == scheme


def test_the_startup_line_names_a_proxy_listener_as_one(tmp_path: Path) -> None:
    path = str(tmp_path / "p.sock")
    bound = bind_listeners(Config(app="m:a", bind=("proxy+127.0.0.1:0", f"proxy+unix:{path}", "127.0.0.1:0",
                                                   f"uwsgi://unix:{path}.u")), environ={})
    try:
        lines = [describe(b.sock, b.spec.scheme) for b in bound]
        port, plain_port = bound[0].sock.getsockname()[1], bound[2].sock.getsockname()[1]
    finally:
        for b in bound:
            b.sock.close()
    assert lines == [f"proxy+http://127.0.0.1:{port}", f"proxy+http+unix:{path}", f"http://127.0.0.1:{plain_port}",
                     f"uwsgi+unix:{path}.u"]


@pytest.mark.parametrize(("options", "expected"), [
    ({}, [Listener("tcp", ("127.0.0.1", 8000))]),
    ({"host": "::1", "port": 9000}, [Listener("tcp", ("::1", 9000))]),
    ({"uds": "/run/a.sock"}, [Listener("unix", "/run/a.sock")]),
    ({"fd": 3}, [Listener("fd", 3)]),
    ({"uds": "/run/a.sock", "fd": 3}, [Listener("fd", 3)]),  # --fd wins, as it always did
    ({"bind": ("127.0.0.1:1", "unix:/run/b.sock", "fd://4")},
     [Listener("tcp", ("127.0.0.1", 1)), Listener("unix", "/run/b.sock"), Listener("fd", 4)]),
])
def test_each_option_names_its_listeners(options: dict[str, object], expected: list[Listener]) -> None:
    assert listener_specs(Config(app="m:a", **options)) == expected  # type: ignore[arg-type]


def test_tls_marks_every_listener(tmp_path: Path) -> None:
    from tls_certs import server_files

    files = server_files(tmp_path)
    config = Config(app="m:a", bind=("127.0.0.1:1", "unix:/run/c.sock"), ssl_certfile=str(files.cert),
                    ssl_keyfile=str(files.key))
    assert [spec.tls for spec in listener_specs(config)] == [True, True]


def test_bound_sockets_carry_their_specs(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    bound = bind_listeners(Config(app="m:a", bind=("127.0.0.1:0", f"unix:{path}")), environ={})
    try:
        assert [b.spec for b in bound] == [Listener("tcp", ("127.0.0.1", 0)), Listener("unix", path)]
        assert [b.sock.family for b in bound] == [socket.AF_INET, socket.AF_UNIX]
        assert all(isinstance(b, BoundListener) for b in bound)
    finally:
        for b in bound:
            b.sock.close()


def test_systemd_sockets_are_listeners_of_their_own_kind() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    saved = None
    with contextlib.suppress(OSError):
        saved = os.dup(3)
    os.dup2(sock.fileno(), 3)
    try:
        [bound] = bind_listeners(Config(app="m:a"), environ={"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
        assert bound.spec == Listener("systemd", 3)
        bound.sock.detach()
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        sock.close()


def test_specs_cross_to_the_workers() -> None:
    config = Config(app="m:a", bind=("[::1]:8000", "unix:/run/d.sock"))
    specs = (Listener("tcp", ("::1", 8000)), Listener("unix", "/run/d.sock", proxy_protocol=True))
    setup = WorkerSetup(config=config, socket_fds=(5, 6), report_fd=7, master_pid=1, number=2, max_requests=None,
                        listeners=specs)
    again = WorkerSetup.from_json(setup.to_json())
    assert again == setup and again.listeners[0].address == ("::1", 8000)  # a tuple again, not a JSON list


def test_a_worker_pairs_each_shared_socket_with_its_spec() -> None:
    first, second = socket.socket(), socket.socket()
    config = Config(app="m:a")
    try:
        specs = (Listener("tcp", ("127.0.0.1", 1)), Listener("fd", 9))
        setup = WorkerSetup(config=config, socket_fds=(os.dup(first.fileno()), os.dup(second.fileno())), report_fd=7,
                            master_pid=1, number=1, max_requests=None, listeners=specs)
        bound = setup.bound_listeners()
        assert [b.spec for b in bound] == list(specs)
        assert [b.sock.fileno() for b in bound] == list(setup.socket_fds)
        for b in bound:
            b.sock.close()
        # a setup without specs (from an older master) serves its sockets as inherited ones
        old = dataclasses.replace(setup, socket_fds=(os.dup(first.fileno()),), listeners=())
        [inherited] = old.bound_listeners()
        assert inherited.spec == Listener("fd", old.socket_fds[0])
        inherited.sock.close()
    finally:
        first.close()
        second.close()
