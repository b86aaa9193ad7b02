"""The admin listener's routes over a real loopback socket, as raw bytes (ops/admin.py, ops/admin_listener.py).

The listener runs in a thread with a loop of its own (:class:`AdminThread`, as in a master) and answers from
a fake source, so each test says exactly what the source holds and checks every byte of the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import http_exchange

from bascule.config import Config
from bascule.ops.admin import AdminRoutes, probe_answer
from bascule.ops.admin_listener import AdminThread, admin_config, bind_admin
from bascule.ops.status_page import content_security_policy, render_status_page


class FakeView:
    def exposition(self) -> bytes:
        return b"# TYPE bascule_requests_total counter\nbascule_requests_total 3\n"

    def summary(self) -> dict[str, Any]:
        return {"requests_total": 3}


class FakeSource:
    def __init__(self) -> None:
        self.live = (True, "ok")
        self.ready = (False, "starting: lifespan startup is not done yet")
        self.view: FakeView | None = None
        self.fail = False

    def livez(self) -> tuple[bool, str]:
        return self.live

    def readyz(self) -> tuple[bool, str]:
        if self.fail:
            raise RuntimeError("boom")
        return self.ready

    def status(self) -> dict[str, Any]:
        return {"mode": "test", "ready": self.ready[0], "workers": []}

    @property
    def metrics(self) -> FakeView | None:
        return self.view


Admin = tuple[FakeSource, AdminThread]


def start_admin(spec: str, page: Callable[[], bytes] | None = render_status_page) -> Admin:
    source = FakeSource()
    admin = AdminThread(Config(app="x:app", admin_bind=spec), source, bind_admin(Config(app="x:app", admin_bind=spec)))
    admin.admin.routes.status_page = page
    admin.start()
    return source, admin


@pytest.fixture
def admin() -> Iterator[Admin]:
    source, thread = start_admin("127.0.0.1:0")
    try:
        yield source, thread
    finally:
        thread.stop()


def ask(admin: Admin, raw: bytes) -> bytes:
    sock = socket.create_connection(admin[1].admin.bound.sock.getsockname()[:2], timeout=5)
    with sock:
        return http_exchange(sock, raw)


def split(response: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    return status, [f for f in fields if not f.startswith((b"date:", b"server:"))], body


def test_livez_is_ok(admin: Admin) -> None:
    status, fields, body = split(ask(admin, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK"
    assert fields == [b"content-type: text/plain; charset=utf-8", b"cache-control: no-store", b"content-length: 3"]
    assert body == b"ok\n"


def test_readyz_says_why_not(admin: Admin) -> None:
    status, fields, body = split(ask(admin, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert body == b"starting: lifespan startup is not done yet\n"
    assert f"content-length: {len(body)}".encode() in fields


def test_readyz_follows_the_source_and_ignores_the_query(admin: Admin) -> None:
    admin[0].ready = (True, "ok")
    status, _, body = split(ask(admin, b"GET /readyz?probe=1 HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert (status, body) == (b"HTTP/1.1 200 OK", b"ok\n")


def test_head_has_the_length_and_no_body(admin: Admin) -> None:
    raw = ask(admin, b"HEAD /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    status, fields, body = split(raw)
    assert status == b"HTTP/1.1 200 OK" and b"content-length: 3" in fields and body == b""


def test_other_methods_get_405_with_allow(admin: Admin) -> None:
    status, fields, body = split(ask(admin, b"POST /readyz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"))
    assert status == b"HTTP/1.1 405 Method Not Allowed"
    assert b"allow: GET, HEAD" in fields and body == b"method not allowed\n"


@pytest.mark.parametrize("path", [b"/", b"/livez/", b"/READYZ", b"/metrics/x", b"/status.html", b"//livez"])
def test_other_paths_are_404(admin: Admin, path: bytes) -> None:
    status, _, body = split(ask(admin, b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert (status, body) == (b"HTTP/1.1 404 Not Found", b"not found\n")


def test_metrics_404_while_off_then_the_exposition(admin: Admin) -> None:
    status, _, body = split(ask(admin, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert (status, body) == (b"HTTP/1.1 404 Not Found", b"metrics are off\n")
    admin[0].view = FakeView()
    status, fields, body = split(ask(admin, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK"
    assert fields[0] == b"content-type: text/plain; version=0.0.4; charset=utf-8"
    assert body == FakeView().exposition()


def test_status_json(admin: Admin) -> None:
    status, fields, body = split(ask(admin, b"GET /status.json HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK" and fields[0] == b"content-type: application/json"
    assert json.loads(body) == {"mode": "test", "ready": False, "workers": []}


def test_status_page_404_without_the_page() -> None:
    source, admin = start_admin("127.0.0.1:0", page=None)
    try:
        status, _, _ = split(ask((source, admin), b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n"))
        assert status == b"HTTP/1.1 404 Not Found"
    finally:
        admin.stop()


def test_status_page_is_sent_with_its_security_policy(admin: Admin) -> None:
    status, fields, body = split(ask(admin, b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK" and body == render_status_page()
    names = {f.split(b":")[0]: f.split(b": ", 1)[1] for f in fields}
    assert names[b"content-type"] == b"text/html; charset=utf-8"
    assert names[b"content-security-policy"] == content_security_policy().encode()
    assert names[b"cache-control"] == b"no-store" and names[b"x-content-type-options"] == b"nosniff"


def test_a_failing_source_is_a_500_and_the_listener_goes_on(admin: Admin) -> None:
    admin[0].fail = True
    status, _, body = split(ask(admin, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert (status, body) == (b"HTTP/1.1 500 Internal Server Error", b"internal error\n")
    status, _, _ = split(ask(admin, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK"


def test_keep_alive_serves_several_probes_on_one_connection(admin: Admin) -> None:
    sock = socket.create_connection(admin[1].admin.bound.sock.getsockname()[:2], timeout=5)
    with sock:
        for _ in range(3):
            assert http_exchange(sock, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").endswith(b"\r\n\r\nok\n")


def test_malformed_requests_get_the_http_stack_answer(admin: Admin) -> None:
    raw = ask(admin, b"GET /livez HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    _source, admin = start_admin(f"unix:{path}")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            assert http_exchange(sock, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").endswith(b"\r\n\r\nok\n")
        assert admin.child_fds() and all(fd >= 0 for fd in admin.child_fds())
    finally:
        admin.stop()
    assert not path.exists()


def test_a_stop_leaves_a_socket_file_that_is_no_longer_its_own(tmp_path: Path) -> None:
    # a new instance started on the same unix: path (a restart that overlaps the old one's drain) replaced the
    # file; the old one's stop must not take the new one's admin socket away with it
    path = tmp_path / "admin.sock"
    _source, old = start_admin(f"unix:{path}")
    _source, new = start_admin(f"unix:{path}")
    try:
        old.stop()
        assert path.exists()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            assert http_exchange(sock, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").endswith(b"\r\n\r\nok\n")
    finally:
        new.stop()
    assert not path.exists()


def test_child_fds_name_the_socket_and_open_connections(admin: Admin) -> None:
    listening = admin[1].admin.bound.sock.fileno()
    sock = socket.create_connection(admin[1].admin.bound.sock.getsockname()[:2], timeout=5)
    with sock:
        http_exchange(sock, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        fds = admin[1].child_fds()
        assert fds[0] == listening and len(fds) == 2 + 3  # the socket, the connection, the loop's own
        assert all(os.fstat(fd) for fd in fds)


def test_admin_context_is_http11_only_without_app_headers() -> None:
    config = admin_config(Config(app="x:app", header=("x-app: 1",), limit_concurrency=1, timeout_request=1.0))
    assert not config.http2 and config.header == () and config.limit_concurrency is None
    assert config.timeout_request is None and not config.proxy_headers


def test_probe_answer() -> None:
    assert probe_answer(True, "ok") == (200, b"text/plain; charset=utf-8", b"ok\n")
    assert probe_answer(False, "")[0:3:2] == (503, b"not ready\n")


def test_routes_table_is_fixed() -> None:
    assert sorted(AdminRoutes(FakeSource()).routes) == [b"/livez", b"/metrics", b"/readyz", b"/status",
                                                       b"/status.json"]


def admin_sockets(address: Any) -> int:
    """How many of this process's descriptors are stream sockets with the admin socket's local address."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=int(name))
        except OSError:
            continue
        try:
            count += sock.type == socket.SOCK_STREAM and sock.getsockname() == address
        except OSError:
            pass
        finally:
            sock.detach()
    return count


