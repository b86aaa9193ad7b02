"""--static end to end over real sockets: what a browser and a cache see, on HTTP/1.1 and HTTP/2.

A small ASGI app sits at the root next to the static mount, so the longest-prefix rule is exercised too.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, serve_in_thread

import bascule.protocols.sendfile as sendfile_module
from bascule.errors import ConfigError
from bascule.static.conditional import http_date

BIG = 1024 * 1024


async def root_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"app:" + scope["path"].encode()})


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "css").mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "css" / "site.css").write_bytes(b"body{}\n")
    (root / "app.js").write_bytes(b"let x;\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return root


@pytest.fixture
def srv(www: Path) -> Iterator[Running]:
    with serve_in_thread(root_app, static=(f"/static={www}",), mount=()) as running:
        yield running


@pytest.fixture
def client(srv: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url + "/static") as c:
        yield c


def test_get_sends_the_file_with_its_validators(client: httpx.Client, www: Path) -> None:
    reply = client.get("/hello.txt")
    assert reply.status_code == 200 and reply.content == b"hello, world\n"
    headers = reply.headers
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == "13"
    assert headers["accept-ranges"] == "bytes"
    assert headers["cache-control"] == "public, max-age=60"
    assert headers["last-modified"] == http_date((www / "hello.txt").stat().st_mtime).decode()
    assert headers["etag"].startswith('"') and headers["etag"].endswith('"')
    assert "vary" not in headers
    assert client.get("/css/site.css").headers["content-type"] == "text/css; charset=utf-8"
    assert client.get("/app.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert client.get("/big.bin").headers["content-type"] == "application/octet-stream"


def test_etag_changes_when_the_file_does(client: httpx.Client, www: Path) -> None:
    before = client.get("/hello.txt").headers["etag"]
    (www / "hello.txt").write_bytes(b"hello, there\n")
    os.utime(www / "hello.txt", ns=(1, 1_000_000_000_000_000_000))
    after = client.get("/hello.txt")
    assert after.headers["etag"] != before and after.content == b"hello, there\n"


def test_if_none_match_gives_304_with_validators_and_no_body(client: httpx.Client) -> None:
    full = client.get("/hello.txt")
    etag = full.headers["etag"]
    for value in (etag, "W/" + etag, f'"nope", {etag}', "*"):
        reply = client.get("/hello.txt", headers={"if-none-match": value})
        assert reply.status_code == 304, value
        assert reply.content == b""
        assert reply.headers["etag"] == etag
        assert reply.headers["last-modified"] == full.headers["last-modified"]
        assert reply.headers["cache-control"] == full.headers["cache-control"]
    assert client.get("/hello.txt", headers={"if-none-match": '"nope"'}).status_code == 200
    head = client.head("/hello.txt", headers={"if-none-match": etag})
    assert head.status_code == 304


def test_if_modified_since(client: httpx.Client, www: Path) -> None:
    mtime = int((www / "hello.txt").stat().st_mtime)
    last_modified = client.get("/hello.txt").headers["last-modified"]
    assert client.get("/hello.txt", headers={"if-modified-since": last_modified}).status_code == 304
    older = http_date(mtime - 60).decode()
    assert client.get("/hello.txt", headers={"if-modified-since": older}).status_code == 200
    assert client.get("/hello.txt", headers={"if-modified-since": "garbage"}).status_code == 200
    both = {"if-modified-since": last_modified, "if-none-match": '"other"'}
    assert client.get("/hello.txt", headers=both).status_code == 200  # If-None-Match wins


def test_if_match_412(client: httpx.Client) -> None:
    reply = client.get("/hello.txt", headers={"if-match": '"other"'})
    assert reply.status_code == 412 and reply.content == b""


def test_ranges(client: httpx.Client) -> None:
    reply = client.get("/hello.txt", headers={"range": "bytes=0-4"})
    assert reply.status_code == 206 and reply.content == b"hello"
    assert reply.headers["content-range"] == "bytes 0-4/13" and reply.headers["content-length"] == "5"
    assert client.get("/hello.txt", headers={"range": "bytes=7-"}).content == b"world\n"
    assert client.get("/hello.txt", headers={"range": "bytes=-6"}).content == b"world\n"
    unsatisfiable = client.get("/hello.txt", headers={"range": "bytes=13-"})
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == "bytes */13"
    assert unsatisfiable.content == b""
    overlapping = client.get("/hello.txt", headers={"range": "bytes=0-5,3-8"})
    assert overlapping.status_code == 200 and overlapping.content == b"hello, world\n"
    assert client.get("/hello.txt", headers={"range": "lines=1-2"}).status_code == 200
    head = client.head("/hello.txt", headers={"range": "bytes=0-4"})  # Range is for GET only
    assert head.status_code == 200 and head.headers["content-length"] == "13"


def test_if_range(client: httpx.Client) -> None:
    full = client.get("/hello.txt")
    etag, date = full.headers["etag"], full.headers["last-modified"]
    assert client.get("/hello.txt", headers={"range": "bytes=0-4", "if-range": etag}).status_code == 206
    assert client.get("/hello.txt", headers={"range": "bytes=0-4", "if-range": date}).status_code == 206
    stale = client.get("/hello.txt", headers={"range": "bytes=0-4", "if-range": '"old"'})
    assert stale.status_code == 200 and stale.content == b"hello, world\n"
    weak = client.get("/hello.txt", headers={"range": "bytes=0-4", "if-range": "W/" + etag})
    assert weak.status_code == 200
    old_date = client.get("/hello.txt", headers={"range": "bytes=0-4", "if-range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert old_date.status_code == 200


def test_head(client: httpx.Client) -> None:
    reply = client.head("/hello.txt")
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["content-length"] == "13" and "etag" in reply.headers


def test_index_and_trailing_slash_redirect(client: httpx.Client, srv: Running) -> None:
    index = client.get("/docs/")
    assert index.status_code == 200 and index.content == b"<h1>docs</h1>\n"
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    moved = client.get("/docs?page=2&x=%20")
    assert moved.status_code == 301 and moved.headers["location"] == "./docs/?page=2&x=%20"
    followed = httpx.get(srv.url + "/static/docs?q=1", follow_redirects=True)
    assert followed.status_code == 200 and str(followed.url) == srv.url + "/static/docs/?q=1"
    top = httpx.get(srv.url + "/static", follow_redirects=True)
    assert str(top.url) == srv.url + "/static/" and top.status_code == 404  # no index.html at the top


def test_only_get_and_head(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        reply = client.request(method, "/hello.txt")
        assert reply.status_code == 405, method
        assert reply.headers["allow"] == "GET, HEAD"


def test_longest_prefix_between_app_and_static(www: Path, tmp_path: Path) -> None:
    deeper = tmp_path / "deeper"
    deeper.mkdir()
    (deeper / "hello.txt").write_bytes(b"deeper\n")
    with serve_in_thread(root_app, static=(f"/static={www}", f"/static/docs/more={deeper}")) as srv:
        assert httpx.get(srv.url + "/static/hello.txt").content == b"hello, world\n"
        assert httpx.get(srv.url + "/static/docs/more/hello.txt").content == b"deeper\n"
        assert httpx.get(srv.url + "/staticx").content == b"app:/staticx"
        assert httpx.get(srv.url + "/other").content == b"app:/other"
        missing = httpx.get(srv.url + "/static/nothing")
        assert missing.status_code == 404 and missing.content == b"Not Found\n"


def test_static_only_server(www: Path) -> None:
    with serve_in_thread(None, label=None, static=(f"/={www}",)) as srv:
        assert httpx.get(srv.url + "/hello.txt").content == b"hello, world\n"
        assert httpx.get(srv.url + "/docs/").status_code == 200
        assert httpx.get(srv.url + "/").status_code == 404


def test_config_errors(www: Path, tmp_path: Path) -> None:
    from bascule.config import Config
    from bascule.mounts import resolve_mounts
    for spec in ("static", "/s", "s=dir", "/s=", "/../s=dir", "/a%2e=dir"):
        with pytest.raises(ConfigError, match="static"):
            Config(app="x:y", static=(spec,))
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_mounts(Config(static=(f"/s={tmp_path / 'nope'}",)))
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_mounts(Config(static=(f"/s={www / 'hello.txt'}",)))
    with pytest.raises(ConfigError, match="already mounted"):
        resolve_mounts(Config(static=(f"/s={www}", f"/s/={www}")))
    with pytest.raises(ConfigError, match="static_max_age"):
        Config(static=(f"/s={www}",), static_max_age=-1)
    assert resolve_mounts(Config(static=(f"/s={www}",))) == []


def test_max_age_option(www: Path) -> None:
    with serve_in_thread(root_app, static=(f"/s={www}",), static_max_age=86400) as srv:
        assert httpx.get(srv.url + "/s/hello.txt").headers["cache-control"] == "public, max-age=86400"


def test_access_log_lines(www: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bascule.access")
    with serve_in_thread(root_app, static=(f"/s={www}",), access_log=True) as srv:
        httpx.get(srv.url + "/s/hello.txt")
        httpx.get(srv.url + "/s/nothing")
    lines = [r.getMessage() for r in caplog.records if r.name == "bascule.access"]
    assert any('"GET /s/hello.txt HTTP/1.1" 200 13' in line for line in lines), lines
    assert any('"GET /s/nothing HTTP/1.1" 404' in line for line in lines), lines


def test_big_file_over_http1_uses_sendfile(srv: Running, www: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(sendfile_module.os, "sendfile", spy)
    data = (www / "big.bin").read_bytes()
    with httpx.Client() as client:
        reply = client.get(srv.url + "/static/big.bin")
        part = client.get(srv.url + "/static/big.bin", headers={"range": "bytes=1000-"})
        again = client.get(srv.url + "/static/hello.txt")  # the connection goes on
    assert reply.content == data and part.content == data[1000:]
    end = time.monotonic() + 5  # the server thread records its last call after the client has the bytes
    while sum(calls) < 2 * BIG - 1000 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.05)
    assert sum(calls) == 2 * BIG - 1000  # not the small file: it goes with the head (below)
    assert again.content == b"hello, world\n"


def test_small_file_goes_with_the_head(srv: Running, www: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to INLINE_MAX bytes are read and written with the head: no sendfile (a second system call, and a
    second segment for the client to wake up for), the same bytes, ranges and HEAD included."""
    calls: list[int] = []
    monkeypatch.setattr(sendfile_module.os, "sendfile", lambda *args: calls.append(1) or 0)
    edge = os.urandom(16 * 1024)
    (www / "edge.bin").write_bytes(edge)
    with httpx.Client() as client:
        whole = client.get(srv.url + "/static/edge.bin")
        part = client.get(srv.url + "/static/edge.bin", headers={"range": "bytes=100-199"})
        head = client.head(srv.url + "/static/hello.txt")
        small = client.get(srv.url + "/static/hello.txt")
    assert whole.status_code == 200 and whole.content == edge
    assert part.status_code == 206 and part.content == edge[100:200]
    assert head.status_code == 200 and head.headers["content-length"] == "13" and head.content == b""
    assert small.content == b"hello, world\n"
    assert calls == []


