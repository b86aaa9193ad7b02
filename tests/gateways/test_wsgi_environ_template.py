"""Tests of the WSGI gateway's per-request shortcuts: the environ template whose copies have room for a
request's keys (roomy_template), the one-lookup join of repeated header fields, and start_response's memory
of the status lines it has checked (WSGIGateway.status_codes).

The table sizes are CPython's (sys.getsizeof of a dict grows with its key table): elsewhere the template is
only a dict with the same items, and those tests are skipped.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from conftest import Running, http_exchange

from bascule.gateways import wsgi as wsgi_module
from bascule.gateways.wsgi import PER_REQUEST_KEYS, WSGIGateway, roomy_template

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], None]]
Serve = Callable[..., contextlib.AbstractContextManager[Running]]
cpython = pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's dict tables")

FIXED = {"SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.errors": None, "wsgi.multithread": True,
         "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.input_terminated": True,
         "wsgi.file_wrapper": None, "SERVER_SOFTWARE": "bascule/test"}


def fill(env: Environ, fields: int) -> None:
    """What WSGIGateway.environ writes into a copy: the per-request keys, REMOTE_PORT, ``fields`` headers."""
    for key in PER_REQUEST_KEYS:
        env[key] = "x"
    env["REMOTE_PORT"] = "40000"
    for i in range(fields):
        env[f"HTTP_X_FIELD_{i}"] = "v"


def test_the_template_holds_the_fixed_and_per_request_keys_only() -> None:
    template = roomy_template(dict(FIXED))
    assert list(template) == [*FIXED, *PER_REQUEST_KEYS]  # no placeholder left, the order kept
    assert all(template[key] == "" for key in PER_REQUEST_KEYS)
    assert template.copy() == template


@cpython
@pytest.mark.parametrize("fields", [0, 2, 12, 19])
def test_a_copy_takes_a_requests_keys_without_growing(fields: int) -> None:
    template = roomy_template(dict(FIXED))
    env = template.copy()
    cloned = sys.getsizeof(env)
    assert cloned == sys.getsizeof(template)  # the grown table was cloned, not rebuilt for 19 keys
    fill(env, fields)
    assert sys.getsizeof(env) == cloned


@cpython
def test_a_plain_template_grows_in_every_request() -> None:
    """The control: the same items in a plain dict, copied and filled, grow the copy's table."""
    plain = {**FIXED, **dict.fromkeys(PER_REQUEST_KEYS, "")}
    env = plain.copy()
    before = sys.getsizeof(env)
    fill(env, 2)
    assert sys.getsizeof(env) > before


@pytest.fixture
def served(serve: Serve) -> Callable[..., contextlib.AbstractContextManager[Running]]:
    def start(app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> contextlib.AbstractContextManager[Running]:
        return serve(app, interface="wsgi", timeout_graceful_shutdown=5)
    return start


def test_served_environs_have_no_placeholder_and_repeated_fields_join(served: Any) -> None:
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    # one-character and empty values are str singletons: a repeat must still be seen as one
    fields = (b"X-One: 1\r\nX-One: 1\r\nX-Empty:\r\nX-Empty:\r\nCookie: a=1\r\nCookie: a=1\r\n"
              b"Content-Type: text/a\r\nContent-Type: text/b\r\nX-Single: 7\r\n")
    with served(app) as srv, srv.connect() as sock:
        for _ in range(2):  # the second time through the gateway's header-name cache
            raw = http_exchange(sock, b"GET /p?q HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n")
            assert raw.startswith(b"HTTP/1.1 200 ")
    assert len(seen) == 2
    for env in seen:
        assert not [key for key in env if key.startswith("\x00")]
        assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"]) == ("GET", "/p", "q")
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["wsgi.url_scheme"] == "http"
        assert env["SERVER_NAME"] == env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["SERVER_PORT"] == str(srv.port) and env["REMOTE_PORT"].isdigit()
        assert env["HTTP_X_ONE"] == "1,1"
        assert env["HTTP_X_EMPTY"] == ","
        assert env["HTTP_COOKIE"] == "a=1; a=1"
        assert env["CONTENT_TYPE"] == "text/b"  # not a list: the last one, as before
        assert env["HTTP_X_SINGLE"] == "7"


@pytest.mark.parametrize("bound", [256, 1])
def test_status_lines_are_checked_once_and_bad_ones_every_time(
        served: Any, monkeypatch: pytest.MonkeyPatch, bound: int, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(wsgi_module, "MAX_STATUS_LINES", bound)
    statuses = iter(["201 Created", "202 Accepted", "201 Created", "20 OK", "202 Accepted", "2000 OK",
                     "201 Created", b"201 Created"])

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response(next(statuses), [("Content-Type", "text/plain")])
        return [b"ok"]

    seen = []
    with caplog.at_level("ERROR", logger="bascule.error"), served(app) as srv, srv.connect() as sock:
        for _ in range(8):
            raw = http_exchange(sock, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            seen.append(int(raw.split(b" ", 2)[1]))  # an app's error closes nothing: the connection goes on
        gateway, = (o for o in gc.get_objects() if type(o) is WSGIGateway and o.app is app)
        codes = dict(gateway.status_codes)
    assert seen == [201, 202, 201, 500, 202, 500, 201, 500]
    refused = [r for r in caplog.records if r.exc_info and "WSGI status must look" in str(r.exc_info[1])]
    assert len(refused) == 3
    assert codes == ({"201 Created": 201, "202 Accepted": 202} if bound > 1 else {"201 Created": 201})


def test_each_listener_gives_its_own_server_name_and_port(serve: Serve) -> None:
    """SERVER_NAME and SERVER_PORT are remembered for the last local address seen: two listeners taking
    turns (127.0.0.1 and 127.0.0.2, one app) must each get theirs, including on kept-alive connections."""
    seen: list[tuple[str, str]] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append((environ["SERVER_NAME"], environ["SERVER_PORT"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with serve(app, interface="wsgi", bind=("127.0.0.1:0", "127.0.0.2:0"), port=8000) as srv:  # port: bind's
        assert srv.server is not None
        addresses = [sock.getsockname()[:2] for sock in srv.server.sockets]
        assert sorted(host for host, _ in addresses) == ["127.0.0.1", "127.0.0.2"]
        socks = [socket.create_connection(address, timeout=5) for address in addresses]
        try:
            expected = []
            for turn in range(6):
                which = turn % 2
                raw = http_exchange(socks[which], b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                assert raw.startswith(b"HTTP/1.1 200 ")
                expected.append((addresses[which][0], str(addresses[which][1])))
        finally:
            for sock in socks:
                sock.close()
    assert seen == expected


def test_server_port_is_not_made_again_for_each_request(served: Any) -> None:
    """The remembered text is the same str object request after request on one listener (a cache that
    always missed, as a compiled build comparing a re-boxed tuple would, makes a new one each time)."""
    ports: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        ports.append(environ["SERVER_PORT"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with served(app) as srv, srv.connect() as sock:
        for _ in range(5):
            assert http_exchange(sock, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert ports == [str(srv.port)] * 5
    assert all(port is ports[0] for port in ports)
