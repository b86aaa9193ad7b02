"""Tests for the WSGI gateway (PEP 3333) through a real server: environ, wsgi.input, start_response,
response iteration and close(), backpressure, wsgi.file_wrapper/sendfile, threads and errors; plus unit
tests of the ThreadPool that runs the apps.

Every app is wrapped in ``wsgiref.validate.validator`` unless the test breaks a rule on purpose (it says
so). A validator complaint surfaces as a 500 and an AssertionError logged to ``bascule.error``; every test
asserts its statuses, and the autouse ``errors`` fixture fails any test that left an unexpected error
record. WSGIWarning is an error here too, so a validator warning also becomes a 500.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest
from conftest import Running, http_exchange

from bascule.gateways import wsgi as wsgi_module
from bascule.gateways.threads import ThreadPool
from bascule.gateways.wsgi_io import FileWrapper
from bascule.protocols.h1 import exchange as http1_exchange

pytestmark = [
    pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], None]]
App = Callable[[Environ, StartResponse], Iterable[bytes]]
TEXT = [("Content-Type", "text/plain")]


# -- fixtures and helpers ----------------------------------------------------------------------------------


class ErrorLog:
    """ERROR records of bascule.error; what a test does not take() fails it at teardown."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.seen = 0

    def all(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.get_records("call") if r.name == "bascule.error" and r.levelno >= logging.ERROR]

    def take(self) -> list[logging.LogRecord]:
        records = self.all()
        new, self.seen = records[self.seen:], len(records)
        return new

    def wait(self, count: int, timeout: float = 5.0) -> list[logging.LogRecord]:
        """Wait until ``count`` new records exist (they come from worker threads), then take them."""
        end = time.monotonic() + timeout
        while len(self.all()) - self.seen < count and time.monotonic() < end:
            time.sleep(0.01)
        return self.take()