def test_big_file_over_http2(srv: Running, www: Path) -> None:
    data = (www / "big.bin").read_bytes()
    with httpx.Client(http1=False, http2=True) as client:
        reply = client.get(srv.url + "/static/big.bin")
        part = client.get(srv.url + "/static/big.bin", headers={"range": "bytes=-5000"})
        etag = reply.headers["etag"]
        cached = client.get(srv.url + "/static/big.bin", headers={"if-none-match": etag})
        head = client.head(srv.url + "/static/big.bin")
    assert reply.http_version == "HTTP/2"
    assert reply.content == data and reply.headers["content-length"] == str(BIG)
    assert part.status_code == 206 and part.content == data[-5000:]
    assert cached.status_code == 304 and cached.content == b""
    assert head.content == b"" and head.headers["content-length"] == str(BIG)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_client_gone_mid_file_closes_the_file(srv: Running, www: Path, http2: bool) -> None:
    (www / "huge.bin").write_bytes(os.urandom(8 * BIG))
    httpx.get(srv.url + "/static/hello.txt")
    before = open_fds()
    if http2:
        with httpx.Client(http1=False, http2=True) as client, client.stream("GET", srv.url + "/static/huge.bin") as r:
            next(r.iter_bytes())
    else:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    end = time.monotonic() + 5
    while open_fds() > before and time.monotonic() < end:
        time.sleep(0.05)
    assert open_fds() <= before
    assert srv.server is not None
    assert httpx.get(srv.url + "/static/hello.txt").status_code == 200