def test_a_forked_child_closes_the_admin_socket_and_its_connections(admin: Admin) -> None:
    address = admin[1].admin.address
    client = socket.create_connection(address, timeout=5)
    with client:
        http_exchange(client, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")  # an accepted connection, kept open
        before = admin_sockets(address)
        assert before == 2  # the listening socket and the accepted one
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: as a worker right after its fork
            code = 1
            try:
                admin[1].close_in_child()
                os.write(w, str(admin_sockets(address)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        left = os.read(r, 100)
        os.close(r)
        os.waitpid(pid, 0)
        assert left == b"0"
        assert admin_sockets(address) == before  # the parent's own are untouched


def open_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):  # the listing's own descriptor is closed once it returns
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds


def test_a_forked_child_keeps_nothing_of_the_admin_thread() -> None:
    # the admin thread's loop has descriptors of its own (its epoll, its self-pipe socket pair): a worker that
    # kept them would hold the master's loop open for nothing, 3 descriptors per worker
    before = open_fds()
    _source, thread = start_admin("127.0.0.1:0")
    try:
        added = open_fds() - before
        assert len(added) >= 3  # the socket, and the loop's own
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                thread.close_in_child()
                os.write(w, json.dumps(sorted(open_fds() & added)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        left = os.read(r, 1000)
        os.close(r)
        os.waitpid(pid, 0)
        assert json.loads(left) == []
        assert added <= open_fds()  # the parent's own are untouched
    finally:
        thread.stop()


def test_the_admin_thread_runs_asyncios_own_loop_whatever_the_policy() -> None:
    # an app imported by the master (--preload) may call uvloop.install(): the admin thread must still run
    # the plain selector loop whose descriptors a forked worker knows how to close
    class Other(asyncio.SelectorEventLoop):
        pass

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return Other()

    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(Policy())
    try:
        _source, thread = start_admin("127.0.0.1:0")
    finally:
        asyncio.set_event_loop_policy(previous)
    try:
        assert type(thread._loop) is asyncio.SelectorEventLoop
    finally:
        thread.stop()