@pytest.fixture(autouse=True)
def errors(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[ErrorLog]:
    monkeypatch.setattr(logging.getLogger("bascule.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="bascule.error")
    log = ErrorLog(caplog)
    yield log
    left = log.take()
    assert not left, "unexpected errors logged: " + "; ".join(
        f"{r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in left)


@pytest.fixture
def wsgi(serve: Callable[..., contextlib.AbstractContextManager[Running]]) -> Callable[..., Any]:
    """``with wsgi(app, validate=True, **options) as srv:`` — serve a WSGI app (validator-wrapped)."""

    def start(app: App, *, validate: bool = True, **options: Any) -> contextlib.AbstractContextManager[Running]:
        options.setdefault("timeout_graceful_shutdown", 5)
        return serve(validator(app) if validate else app, interface="wsgi", **options)

    return start


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lowercased names; repeated ones joined with ", "
    body: bytes
    head: bytes


def parse(data: bytes, *, head_request: bool = False) -> tuple[Reply, bytes]:
    """One HTTP/1.1 response from ``data`` (chunked decoded) and what follows it."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if head_request or status in (204, 304) or 100 <= status < 200:
        return Reply(status, headers, b"", head), rest
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            assert sep, "truncated chunked body"
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                _, sep, rest = rest.partition(b"\r\n")
                assert sep, "truncated chunked body"
                return Reply(status, headers, body, head), rest
            assert len(rest) >= size + 2, "truncated chunk"
            body, rest = body + rest[:size], rest[size + 2:]
    if "content-length" in headers:
        n = int(headers["content-length"])
        assert len(rest) >= n, f"body shorter than content-length ({len(rest)} < {n})"
        return Reply(status, headers, rest[:n], head), rest[n:]
    return Reply(status, headers, rest, head), b""


def responses(count: int = 1) -> Callable[[bytes], bool]:
    """A recv_until predicate: true once ``data`` holds ``count`` complete responses."""

    def done(data: bytes) -> bool:
        try:
            for _ in range(count):
                _, data = parse(data)
        except (AssertionError, ValueError, IndexError):
            return False
        return True

    return done


def exchange(srv: Running, raw: bytes, **kwargs: Any) -> Reply:
    with srv.connect() as sock:
        return parse(http_exchange(sock, raw, **kwargs), head_request=raw.startswith(b"HEAD "))[0]


def get(path: str = "/", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET " + path.encode("latin-1") + b" HTTP/" + version + b"\r\nHost: test\r\n" + extra + b"\r\n"


def recv_until(sock: socket.socket, done: Callable[[bytes], bool], timeout: float = 5.0,
               data: bytes = b"") -> bytes:
    """Read until ``done(data)``, the peer closes, or ``timeout``."""
    end = time.monotonic() + timeout
    while not done(data) and time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_to_close(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the peer closes; and whether it did close within ``timeout``."""
    end = time.monotonic() + timeout
    data = b""
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def text_app(body: bytes = b"ok") -> App:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return [body]

    return app


class TrackedBody:
    """A response iterable that records whether close() was called."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = chunks
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed.set()


@pytest.fixture
def module_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """module_in(source) writes an importable module into tmp_path (the app_dir) and returns its name."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"wsgi_test_side_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


# -- 1. environ --------------------------------------------------------------------------------------------


def capture_app(seen: list[Environ]) -> App:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ.copy())
        length = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(length)) if length else b""
        start_response("200 OK", TEXT)
        return [b"seen:" + body]

    return app


def test_environ_request_fields(wsgi: Any) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv, srv.connect() as sock:
        raw = http_exchange(sock, b"GET /caf%C3%A9/x?a=1&b=%20&c HTTP/1.1\r\nHost: example.test:8080\r\n"
                                  b"User-Agent: probe/1\r\n\r\n")
        client_port = sock.getsockname()[1]
    assert parse(raw)[0].status == 200
    env = seen[0]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/caf\xc3\xa9/x"  # latin-1 str of the percent-decoded bytes
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/x"
    assert env["QUERY_STRING"] == "a=1&b=%20&c"  # the query string stays as sent
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["HTTP_HOST"] == "example.test:8080"
    assert env["HTTP_USER_AGENT"] == "probe/1"
    assert env.get("CONTENT_TYPE", "") == ""
    assert env.get("CONTENT_LENGTH", "") == ""
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_environ_wsgi_keys(wsgi: Any) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv:
        assert httpx.get(srv.url + "/").status_code == 200
    env = seen[0]
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False  # one process: the in-process server has no workers
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    for name in ("read", "readline", "readlines", "__iter__"):
        assert hasattr(env["wsgi.input"], name)
    for name in ("write", "writelines", "flush"):
        assert hasattr(env["wsgi.errors"], name)
    for key, value in env.items():
        if "." not in key:
            assert type(value) is str, key


def test_environ_post_content_headers(wsgi: Any) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv:
        reply = exchange(srv, b"POST /submit HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 7\r\n\r\n{\"a\":1}")
    assert (reply.status, reply.body) == (200, b'seen:{"a":1}')
    env = seen[0]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "7"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_environ_repeated_headers_are_joined(wsgi: Any) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv:
        reply = exchange(srv, get("/", b"X-Dup: one\r\nX-Dup: two\r\nCookie: a=1\r\nCookie: b=2\r\n"
                                       b"Accept: text/html\r\nAccept: text/plain\r\n"))
    assert reply.status == 200
    env = seen[0]
    assert [v.strip() for v in env["HTTP_X_DUP"].split(",")] == ["one", "two"]
    assert [v.strip() for v in env["HTTP_ACCEPT"].split(",")] == ["text/html", "text/plain"]
    assert env["HTTP_COOKIE"] == "a=1; b=2"  # cookies join with "; " (RFC 6265), never ","


@pytest.mark.parametrize("extra", [b"X_Evil: 1\r\n", b"X-Evil: good\r\nX_Evil: 1\r\n",
                                   b"X_Evil: 1\r\nX-Evil: good\r\n"])
def test_environ_drops_headers_with_underscores(wsgi: Any, extra: bytes) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv:
        for _ in range(2):  # the second time through the gateway's header-name cache
            assert exchange(srv, get("/", extra)).status == 200
    for env in seen:
        evil = {k: v for k, v in env.items() if "EVIL" in k}
        assert evil == ({"HTTP_X_EVIL": "good"} if b"X-Evil" in extra else {})


def test_environ_http_10(wsgi: Any) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv, srv.connect() as sock:
        sock.sendall(get("/", version=b"1.0"))
        data, closed = recv_to_close(sock)
    assert closed
    assert parse(data)[0].status == 200
    assert seen[0]["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_environ_absolute_form_target(wsgi: Any) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen)) as srv:
        assert exchange(srv, b"GET http://example.test/abs/p?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n").status == 200
    assert (seen[0]["PATH_INFO"], seen[0]["QUERY_STRING"]) == ("/abs/p", "q=1")


@pytest.mark.parametrize(("path", "path_info"), [("/x/y", "/x/y"), ("/", "/")])
def test_environ_root_path_is_script_name(wsgi: Any, path: str, path_info: str) -> None:
    seen: list[Environ] = []
    with wsgi(capture_app(seen), root_path="/r") as srv:
        assert httpx.get(srv.url + path).status_code == 200
    assert seen[0]["SCRIPT_NAME"] == "/r"
    assert seen[0]["PATH_INFO"] == path_info


MOUNTED_WSGI = """
from wsgiref.validate import validator

seen = []


def _app(environ, start_response):
    seen.append((environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"mounted"]


_checked = validator(_app)


def app(environ, start_response):  # a plain (environ, start_response) signature, so it is detected as WSGI
    return _checked(environ, start_response)
"""


@pytest.mark.parametrize(("root_path", "target", "expected"), [
    ("", "/m/x/y?q=1", ("/m", "/x/y", "q=1")),
    ("", "/m", ("/m", "", "")),
    ("", "/m/", ("/m", "/", "")),
    ("", "/%6D/x", ("/m", "/x", "")),  # the prefix matches the decoded path
    ("/r", "/m/x", ("/r/m", "/x", "")),
    ("", "/caf%C3%A9/x", ("/caf\xc3\xa9", "/x", "")),  # a non-ASCII prefix, in WSGI's latin-1 form
])
def test_environ_of_a_mounted_app(wsgi: Any, tmp_path: Path, module_in: Callable[[str], str], root_path: str,
                                  target: str, expected: tuple[str, str, str]) -> None:
    module = module_in(MOUNTED_WSGI)
    prefix = "/café" if "caf" in target else "/m"
    options = {"mount": (f"{prefix}={module}:app",), "app_dir": str(tmp_path), "root_path": root_path}
    with wsgi(text_app(b"root"), **options) as srv:
        reply = exchange(srv, get(target))
        other = exchange(srv, get("/mx"))  # not below the prefix: the root app
    assert (reply.status, reply.body) == (200, b"mounted")
    assert (other.status, other.body) == (200, b"root")
    assert sys.modules[module].seen == [expected]


def test_wsgi_errors_logs_to_bascule_error(wsgi: Any, errors: ErrorLog) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.errors"]
        stream.write("app trouble: 42\n")
        stream.writelines(["second ", "line\n"])
        stream.flush()
        start_response("200 OK", TEXT)
        return [b"ok"]

    with wsgi(app) as srv:
        assert httpx.get(srv.url).status_code == 200
    assert [r.getMessage() for r in errors.take()] == ["app trouble: 42", "second line"]


# -- 2. wsgi.input -----------------------------------------------------------------------------------------


def digest_app(read_size: int = 8192) -> App:
    """Reads the body with read(read_size) until EOF; answers its size, sha256 and number of reads."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        h, total, reads = hashlib.sha256(), 0, 0
        while True:
            data = stream.read(read_size)
            if not data:
                break
            assert len(data) <= read_size
            reads += 1
            total += len(data)
            h.update(data)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"size": total, "sha256": h.hexdigest(), "reads": reads,
                            "content_length": environ.get("CONTENT_LENGTH", "")}).encode()]

    return app


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_chunked_upload_read_incrementally(wsgi: Any) -> None:
    pieces = [os.urandom(n) for n in (1, 5000, 20000, 70000, 3)]
    body = b"".join(pieces)
    with wsgi(digest_app(8192)) as srv, srv.connect() as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:  # one chunk at a time, so the app reads while the body is still arriving
            time.sleep(0.02)
            sock.sendall(chunked(piece)[:-5])
        sock.sendall(b"0\r\n\r\n")
        reply = parse(recv_until(sock, responses()))[0]
    assert reply.status == 200
    result = json.loads(reply.body)
    assert result["size"] == len(body)
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["reads"] >= len(body) // 8192
    assert result["content_length"] == ""


def test_chunked_upload_lines_spanning_chunks(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline()
        limited = stream.readline(3)
        rest = list(stream)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([first.decode(), limited.decode(), [line.decode() for line in rest]]).encode()]

    with wsgi(app) as srv:
        upload = chunked(b"li", b"ne one\nline", b" two\nthr", b"ee\n", b"no newline")
        reply = exchange(srv, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + upload)
    assert reply.status == 200
    assert json.loads(reply.body) == ["line one\n", "lin", ["e two\n", "three\n", "no newline"]]


def test_large_upload_is_streamed_not_buffered(wsgi: Any) -> None:
    """The app sees the first half of the body before the client has sent the second half."""
    half = 1024 * 1024
    body = os.urandom(2 * half)
    progressed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream, h, total = environ["wsgi.input"], hashlib.sha256(), 0
        while data := stream.read(65536):
            total += len(data)
            h.update(data)
            if total >= half // 2:
                progressed.set()
        start_response("200 OK", TEXT)
        return [b"%d %s" % (total, h.hexdigest().encode())]

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body[:half])
        assert progressed.wait(5), "the app did not get the first half before the rest was sent"
        sock.sendall(body[half:])
        reply = parse(recv_until(sock, responses()))[0]
    assert reply.status == 200
    assert reply.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def test_expect_100_continue_sent_when_app_reads(wsgi: Any) -> None:
    with wsgi(digest_app()) as srv, srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = recv_until(sock, lambda d: b"\r\n\r\n" in d)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        reply = parse(recv_until(sock, responses()))[0]
    assert reply.status == 200
    assert json.loads(reply.body)["sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_pipelined_requests_with_bodies(wsgi: Any) -> None:
    with wsgi(digest_app()) as srv, srv.connect() as sock:
        raw = (b"POST /1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
               + b"POST /2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"de", b"f")
               + get("/3"))
        sock.sendall(raw)
        data = recv_until(sock, responses(3))
    sizes = []
    for _ in range(3):
        reply, data = parse(data)
        assert reply.status == 200
        sizes.append(json.loads(reply.body)["size"])
    assert sizes == [3, 3, 0]
    assert data == b""


def test_upload_cut_short_by_disconnect_is_an_error_to_the_app(wsgi: Any, errors: ErrorLog) -> None:
    outcome: list[Any] = []
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        total = 0
        try:
            while data := environ["wsgi.input"].read(65536):
                total += len(data)
            outcome.append(total)
        except OSError as exc:
            outcome.append(exc)
        finally:
            done.set()
        start_response("200 OK", TEXT)
        return [b"ok"]

    with wsgi(app) as srv:
        with srv.connect() as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
            time.sleep(0.2)
        assert done.wait(5)
    errors.take()
    assert isinstance(outcome[0], OSError), f"the app read {outcome[0]} of 1000000 bytes and saw a normal EOF"


# -- 3. start_response -------------------------------------------------------------------------------------


def test_start_response_twice_without_exc_info_is_500(wsgi: Any, errors: ErrorLog) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        start_response("201 Created", TEXT)
        return [b"never"]

    with wsgi(app) as srv:
        reply = exchange(srv, get())
    assert reply.status == 500
    assert b"never" not in reply.body
    [record] = errors.wait(1)
    assert record.exc_info is not None and "second time" in str(record.exc_info[1])


def test_start_response_exc_info_before_head_replaces_it(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("failed after start_response")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/html"), ("X-Second", "2")],
                           sys.exc_info())
        return [b"<p>sorry</p>"]

    with wsgi(app) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.body) == (503, b"<p>sorry</p>")
    assert reply.headers["content-type"] == "text/html"
    assert reply.headers["x-second"] == "2"
    assert "x-first" not in reply.headers


def test_start_response_exc_info_after_head_reraises_and_closes(wsgi: Any, errors: ErrorLog) -> None:
    reraised: list[BaseException] = []
    original: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"partial")
        try:
            raise ValueError("failed mid-response")
        except ValueError as exc:
            original.append(exc)
            try:
                start_response("500 Internal Server Error", TEXT, sys.exc_info())
            except BaseException as again:
                reraised.append(again)
                raise
        return [b"not reached"]

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get())
        data, closed = recv_to_close(sock)
    assert closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in body
    assert not body.endswith(b"0\r\n\r\n")  # never finished: the client can tell it is broken
    assert reraised and reraised[0] is original[0]
    [record] = errors.wait(1)
    assert record.exc_info is not None and record.exc_info[1] is original[0]


def test_write_callable_legacy_app(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"hello ")
        write(b"")
        write(b"world")
        return []

    with wsgi(app) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.body) == (200, b"hello world")


def test_write_is_unbuffered(wsgi: Any) -> None:
    """write() data reaches the client before the app returns (PEP 3333: no buffering)."""
    go = threading.Event()
    waited: list[bool] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"first|")
        waited.append(go.wait(5))
        write(b"second")
        return []

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get())
        data = recv_until(sock, lambda d: b"first|" in d)
        assert b"first|" in data
        go.set()
        data = recv_until(sock, lambda d: d.endswith(b"0\r\n\r\n"), data=data)
    assert parse(data)[0].body == b"first|second"
    assert waited == [True]


@pytest.mark.parametrize(("result", "expected"), [([b"b", b"c"], b"abc"), ([b"b"], b"ab"), ([], b"a")])
def test_write_then_returned_iterable(wsgi: Any, result: list[bytes], expected: bytes) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)(b"a")
        return list(result)

    with wsgi(app) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.body) == (200, expected)


@pytest.mark.parametrize("status", ["200OK", "200", "20 OK", "2000 OK", "OK 200", "abc OK", 200, b"200 OK",
                                    "\u00b2\u00b2\u00b2 X", "\u0662\u0660\u0660 OK"])  # digits to isdigit(), not ASCII
def test_invalid_status_is_500(wsgi: Any, errors: ErrorLog, status: Any) -> None:
    # not validated: the validator itself rejects these statuses, and the point is that bascule does too
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, TEXT)
        return [b"body"]

    with wsgi(app, validate=False) as srv:
        reply = exchange(srv, get())
    assert reply.status == 500
    assert len(errors.wait(1)) == 1


@pytest.mark.parametrize("headers", [
    [("Content-Type", "text/plain"), ("X-Price", "10 €")],  # not latin-1
    [("Content-Type", "text/plain"), ("Connection", "close")],  # hop-by-hop
    [("Content-Type", "text/plain"), ("Keep-Alive", "timeout=5")],
    [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
    [("Content-Type", "text/plain"), ("Upgrade", "websocket")],
    [("Content-Type", "text/plain"), ("Proxy-Authenticate", "Basic")],
], ids=["non-latin-1", "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-authenticate"])
def test_bad_response_header_is_500(wsgi: Any, errors: ErrorLog, headers: list[tuple[str, str]]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", headers)
        return [b"body"]

    with wsgi(app) as srv:
        reply = exchange(srv, get())
    assert reply.status == 500
    assert reply.body != b"body"
    assert len(errors.wait(1)) == 1


@pytest.mark.parametrize("bound", [512, 1])
def test_response_header_names_are_checked_once_and_refused_every_time(
        wsgi: Any, errors: ErrorLog, monkeypatch: pytest.MonkeyPatch, bound: int) -> None:
    # start_response remembers the names it has checked (WSGIGateway.header_names, at most
    # MAX_HEADER_NAMES): a remembered name goes out as before, a bad one is never remembered
    monkeypatch.setattr(wsgi_module, "MAX_HEADER_NAMES", bound)
    names = iter(["X-Trace", "x-trace", "Connection", "X-Trace", "X Bad", "Connection", "X-Other", "X-Other"])

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), (next(names), "1")])
        return [b"body"]

    with wsgi(app, validate=False) as srv:
        statuses = []
        for _ in range(8):
            reply = exchange(srv, get())
            statuses.append(reply.status)
            if reply.status == 200:
                assert reply.headers["x-trace" if b"x-trace" in reply.head else "x-other"] == "1"
                assert b"X-Trace" not in reply.head and b"X-Other" not in reply.head  # lowercased on the wire
    assert statuses == [200, 200, 500, 200, 500, 500, 200, 200]
    assert len(errors.wait(3)) == 3


@pytest.mark.parametrize("headers", [
    [("Content-Type", "text/plain"), ("X-Split", "a\r\nX-Injected: 1")],
    [("Content-Type", "text/plain"), ("X Bad", "1")],
    [("Content-Type", "text/plain"), ("X-Bad",)],
    [("Content-Type", "text/plain"), ("X-Bad", 1)],
    [("Content-Type", "text/plain"), (b"X-Bytes", b"1")],
], ids=["crlf-in-value", "space-in-name", "one-tuple", "int-value", "bytes"])
def test_malformed_response_header_is_500(wsgi: Any, errors: ErrorLog, headers: Any) -> None:
    # not validated: the validator rejects these itself; bascule must not write them either
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", headers)
        return [b"body"]

    with wsgi(app, validate=False) as srv:
        reply = exchange(srv, get())
    assert reply.status == 500
    assert b"injected" not in reply.head.lower()
    assert len(errors.wait(1)) == 1


# -- 4. response iteration ---------------------------------------------------------------------------------


def test_one_item_list_gets_content_length(wsgi: Any) -> None:
    # not validated: the validator wraps the list in an iterator, which hides the one-item-list fast path
    with wsgi(text_app(b"hello"), validate=False) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.body) == (200, b"hello")
    assert reply.headers["content-length"] == "5"
    assert "transfer-encoding" not in reply.headers


def test_validated_list_body(wsgi: Any) -> None:
    with wsgi(text_app(b"hello")) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.body) == (200, b"hello")


def test_empty_list_gets_content_length_zero(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return []

    with wsgi(app) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "0")


def test_generator_is_streamed_chunk_by_chunk(wsgi: Any) -> None:
    go = threading.Event()
    waited: list[bool] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        yield b"first|"
        waited.append(go.wait(5))
        yield b"second"

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get())
        data = recv_until(sock, lambda d: b"first|" in d, timeout=3)
        assert b"first|" in data, "the first chunk did not arrive before the generator went on"
        go.set()
        data = recv_until(sock, lambda d: d.endswith(b"0\r\n\r\n"), data=data)
    reply = parse(data)[0]
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.body == b"first|second"
    assert waited == [True]


def test_app_content_length_is_respected(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        yield b"abc"
        yield b"def"
        yield b"ghi"

    with wsgi(app) as srv, srv.connect() as sock:
        first = parse(http_exchange(sock, get()))[0]
        second = parse(http_exchange(sock, get()))[0]  # the connection stays usable
    for reply in (first, second):
        assert (reply.status, reply.body) == (200, b"abcdefghi")
        assert reply.headers["content-length"] == "9"
        assert "transfer-encoding" not in reply.headers


def test_head_request_sends_no_body(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        yield b"body that HEAD must not carry"

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get())
        data = recv_until(sock, lambda d: d.endswith(b"0\r\n\r\n"))
    head, rest = parse(data, head_request=True)
    assert head.status == 200
    follow = parse(rest)[0]  # the next response starts right after the head: no stray body bytes
    assert (follow.status, follow.body) == (200, b"body that HEAD must not carry")


def test_http_10_stream_ends_with_close(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        yield b"one "
        yield b"two"

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get(version=b"1.0"))
        data, closed = recv_to_close(sock)
    assert closed
    reply = parse(data)[0]
    assert "transfer-encoding" not in reply.headers
    assert reply.body == b"one two"


def test_bytearray_and_memoryview_items(wsgi: Any) -> None:
    # not validated: PEP 3333 asks for bytes; bascule accepts these buffers as well
    def app(environ: Environ, start_response: StartResponse) -> Iterable[Any]:
        start_response("200 OK", TEXT)
        return iter([bytearray(b"ab"), memoryview(b"cd"), b""])

    with wsgi(app, validate=False) as srv:
        assert exchange(srv, get()).body == b"abcd"


def test_buffers_through_write_file_wrapper_and_list_header_pairs(wsgi: Any) -> None:
    """What apps really pass, beyond PEP 3333's letter: header pairs as lists, bytearray to write(), a
    file-like whose read() gives bytearray. Compiled code checks declared types, so these are typed as
    what arrives (tests/test_build.py explains why this matters)."""
    class Stream:
        def __init__(self) -> None:
            self.parts = [bytearray(b"ef"), bytearray(b"gh")]

        def read(self, size: int = -1) -> bytearray:
            return self.parts.pop(0) if self.parts else bytearray()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[Any]:
        write = start_response("200 OK", [["Content-Type", "text/plain"]])
        write(bytearray(b"ab"))
        write(memoryview(b"cd"))
        return environ["wsgi.file_wrapper"](Stream())

    with wsgi(app, validate=False) as srv:
        reply = exchange(srv, get())
    assert (reply.status, reply.headers["content-type"], reply.body) == (200, "text/plain", b"abcdefgh")


def test_read1_and_readlines_take_none(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        first = stream.read1(None)
        rest = b"".join(stream.readlines(None))
        start_response("200 OK", TEXT)
        return [first + b"|" + rest]

    body = b"line1\nline2\n"
    with wsgi(app, validate=False) as srv:
        reply = exchange(srv, get(extra=b"Content-Length: %d\r\n" % len(body)).replace(b"GET", b"POST") + body)
    assert reply.body.replace(b"|", b"") == body


@pytest.mark.parametrize(("options", "multithread", "multiprocess"), [
    ({}, True, False), ({"wsgi_mode": "loop"}, False, False), ({"workers": 2}, True, True),
])
def test_multithread_and_multiprocess_say_how_apps_run(options: dict[str, Any], multithread: bool,
                                                       multiprocess: bool) -> None:
    from bascule.config import Config
    from bascule.gateways.wsgi import WSGIGateway
    from bascule.mounts import AppTable, resolve_mounts

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return []

    config = Config(app="x:app", interface="wsgi", **options)
    table = AppTable(config, resolve_mounts(config, app))
    try:
        [(_, gateway)] = table.routes
        assert isinstance(gateway, WSGIGateway)
        assert gateway.template["wsgi.multithread"] is multithread
        assert gateway.template["wsgi.multiprocess"] is multiprocess
    finally:
        if table.pool is not None:
            table.pool.shutdown()


@pytest.mark.parametrize("item", ["text", 42, None])
def test_non_bytes_item_is_500(wsgi: Any, errors: ErrorLog, item: Any) -> None:
    # not validated: the validator rejects a non-bytes item itself
    def app(environ: Environ, start_response: StartResponse) -> Iterable[Any]:
        start_response("200 OK", TEXT)
        return iter([item])

    with wsgi(app, validate=False) as srv:
        assert exchange(srv, get()).status == 500
    assert len(errors.wait(1)) == 1


def test_close_called_after_normal_response(wsgi: Any) -> None:
    bodies: list[TrackedBody] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        bodies.append(TrackedBody([b"a", b"b"]))
        return bodies[-1]

    with wsgi(app) as srv:
        assert exchange(srv, get()).body == b"ab"
        assert bodies[0].closed.wait(2)


def test_close_called_for_one_item_list_subclass(wsgi: Any) -> None:
    closed = threading.Event()

    class Body(list[bytes]):
        def close(self) -> None:
            closed.set()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return Body([b"x"])

    with wsgi(app, validate=False) as srv:  # unvalidated so bascule sees the list itself
        assert exchange(srv, get()).body == b"x"
        assert closed.wait(2)


def test_close_called_when_iteration_raises(wsgi: Any, errors: ErrorLog) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("broke mid-stream")

    body = TrackedBody(chunks())

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return body

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get())
        recv_to_close(sock)
        assert body.closed.wait(2)
    assert len(errors.wait(1)) == 1


def test_close_called_when_client_disconnects_mid_stream(wsgi: Any) -> None:
    stop = threading.Event()

    def chunks() -> Iterator[bytes]:
        end = time.monotonic() + 10
        while time.monotonic() < end and not stop.is_set():
            yield b"x" * 1024
            time.sleep(0.02)

    body = TrackedBody(chunks())

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return body

    with wsgi(app) as srv:
        with srv.connect() as sock:
            sock.sendall(get())
            assert b"xxxx" in recv_until(sock, lambda d: b"xxxx" in d)
        try:
            assert body.closed.wait(3), "close() not called after the client went away"
        finally:
            stop.set()


def test_close_called_when_client_leaves_before_the_app_returns(wsgi: Any) -> None:
    body = TrackedBody([b"late"])
    returned = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        time.sleep(0.3)
        start_response("200 OK", TEXT)
        returned.set()
        return body

    with wsgi(app) as srv:
        with srv.connect() as sock:
            sock.sendall(get())
        assert returned.wait(3)
        assert body.closed.wait(3)


# -- 5. backpressure ---------------------------------------------------------------------------------------


def test_streaming_to_a_client_that_does_not_read_is_bounded(wsgi: Any) -> None:
    chunk = b"z" * 65536
    produced = [0]
    stop = threading.Event()

    def chunks() -> Iterator[bytes]:
        for _ in range(1600):  # up to 100 MB
            if stop.is_set():
                return
            produced[0] += len(chunk)
            yield chunk

    body = TrackedBody(chunks())

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return body

    with wsgi(app) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no receive-window autotuning
        try:
            sock.connect((srv.host, srv.port))
            sock.sendall(get())
            time.sleep(1.0)
            at_one_second = produced[0]
            assert 0 < at_one_second < 10 * 1024 * 1024, f"produced {at_one_second} bytes for a client not reading"
            got = len(recv_until(sock, lambda d: len(d) > 2 * 1024 * 1024))
            assert got > 2 * 1024 * 1024
            deadline = time.monotonic() + 3
            while produced[0] <= at_one_second and time.monotonic() < deadline:
                time.sleep(0.01)
            assert produced[0] > at_one_second, "the app did not resume once the client read"
        finally:
            sock.close()
        try:
            assert body.closed.wait(5), "close() not called after the client went away"
        finally:
            stop.set()
    assert produced[0] < 100 * 1024 * 1024


# -- 6. wsgi.file_wrapper ----------------------------------------------------------------------------------
# Not validated: the validator wraps the returned FileWrapper in its own iterator, which hides it from
# bascule and so turns sendfile off (true of any middleware that wraps the body).


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts os.sendfile calls made by bascule.protocols.h1.exchange (bytes sent per call)."""
    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(http1_exchange.os, "sendfile", spy)
    return calls


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(5 * 1024 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def file_app(opener: Callable[[], Any], extra: list[tuple[str, str]] | None = None) -> App:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), *(extra or [])])
        return environ["wsgi.file_wrapper"](opener())  # type: ignore[no-any-return]

    return app


def test_file_wrapper_real_file_uses_sendfile(wsgi: Any, errors: ErrorLog, sendfile_calls: list[int],
                                              big_file: tuple[Path, bytes]) -> None:
    path, data = big_file
    with wsgi(file_app(lambda: open(path, "rb")), validate=False) as srv:
        reply = httpx.get(srv.url + "/file")
    assert reply.status_code == 200
    assert reply.headers["content-length"] == str(len(data))
    assert reply.content == data
    assert sendfile_calls and sum(sendfile_calls) == len(data)
    errors.take()  # a spurious "shorter than its content-length" error: see the keep-alive test below


def test_file_wrapper_sendfile_keeps_the_connection(wsgi: Any, errors: ErrorLog, sendfile_calls: list[int],
                                                    big_file: tuple[Path, bytes]) -> None:
    path, data = big_file
    with wsgi(file_app(lambda: open(path, "rb")), validate=False) as srv, srv.connect() as sock:
        first = parse(http_exchange(sock, get()))[0]
        second_raw = http_exchange(sock, get(), timeout=2)
    logged = errors.take()
    assert first.body == data
    assert second_raw, "the connection was closed after a sendfile response"
    assert parse(second_raw)[0].body == data
    assert not logged, [r.getMessage() for r in logged]


def test_file_wrapper_head_request_sends_no_body(wsgi: Any, errors: ErrorLog, tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    path.write_bytes(b"F" * 5000)
    with wsgi(file_app(lambda: open(path, "rb")), validate=False) as srv, srv.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until(sock, lambda d: b"\r\n\r\n" in d)
        data = recv_until(sock, lambda d: False, timeout=0.3, data=data)  # anything after the head?
    errors.take()
    head, rest = parse(data, head_request=True)
    assert head.status == 200
    assert head.headers["content-length"] == "5000"
    assert rest == b"", f"{len(rest)} body bytes after a HEAD response"


def test_file_wrapper_bytesio_falls_back_to_iteration(wsgi: Any, sendfile_calls: list[int]) -> None:
    data = os.urandom(1024 * 1024 + 7)
    with wsgi(file_app(lambda: io.BytesIO(data)), validate=False) as srv:
        reply = httpx.get(srv.url)
    assert reply.status_code == 200
    assert reply.content == data
    assert sendfile_calls == []


def test_file_wrapper_pipe_falls_back_to_iteration(wsgi: Any, sendfile_calls: list[int]) -> None:
    def opener() -> Any:
        r, w = os.pipe()
        os.write(w, b"from a pipe")
        os.close(w)
        return os.fdopen(r, "rb")

    with wsgi(file_app(opener), validate=False) as srv:
        reply = httpx.get(srv.url)
    assert reply.content == b"from a pipe"
    assert sendfile_calls == []


def test_file_wrapper_starts_at_file_offset(wsgi: Any, errors: ErrorLog, sendfile_calls: list[int],
                                            big_file: tuple[Path, bytes]) -> None:
    path, data = big_file

    def opener() -> Any:
        f = open(path, "rb")  # noqa: SIM115
        f.seek(100)
        return f

    with wsgi(file_app(opener), validate=False) as srv:
        reply = httpx.get(srv.url)
    assert reply.headers["content-length"] == str(len(data) - 100)
    assert reply.content == data[100:]
    assert sendfile_calls
    errors.take()  # see test_file_wrapper_sendfile_keeps_the_connection


def test_file_wrapper_app_content_length_limits_the_file(wsgi: Any, errors: ErrorLog, sendfile_calls: list[int],
                                                         big_file: tuple[Path, bytes]) -> None:
    path, data = big_file
    app = file_app(lambda: open(path, "rb"), [("Content-Length", "1000")])  # noqa: SIM115
    with wsgi(app, validate=False) as srv:
        reply = httpx.get(srv.url)
    assert reply.headers["content-length"] == "1000"
    assert reply.content == data[:1000]
    errors.take()  # see test_file_wrapper_sendfile_keeps_the_connection


def test_file_wrapper_validated_app_still_correct(wsgi: Any, big_file: tuple[Path, bytes]) -> None:
    path, data = big_file
    with wsgi(file_app(lambda: open(path, "rb"))) as srv:
        reply = httpx.get(srv.url)
    assert (reply.status_code, reply.content) == (200, data)


# -- 7. concurrency ----------------------------------------------------------------------------------------


def test_a_finished_request_is_freed_without_the_cyclic_collector(wsgi: Any) -> None:
    # ex.app_task is a _RunState, not the _Request (which refers to the exchange): no cycle, so reference
    # counting frees every exchange once its response is out (the collector used to, every few requests)
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        return [b"ok"]

    with wsgi(app, validate=False) as srv, srv.connect() as sock:
        http_exchange(sock, get())  # the server is warm
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                assert parse(http_exchange(sock, get()))[0].body == b"ok"
            time.sleep(0.1)  # the last worker thread has left run()
            alive = [o for o in gc.get_objects() if type(o) is http1_exchange.H1Exchange]
        finally:
            gc.enable()
    assert len(alive) <= 2  # at most the connection's current or last one, not one per request


def test_requests_run_in_parallel_threads(wsgi: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        time.sleep(0.5)
        start_response("200 OK", TEXT)
        return [threading.current_thread().name.encode()]

    results: list[Reply] = []
    with wsgi(app, wsgi_threads=4) as srv:
        def one() -> None:
            results.append(exchange(srv, get()))

        clients = [threading.Thread(target=one) for _ in range(4)]
        start = time.monotonic()
        for t in clients:
            t.start()
        for t in clients:
            t.join(10)
        elapsed = time.monotonic() - start
    assert [r.status for r in results] == [200] * 4
    assert len({r.body for r in results}) == 4  # four different worker threads
    assert elapsed < 1.4, f"4 x 0.5 s took {elapsed:.2f} s with 4 threads"


def test_clients_stalled_in_their_headers_hold_no_thread(wsgi: Any) -> None:
    with wsgi(text_app(b"served"), wsgi_threads=2) as srv:
        stalled = [srv.connect() for _ in range(8)]
        try:
            for sock in stalled:
                sock.sendall(b"GET /slow HT")
            time.sleep(0.1)
            start = time.monotonic()
            reply = exchange(srv, get(), timeout=3)
            assert (reply.status, reply.body) == (200, b"served")
            assert time.monotonic() - start < 1.0
        finally:
            for sock in stalled:
                sock.close()


def test_queued_request_runs_when_a_thread_frees(wsgi: Any) -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/block":
            release.wait(5)
        start_response("200 OK", TEXT)
        return [environ["PATH_INFO"].encode()]

    results: list[Reply] = []
    with wsgi(app, wsgi_threads=1) as srv:
        blocker = threading.Thread(target=lambda: results.append(exchange(srv, get("/block"))))
        blocker.start()
        time.sleep(0.1)
        with srv.connect() as sock:
            sock.sendall(get("/queued"))
            assert recv_until(sock, lambda d: b"\r\n\r\n" in d, timeout=0.3) == b""  # the only thread is busy
            release.set()
            assert parse(recv_until(sock, responses()))[0].body == b"/queued"
        blocker.join(5)
    assert results[0].body == b"/block"


def test_event_loop_serves_asgi_mount_while_wsgi_threads_are_busy(
        wsgi: Any, tmp_path: Path, module_in: Callable[[str], str]) -> None:
    module = module_in(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'asgi answered'})\n")
    release = threading.Event()
    busy = threading.Semaphore(0)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        busy.release()
        release.wait(5)
        start_response("200 OK", TEXT)
        return [b"wsgi"]

    with wsgi(app, wsgi_threads=2, mount=(f"/asgi={module}:app",), app_dir=str(tmp_path), lifespan="off") as srv:
        blockers = [threading.Thread(target=exchange, args=(srv, get("/w"))) for _ in range(2)]
        try:
            for t in blockers:
                t.start()
            assert busy.acquire(timeout=3) and busy.acquire(timeout=3)  # both WSGI threads are taken
            start = time.monotonic()
            reply = exchange(srv, get("/asgi/x"), timeout=3)
            assert (reply.status, reply.body) == (200, b"asgi answered")
            assert time.monotonic() - start < 1.0
        finally:
            release.set()
            for t in blockers:
                t.join(5)


# -- 8. errors ---------------------------------------------------------------------------------------------


def test_exception_in_app_is_500_logged_once_and_connection_goes_on(wsgi: Any, errors: ErrorLog) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise KeyError("boom")
        start_response("200 OK", TEXT)
        return [b"fine"]

    with wsgi(app) as srv, srv.connect() as sock:
        failed = parse(http_exchange(sock, get("/boom")))[0]
        logged = errors.wait(1)
        after = parse(http_exchange(sock, get("/ok")))[0]
    assert failed.status == 500
    assert b"boom" not in failed.body  # no details leak to the client
    assert (after.status, after.body) == (200, b"fine")
    assert len(logged) == 1
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], KeyError)
    assert "/boom" in logged[0].getMessage()


