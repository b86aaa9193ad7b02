"""Request path -> file under a directory: decoding once, the refused shapes, containment, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bascule.static.resolve import (
    CACHE_ENTRIES,
    FILE,
    MISSING,
    NOT_FOUND,
    REDIRECT,
    Found,
    Resolver,
    decode_request_path,
    split_segments,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("a")
    (root / "sub" / "index.html").write_text("<p>")
    (root / ".env").write_text("SECRET=1")
    (root / "sub" / ".hidden").write_text("h")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "link-in").symlink_to("a.txt")
    (root / "link-out").symlink_to(tmp_path / "outside.txt")
    (root / "link-dir-out").symlink_to(tmp_path)
    (root / "link-dot").symlink_to(".env")
    os.mkfifo(root / "fifo")
    return root


def resolver(root: Path) -> Resolver:
    return Resolver(os.path.realpath(root))


def test_decode_request_path() -> None:
    assert decode_request_path(b"/a%20b") == "/a b"
    assert decode_request_path(b"/%252e") == "/%2e"  # once only
    assert decode_request_path(b"/caf%C3%A9") == "/café"
    assert decode_request_path(b"/%c0%ae%c0%ae") is None  # overlong UTF-8 dots
    assert decode_request_path(b"/%ff") is None
    assert decode_request_path(b"/a%00b") is None
    assert decode_request_path(b"/a%5cb") is None
    assert decode_request_path(b"/a\\b") is None


def test_split_segments() -> None:
    assert split_segments("") == ((), False)
    assert split_segments("/") == ((), True)
    assert split_segments("/a//b/") == (("a", "b"), True)
    assert split_segments("/css/x.css") == (("css", "x.css"), False)
    for bad in ("/..", "/a/../b", "/.", "/./a", "/.git/config", "/a/.env", "relative"):
        assert split_segments(bad) is None, bad


def test_locate(tree: Path) -> None:
    r = resolver(tree)
    real = os.path.realpath(tree)
    assert r.locate(("a.txt",), False) == Found(FILE, os.path.join(real, "a.txt"))
    assert r.locate(("a.txt",), True) == NOT_FOUND  # a file is not a directory
    assert r.locate(("sub",), False) == Found(REDIRECT)
    assert r.locate(("sub",), True) == Found(FILE, os.path.join(real, "sub", "index.html"))
    assert r.locate((), True) == NOT_FOUND  # no index.html at the top
    assert r.locate(("empty",), True) == NOT_FOUND
    assert r.locate(("missing",), False) == NOT_FOUND
    assert r.locate(("link-in",), False) == Found(FILE, os.path.join(real, "a.txt"))  # inside: allowed
    assert r.locate(("link-out",), False) == NOT_FOUND
    assert r.locate(("link-dir-out", "outside.txt"), False) == NOT_FOUND
    assert r.locate(("link-dot",), False) == NOT_FOUND  # a symlink to a dotfile is the dotfile
    assert r.locate(("fifo",), False) == NOT_FOUND
    assert r.locate(("a\x00",), False).kind == MISSING


def test_follow_symlinks_lets_links_lead_out(tree: Path, tmp_path: Path) -> None:
    """--static-follow-symlinks: a link inside may lead anywhere (a file, a directory, into a dot directory),
    but not to a dotfile, in or out; request paths are checked as without it."""
    r = Resolver(os.path.realpath(tree), follow_symlinks=True)
    real = os.path.realpath(tree)
    out = os.path.realpath(tmp_path)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "admin.css").write_text("css")
    (tmp_path / ".secret").write_text("s")
    (tree / "link-venv").symlink_to(tmp_path / ".venv" / "admin.css")
    (tree / "link-out-dot").symlink_to(tmp_path / ".secret")
    assert r.locate(("link-out",), False) == Found(FILE, os.path.join(out, "outside.txt"))
    assert r.locate(("link-dir-out", "outside.txt"), False) == Found(FILE, os.path.join(out, "outside.txt"))
    assert r.locate(("link-dir-out",), False) == Found(REDIRECT)
    assert r.locate(("link-venv",), False) == Found(FILE, os.path.join(out, ".venv", "admin.css"))
    assert r.locate(("link-out-dot",), False) == NOT_FOUND
    assert r.locate(("link-dot",), False) == NOT_FOUND
    assert r.locate(("link-in",), False) == Found(FILE, os.path.join(real, "a.txt"))
    assert split_segments("/link-dir-out/.secret") is None  # a dot segment in the request, as ever


def test_cache_expires_and_is_bounded(tree: Path) -> None:
    r = resolver(tree)
    assert r.find(("new.txt",), False, 100.0) == NOT_FOUND
    (tree / "new.txt").write_text("n")
    assert r.find(("new.txt",), False, 100.5) == NOT_FOUND  # cached for a second
    assert r.find(("new.txt",), False, 101.0).kind == FILE
    for i in range(CACHE_ENTRIES + 10):
        r.find((f"n{i}",), False, 200.0)
    assert len(r._cache) <= CACHE_ENTRIES


def test_siblings(tree: Path, tmp_path: Path) -> None:
    (tree / "a.txt.gz").write_bytes(b"gz")
    (tree / "a.txt.br").write_bytes(b"br")
    (tree / "a.txt.zst").mkdir()  # not a regular file: not a sibling
    (tree / "sub" / "index.html.gz").symlink_to(tmp_path / "outside.txt")  # out of the tree: ignored
    real = os.path.realpath(tree)
    found = resolver(tree).locate(("a.txt",), False)
    assert found.siblings == (("br", os.path.join(real, "a.txt.br")), ("gzip", os.path.join(real, "a.txt.gz")))
    assert resolver(tree).locate(("sub",), True).siblings == ()
