"""curl against the bascule CLI: GET, POST from a file, Expect: 100-continue, HEAD, chunked uploads and
connection reuse, for a WSGI and an ASGI app. curl's own -v trace shows what happened on the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from it_support import clean_env, spawn, tcp_ready

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp(f"curl-{request.param}") / "server.log"
    with spawn([f"it_ops_{request.param}:app", "--port", str(port)], env=clean_env(), log=log,
               ready=tcp_ready(port)):
        yield f"http://127.0.0.1:{port}"


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    result = subprocess.run([CURL, "--silent", "--show-error", "--max-time", "10", *args],
                            capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


@pytest.fixture
def upload(tmp_path: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    """A 2 MB file and the JSON /echo answers for it."""
    data = os.urandom(2 * 1024 * 1024)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    yield path, {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_get(url: str) -> None:
    result = curl("--include", url + "/hello")
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-length: 5" in head.lower()
    assert body == b"hello"


def test_post_data_binary_from_file(url: str, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "small.bin").write_bytes(data)
    result = curl("--data-binary", f"@{tmp_path / 'small.bin'}", "-H", "Expect:", url + "/echo")
    assert json.loads(result.stdout) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_expect_100_continue_upload(url: str, upload: tuple[Path, dict[str, object]]) -> None:
    path, expected = upload
    result = curl("--verbose", "-H", "Expect: 100-continue", "--data-binary", f"@{path}", url + "/echo")
    trace = result.stderr.decode(errors="replace")
    assert "> Expect: 100-continue" in trace
    assert "< HTTP/1.1 100 Continue" in trace
    assert "< HTTP/1.1 200 OK" in trace
    assert json.loads(result.stdout) == expected


def test_head(url: str) -> None:
    result = curl("--head", url + "/hello")
    head = result.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "content-length: 5\r\n" in head.lower()
    assert head.endswith("\r\n\r\n")  # headers only: the app's body is not sent for HEAD


def test_chunked_upload(url: str, upload: tuple[Path, dict[str, object]]) -> None:
    path, expected = upload
    result = curl("--verbose", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}", url + "/echo")
    assert "> Transfer-Encoding: chunked" in result.stderr.decode(errors="replace")
    assert json.loads(result.stdout) == expected


def test_keep_alive_reuses_the_connection(url: str) -> None:
    result = curl("--verbose", url + "/hello", url + "/hello?again=1")
    trace = result.stderr.decode(errors="replace")
    assert result.stdout == b"hellohello"
    assert "Re-using existing connection" in trace or trace.count("left intact") == 2
    assert trace.count("Connected to") == 1