def test_exception_after_head_closes_connection(wsgi: Any, errors: ErrorLog) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        yield b"partial"
        raise RuntimeError("mid-stream")

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get())
        data, closed = recv_to_close(sock)
    assert closed
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")
    assert len(errors.wait(1)) == 1


def test_exception_after_head_with_content_length_closes_connection(wsgi: Any, errors: ErrorLog) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        yield b"partial"
        raise RuntimeError("mid-stream")

    with wsgi(app) as srv, srv.connect() as sock:
        sock.sendall(get())
        data, closed = recv_to_close(sock)
    assert closed
    assert data.endswith(b"partial")  # fewer than 100 bytes, then the close
    assert len(errors.wait(1)) == 1


@pytest.mark.parametrize(("result", "validate"), [
    (lambda: [], True),
    (lambda: [b"x"], False),  # the validator would catch these two itself
    (lambda: iter([b"x", b"y"]), False),
], ids=["empty-list", "one-item-list", "iterator"])
def test_app_that_never_calls_start_response_is_500(wsgi: Any, errors: ErrorLog, result: Any,
                                                    validate: bool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return result()  # type: ignore[no-any-return]

    with wsgi(app, validate=validate) as srv:
        reply = exchange(srv, get())
    assert reply.status == 500
    [record] = errors.wait(1)
    assert "start_response" in str(record.exc_info[1] if record.exc_info else record.getMessage())


def test_app_returning_none_is_500(wsgi: Any, errors: ErrorLog) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Any:  # not validated: it breaks the rules
        start_response("200 OK", TEXT)
        return None

    with wsgi(app, validate=False) as srv:
        assert exchange(srv, get()).status == 500
    assert len(errors.wait(1)) == 1


def test_exception_in_close_after_complete_response_spares_the_connection(wsgi: Any, errors: ErrorLog) -> None:
    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"done"

        def close(self) -> None:
            time.sleep(0.2)
            raise RuntimeError("close failed")

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        if environ["PATH_INFO"] == "/next":
            time.sleep(0.5)
            return [b"next"]
        return Body()

    with wsgi(app) as srv, srv.connect() as sock:
        first = parse(http_exchange(sock, get("/first")))[0]
        second_raw = http_exchange(sock, get("/next"), timeout=3)
    logged = errors.take()
    assert first.body == b"done"
    assert len(logged) == 1
    assert second_raw, "the keep-alive connection was closed under the next request"
    assert parse(second_raw)[0].body == b"next"


# -- 9. ThreadPool -----------------------------------------------------------------------------------------


@pytest.fixture
def pool_factory() -> Iterator[Callable[[int], ThreadPool]]:
    pools: list[ThreadPool] = []

    def make(size: int) -> ThreadPool:
        pool = ThreadPool(size, name=f"test-pool-{len(pools)}")
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(1.0)


def test_pool_runs_tasks_in_submit_order(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(1)
    order: list[int] = []
    done = threading.Event()
    for i in range(50):
        pool.submit(order.append, i)
    pool.submit(lambda _: done.set(), None)
    assert done.wait(5)
    assert order == list(range(50))


def test_pool_runs_tasks_concurrently(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(3)
    barrier = threading.Barrier(4, timeout=5)
    names: set[str] = set()

    def task(_: Any) -> None:
        names.add(threading.current_thread().name)
        barrier.wait()

    for _ in range(3):
        pool.submit(task, None)
    barrier.wait()  # only passes if all three run at once
    assert names == {"test-pool-0-0", "test-pool-0-1", "test-pool-0-2"}
    assert all(t.daemon for t in threading.enumerate() if t.name in names)


@pytest.mark.parametrize("exc", [ValueError("task failed"), KeyboardInterrupt(), SystemExit(3)])
def test_pool_task_exception_does_not_kill_the_thread(pool_factory: Callable[[int], ThreadPool],
                                                      errors: ErrorLog, exc: BaseException) -> None:
    pool = pool_factory(1)
    ran = threading.Event()

    def fail(_: Any) -> None:
        raise exc

    pool.submit(fail, None)
    pool.submit(lambda _: ran.set(), None)
    assert ran.wait(5)
    [record] = errors.wait(1)
    assert record.exc_info is not None and record.exc_info[1] is exc


def test_pool_shutdown_finishes_queued_tasks_and_joins(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(2)
    done: list[int] = []
    for i in range(6):
        pool.submit(lambda n: (time.sleep(0.02), done.append(n)), i)
    threads = list(pool._threads)
    pool.shutdown(5.0)
    assert sorted(done) == list(range(6))
    assert not any(t.is_alive() for t in threads)


def test_pool_shutdown_without_start_is_harmless() -> None:
    ThreadPool(3).shutdown(0.1)


def test_pool_shutdown_is_bounded_by_timeout_in_all(pool_factory: Callable[[int], ThreadPool]) -> None:
    pool = pool_factory(4)
    release = threading.Event()
    for _ in range(4):
        pool.submit(lambda _: release.wait(10), None)
    time.sleep(0.05)
    start = time.monotonic()
    try:
        pool.shutdown(0.25)
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < 0.6, f"shutdown(0.25) took {elapsed:.2f} s"