def raw_body(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent (httpx would decode a Content-Encoding)."""
    with client.stream("GET", url, headers=headers) as reply:
        return reply, b"".join(reply.iter_raw())


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_precompressed_siblings(www: Path, http2: bool) -> None:
    import gzip
    css = b"body { color: red }\n" * 50
    (www / "css" / "site.css").write_bytes(css)
    (www / "css" / "site.css.gz").write_bytes(gzip.compress(css))
    (www / "css" / "site.css.br").write_bytes(b"pretend-brotli")
    with serve_in_thread(root_app, static=(f"/s={www}",)) as srv, \
            httpx.Client(base_url=srv.url + "/s", http1=not http2, http2=http2) as client:
        plain, body = raw_body(client, "/css/site.css", {"accept-encoding": "identity"})
        assert body == css and "content-encoding" not in plain.headers
        assert plain.headers["vary"] == "Accept-Encoding"
        gz, body = raw_body(client, "/css/site.css", {"accept-encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip" and gzip.decompress(body) == css
        assert gz.headers["content-type"] == "text/css; charset=utf-8"
        assert gz.headers["content-length"] == str(len(body)) and gz.headers["vary"] == "Accept-Encoding"
        br, body = raw_body(client, "/css/site.css", {"accept-encoding": "gzip, br"})
        assert br.headers["content-encoding"] == "br" and body == b"pretend-brotli"
        etags = {plain.headers["etag"], gz.headers["etag"], br.headers["etag"]}
        assert len(etags) == 3  # one strong tag per representation
        same = client.get("/css/site.css", headers={"accept-encoding": "gzip", "if-none-match": gz.headers["etag"]})
        assert same.status_code == 304 and same.headers["vary"] == "Accept-Encoding"
        other, _ = raw_body(client, "/css/site.css", {"accept-encoding": "br", "if-none-match": gz.headers["etag"]})
        assert other.status_code == 200  # read raw: with brotli installed httpx would decode the fake .br
        part, body = raw_body(client, "/css/site.css", {"accept-encoding": "br", "range": "bytes=0-6"})
        assert part.status_code == 206 and body == b"pretend"  # a range of the encoded bytes
        direct, body = raw_body(client, "/css/site.css.gz", {"accept-encoding": "gzip"})
        assert direct.headers["content-type"] == "application/gzip" and "content-encoding" not in direct.headers
        alone = client.get("/hello.txt", headers={"accept-encoding": "gzip, br"})
        assert "vary" not in alone.headers and "content-encoding" not in alone.headers


def test_sibling_symlinked_out_is_ignored(www: Path, tmp_path: Path) -> None:
    (tmp_path / "evil.gz").write_bytes(b"outside")
    (www / "hello.txt.gz").symlink_to(tmp_path / "evil.gz")
    with serve_in_thread(root_app, static=(f"/s={www}",)) as srv:
        reply = httpx.get(srv.url + "/s/hello.txt", headers={"accept-encoding": "gzip"})
    assert reply.content == b"hello, world\n" and "content-encoding" not in reply.headers


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_multiple_ranges_multipart(srv: Running, www: Path, http2: bool) -> None:
    import email.parser
    import email.policy
    data = (www / "big.bin").read_bytes()
    with httpx.Client(http1=not http2, http2=http2) as client:
        reply = client.get(srv.url + "/static/big.bin", headers={"range": "bytes=500000-500099, 0-9, -20"})
    assert reply.status_code == 206
    kind = reply.headers["content-type"]
    assert kind.startswith("multipart/byteranges; boundary=")
    assert int(reply.headers["content-length"]) == len(reply.content)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + kind.encode() + b"\r\n\r\n" + reply.content)
    parts = [(part["content-range"], part["content-type"], part.get_payload(decode=True))
             for part in message.iter_parts()]
    assert parts == [
        (f"bytes 500000-500099/{BIG}", "application/octet-stream", data[500000:500100]),
        (f"bytes 0-9/{BIG}", "application/octet-stream", data[:10]),
        (f"bytes {BIG - 20}-{BIG - 1}/{BIG}", "application/octet-stream", data[-20:]),
    ]


def test_single_page_app_fallback(www: Path) -> None:
    (www / "index.html").write_bytes(b"<div id=app></div>\n")
    page = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    with serve_in_thread(root_app, static=(f"/s={www}",), static_fallback="index.html") as srv:
        route = httpx.get(srv.url + "/s/users/42", headers=page)
        assert route.status_code == 200 and route.content == b"<div id=app></div>\n"
        assert route.headers["content-type"] == "text/html; charset=utf-8"
        assert httpx.get(srv.url + "/s/assets/missing.js", headers={"accept": "*/*"}).status_code == 404
        assert httpx.get(srv.url + "/s/hello.txt", headers=page).content == b"hello, world\n"
        assert httpx.get(srv.url + "/s/.env", headers=page).status_code == 404  # refused, not fallen back
        assert httpx.get(srv.url + "/s/%2e%2e/x", headers=page).status_code == 404


def test_fallback_config_errors(www: Path) -> None:
    from bascule.config import Config
    from bascule.mounts import resolve_mounts
    with pytest.raises(ConfigError, match="static_fallback"):
        Config(app="x:y", static_fallback="index.html")
    for bad in ("missing.html", "../hello.txt", "docs"):
        with pytest.raises(ConfigError, match="static_fallback"):
            resolve_mounts(Config(static=(f"/s={www}",), static_fallback=bad))
    assert resolve_mounts(Config(static=(f"/s={www}",), static_fallback="docs/index.html")) == []
