"""A corpus of path traversal attempts against --static: every one is a 404, and the secret never leaks.

Requests are written by hand on a raw socket, so no client normalises the dots away first. The directory
holds a secret in a dotfile, in a .git directory, behind symlinks pointing out, and one level above it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Running, http_exchange, serve_in_thread

SECRET = b"TOP-SECRET-42"

CORPUS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/sub/..",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/./hello.txt/../../secret.txt",
    "/..\\secret.txt",
    "/%5c..%5csecret.txt",
    "/sub\\..\\..\\secret.txt",
    "/hello.txt%00.png",
    "/%00",
    "/%c0%ae%c0%ae/secret.txt",
    "/%c0%ae%c0%ae%c0%afsecret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/%ff/secret.txt",
    "/.git/config",
    "/%2egit/config",
    "/.git/",
    "/.env",
    "/sub/.env",
    "/.",
    "/%2e",
    "/link-out",
    "/link-dir/secret.txt",
    "/link-dotfile",
    "/link-out-dotfile",
    "/sub/link-up/secret.txt",
    "/hello.txt/",
    "/hello.txt/..",
    "/fifo",
    "/missing",
    "/hello.txt;/../../secret.txt",
    "//../secret.txt",
    "/sub//../../secret.txt",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("traversal")
    root = base / "www"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / ".git" / "config").write_bytes(SECRET)
    (root / ".env").write_bytes(SECRET)
    (root / "sub" / ".env").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    (root / "link-out").symlink_to(base / "secret.txt")
    (root / "link-dir").symlink_to(base)
    (root / "link-dotfile").symlink_to(".env")
    (root / "sub" / "link-up").symlink_to("../..")
    (base / ".hidden").write_bytes(SECRET)
    (root / "link-out-dotfile").symlink_to(base / ".hidden")
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture(scope="module", params=["", "/static"], ids=["root", "prefix"])
def mounted(request: pytest.FixtureRequest, tree: Path) -> Iterator[tuple[Running, str]]:
    prefix = str(request.param)
    with serve_in_thread(None, label=None, static=(f"{prefix or '/'}={tree}",)) as srv:
        yield srv, prefix


def get(srv: Running, target: str) -> bytes:
    with srv.connect() as sock:
        return http_exchange(sock, b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: x\r\n\r\n")


def test_the_file_itself_is_served(mounted: tuple[Running, str]) -> None:
    srv, prefix = mounted
    reply = get(srv, prefix + "/hello.txt")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello\n")


@pytest.mark.parametrize("path", CORPUS)
def test_traversal_attempt_is_404(mounted: tuple[Running, str], path: str) -> None:
    srv, prefix = mounted
    reply = get(srv, prefix + path)
    assert SECRET not in reply
    status = reply.split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 404 Not Found", (path, reply[:200])
    assert b"Traceback" not in reply


def test_no_file_outside_is_ever_served_over_the_server(mounted: tuple[Running, str]) -> None:
    srv, _ = mounted
    with socket.create_connection((srv.host, srv.port)) as sock:
        reply = http_exchange(sock, b"GET /../../../../etc/hostname HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404")


# -- --static-follow-symlinks ------------------------------------------------------------------------------

LINKS_OUT = {"/link-out", "/link-dir/secret.txt", "/sub/link-up/secret.txt"}
"""The corpus entries that reach the secret only through a symlink placed inside the directory."""


@pytest.fixture(scope="module", params=["", "/static"], ids=["root", "prefix"])
def following(request: pytest.FixtureRequest, tree: Path) -> Iterator[tuple[Running, str]]:
    prefix = str(request.param)
    with serve_in_thread(None, label=None, static=(f"{prefix or '/'}={tree}",), static_follow_symlinks=True) as srv:
        yield srv, prefix


@pytest.mark.parametrize("path", CORPUS)
def test_traversal_attempt_with_links_followed(following: tuple[Running, str], path: str) -> None:
    """With --static-follow-symlinks only the links someone placed in the directory lead out: every other
    attempt of the corpus is still a 404 without the secret (dotfiles, .., encodings, a link to a dotfile)."""
    srv, prefix = following
    reply = get(srv, prefix + path)
    status = reply.split(b"\r\n", 1)[0]
    assert b"Traceback" not in reply
    if path in LINKS_OUT:
        assert status == b"HTTP/1.1 200 OK" and reply.endswith(SECRET), (path, reply[:200])
    else:
        assert status == b"HTTP/1.1 404 Not Found", (path, reply[:200])
        assert SECRET not in reply
