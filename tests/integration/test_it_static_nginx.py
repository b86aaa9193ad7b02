"""--static against a real nginx serving the same directory: the same requests must get the same answers.

nginx (Debian's package, started by the test on loopback, nginx_support.py) and bascule (a real process,
``--static /=DIR`` alone, no app) serve one directory. For each request the two must agree on the status,
Content-Length, Content-Range, Last-Modified (equal), the presence of an ETag, a body on 304 (none) and the
body bytes. Each server's own ETag is used in its own conditional requests: the tags themselves differ by
design (nginx's uses seconds, bascule's nanoseconds). nginx is set to ``if_modified_since before``, the RFC's
rule (its default, ``exact``, answers 304 only to the very date it sent).

Multiple ranges: both answer multipart/byteranges, compared by their parts' Content-Range (the boundaries
differ). Not compared: overlapping ranges (nginx sends them, bascule the whole file), the Location of the
slash redirect (nginx writes an absolute URL, bascule a relative one), dotfiles (nginx serves them unless
told not to), Content-Type charsets, Cache-Control (nginx sends none).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from conftest import free_port
from it_support import spawn, tcp_ready
from nginx_support import have_nginx, nginx, server

pytestmark = pytest.mark.skipif(not have_nginx(), reason="nginx is not installed (apt-get install nginx)")

OLD_DATE = "Mon, 01 Jan 2001 00:00:00 GMT"
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/hello.txt", {}),
    ("HEAD", "/hello.txt", {}),
    ("GET", "/hello.txt", {"if-none-match": "{etag}"}),
    ("HEAD", "/hello.txt", {"if-none-match": "{etag}"}),
    ("GET", "/hello.txt", {"if-none-match": '"stale", {etag}'}),
    ("GET", "/hello.txt", {"if-none-match": "*"}),
    ("GET", "/hello.txt", {"if-none-match": '"stale"'}),
    ("GET", "/hello.txt", {"if-modified-since": "{last_modified}"}),
    ("GET", "/hello.txt", {"if-modified-since": OLD_DATE}),
    ("GET", "/hello.txt", {"range": "bytes=0-4"}),
    ("GET", "/hello.txt", {"range": "bytes=7-"}),
    ("GET", "/hello.txt", {"range": "bytes=-6"}),
    ("GET", "/hello.txt", {"range": "bytes=5-1000"}),
    ("GET", "/hello.txt", {"range": "bytes=13-"}),
    ("GET", "/hello.txt", {"range": "bytes=100-200"}),
    ("GET", "/hello.txt", {"range": "bytes=0-4", "if-range": "{etag}"}),
    ("GET", "/hello.txt", {"range": "bytes=0-4", "if-range": '"stale"'}),
    ("GET", "/hello.txt", {"range": "bytes=0-4", "if-range": "{last_modified}"}),
    ("GET", "/hello.txt", {"range": "bytes=0-4", "if-range": OLD_DATE}),
    ("GET", "/big.bin", {}),
    ("GET", "/big.bin", {"range": "bytes=100000-700000"}),
    ("GET", "/big.bin", {"range": "bytes=0-9,100-199,-5"}),
    ("GET", "/hello.txt", {"range": "bytes=0-1, 100-200"}),
    ("GET", "/docs/", {}),
    ("GET", "/docs", {}),
    ("GET", "/missing.txt", {}),
    ("GET", "/docs/missing/", {}),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("static_nginx")
    www = tmp / "www"
    (www / "docs").mkdir(parents=True)
    (www / "hello.txt").write_bytes(b"hello, world\n")
    (www / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (www / "big.bin").write_bytes(os.urandom(1024 * 1024))
    nginx_port, bascule_port = free_port(), free_port()
    block = server(nginx_port, f"root {www}; if_modified_since before;")
    with contextlib.ExitStack() as stack:
        stack.enter_context(nginx(tmp / "nginx", block, [nginx_port]))
        stack.enter_context(spawn(["--static", f"/={www}", "--port", str(bascule_port), "--no-access-log"],
                                  log=tmp / "bascule.log", ready=tcp_ready(bascule_port)))
        yield f"http://127.0.0.1:{nginx_port}", f"http://127.0.0.1:{bascule_port}"


def part_ranges(body: bytes) -> list[bytes]:
    """The Content-Range lines of a multipart/byteranges body, in order."""
    return re.findall(rb"(?im)^content-range: *(bytes [0-9]+-[0-9]+/[0-9]+)\r$", body)


def ask(client: httpx.Client, base: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    plain = client.get(base + path) if any("{" in v for v in headers.values()) else None
    filled = {}
    for name, value in headers.items():
        if plain is not None:
            value = value.replace("{etag}", plain.headers.get("etag", "")).replace(
                "{last_modified}", plain.headers.get("last-modified", ""))
        filled[name] = value
    return client.request(method, base + path, headers=filled)


@pytest.mark.parametrize(("method", "path", "headers"), REQUESTS,
                         ids=[f"{m} {p} {' '.join(f'{k}={v}' for k, v in h.items())}" for m, p, h in REQUESTS])
def test_same_answer_as_nginx(servers: tuple[str, str], method: str, path: str, headers: dict[str, str]) -> None:
    nginx_url, bascule_url = servers
    with httpx.Client(timeout=10) as client:
        theirs = ask(client, nginx_url, method, path, headers)
        ours = ask(client, bascule_url, method, path, headers)
        current_etag = client.get(bascule_url + path).headers.get("etag")
    assert ours.status_code == theirs.status_code, (theirs.headers, ours.headers)
    status = ours.status_code
    if status in (200, 206, 304):
        assert ("etag" in ours.headers) == ("etag" in theirs.headers)
        assert ours.headers.get("last-modified") == theirs.headers.get("last-modified")
    if ours.headers.get("content-type", "").startswith("multipart/byteranges"):  # boundaries differ
        assert theirs.headers["content-type"].startswith("multipart/byteranges")
        assert part_ranges(ours.content) == part_ranges(theirs.content) != []
    elif status in (200, 206):
        assert ours.headers["content-length"] == theirs.headers["content-length"]
        assert ours.content == theirs.content
    if status == 416 or (status == 206 and "content-range" in theirs.headers):
        assert ours.headers["content-range"] == theirs.headers["content-range"]
    if status == 304:
        assert ours.content == theirs.content == b""
        assert ours.headers["etag"] == current_etag  # the 304 keeps the validators (RFC 9110 15.4.5)
    if status == 301:
        assert ours.headers["location"].endswith("/") and theirs.headers["location"].endswith(path + "/")
