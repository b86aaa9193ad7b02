"""The static file cache: identity checks, the settle rule, its bounds (units), and end to end that a cached
file costs no open, that every kind of change is seen by the next request, and that no descriptor is left."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, serve_in_thread

from bascule.static import filecache
from bascule.static.filecache import CachedFile, FileCache, settled

LATER = 10_000_000_000  # ns added to the clock so that a file written by the test counts as settled


def entry_for(path: Path, data: bytes | None = None, coding: str | None = None) -> CachedFile:
    entry = CachedFile(str(path), os.stat(path), coding, False, b'"e"', b"date", b"text/plain", b"public")
    entry.data = data
    return entry


def test_fields_are_computed_once(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"abc")
    entry = CachedFile(str(tmp_path / "a.txt"), os.stat(tmp_path / "a.txt"), "gzip", True, b'"t"', b"lm",
                       b"text/plain", b"public, max-age=60")
    assert entry.validators == [(b"etag", b'"t"'), (b"last-modified", b"lm"), (b"cache-control", b"public, max-age=60"),
                                (b"vary", b"Accept-Encoding")]
    assert entry.full == [(b"content-type", b"text/plain"), *entry.validators, (b"accept-ranges", b"bytes"),
                          (b"content-encoding", b"gzip"), (b"content-length", b"3")]
    assert entry.size == 3 and entry.mtime == os.stat(tmp_path / "a.txt").st_mtime_ns // 10 ** 9


def test_same_sees_every_change(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"one")
    entry = entry_for(path)
    assert entry.same(os.stat(path))
    time.sleep(0.02)  # past the file system's clock tick
    path.write_bytes(b"two")  # in place, same size
    assert not entry.same(os.stat(path))
    entry = entry_for(path)
    time.sleep(0.02)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))  # the same times set again (cp -p, rsync -t): ctime moves
    assert not entry.same(os.stat(path))
    entry = entry_for(path)
    (tmp_path / "b.txt").write_bytes(b"two")
    os.utime(tmp_path / "b.txt", ns=(entry.mtime_ns, entry.mtime_ns))
    os.replace(tmp_path / "b.txt", path)  # replaced by another inode with the same size and mtime
    assert not entry.same(os.stat(path))


def test_a_file_just_written_has_not_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"x")
    assert not settled(os.stat(path))
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now + filecache.SETTLE_NS + 1)
    assert settled(os.stat(path))
    future = now + 10 * filecache.SETTLE_NS
    os.utime(path, ns=(future, future))  # a modification time ahead of the clock (rsync -t from a fast host)
    monkeypatch.setattr(time, "time_ns", lambda: os.stat(path).st_ctime_ns + filecache.SETTLE_NS)
    assert settled(os.stat(path))  # judged by the change time the utime set, not by the mtime it wrote


def test_bounds_drop_the_oldest(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode() * 10)
    cache = FileCache(max_entries=3, max_bytes=25)
    for name in "abc":
        cache.put(entry_for(tmp_path / name, (name * 10).encode() if name != "b" else None))
    assert list(cache.entries) == [str(tmp_path / n) for n in "abc"] and cache.bytes == 20
    cache.put(entry_for(tmp_path / "d", b"d" * 10))  # 30 bytes > 25: a goes; then 3 entries again
    assert list(cache.entries) == [str(tmp_path / n) for n in "bcd"] and cache.bytes == 20
    cache.put(entry_for(tmp_path / "a", b"a" * 26))  # more than the whole budget: kept without its bytes
    assert cache.entries[str(tmp_path / "a")].data is None and cache.bytes == 20
    assert list(cache.entries) == [str(tmp_path / n) for n in "cda"]
    cache.put(entry_for(tmp_path / "c", b"c" * 10))  # replacing an entry does not count it twice
    assert cache.bytes == 20 and len(cache.entries) == 3
    cache.drop(str(tmp_path / "nothing"))
    cache.drop(str(tmp_path / "c"))
    assert cache.bytes == 10


def test_fill_counts_the_bytes_once(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).write_bytes(b"x" * 10)
    cache = FileCache(max_bytes=25)
    a, b = entry_for(tmp_path / "a"), entry_for(tmp_path / "b")
    cache.put(a)
    cache.put(b)
    cache.fill(a, b"x" * 10)
    cache.fill(a, b"y" * 10)  # already has its bytes: nothing changes
    assert a.data == b"x" * 10 and cache.bytes == 10
    cache.fill(b, b"x" * 10)
    assert cache.bytes == 20
    orphan = entry_for(tmp_path / "a")
    cache.fill(orphan, b"z" * 10)  # not the entry kept for its path: serves its request, counts nothing
    assert orphan.data == b"z" * 10 and cache.bytes == 20
    c = entry_for(tmp_path / "c")
    cache.put(c)
    cache.fill(c, b"x" * 10)  # 30 > 25: the oldest (a) goes
    assert list(cache.entries) == [str(tmp_path / n) for n in "bc"] and cache.bytes == 20
    cache.drop(str(tmp_path / "b"))
    cache.drop(str(tmp_path / "c"))
    assert cache.bytes == 0


def test_fresh_checks_the_path_now(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_bytes(b"a")
    cache = FileCache()
    cache.put(entry_for(path, b"a"))
    assert cache.fresh(str(path), None, False) is not None
    assert cache.fresh(str(path), "gzip", False) is None  # the same file asked for as another representation
    assert cache.fresh(str(path), None, True) is None  # a sibling appeared: the fields must say Vary
    time.sleep(0.02)
    path.write_bytes(b"b")
    assert cache.fresh(str(path), None, False) is None and not cache.entries
    cache.put(entry_for(path, b"b"))
    path.unlink()
    assert cache.fresh(str(path), None, False) is None and not cache.entries
    path.write_bytes(b"c")
    cache.put(entry_for(path, None))  # fields only (a large file): never answered without opening it
    assert cache.fresh(str(path), None, False) is None


# -- end to end ------------------------------------------------------------------------------------------


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.css").write_bytes(b"a{color:red}\n")
    (root / "big.bin").write_bytes(os.urandom(64 * 1024))
    return root


@pytest.fixture
def srv(www: Path) -> Iterator[Running]:
    with serve_in_thread(None, label=None, static=(f"/s={www}",)) as running:
        yield running


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file the test writes counts as settled (written long enough ago)."""
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + LATER)


def opens_of(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """The paths under ``root`` the server opens from now on."""
    seen: list[str] = []
    real = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(root)):
            seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return seen


def test_a_settled_small_file_is_served_without_opening_it(srv: Running, www: Path, later: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    opened = opens_of(monkeypatch, www)
    with httpx.Client(base_url=srv.url) as client:
        replies = [client.get("/s/a.css") for _ in range(5)]
        head = client.head("/s/a.css")
        part = client.get("/s/a.css", headers={"range": "bytes=2-4"})
        parts = client.get("/s/a.css", headers={"range": "bytes=0-0,2-2"})
        not_modified = client.get("/s/a.css", headers={"if-none-match": replies[0].headers["etag"]})
    assert {r.content for r in replies} == {b"a{color:red}\n"}
    assert len({r.headers["etag"] for r in replies}) == 1
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "13"
    assert part.status_code == 206 and part.content == b"col" and part.headers["content-range"] == "bytes 2-4/13"
    assert parts.status_code == 206 and b"\r\n\r\na\r\n" in parts.content and b"\r\n\r\nc\r\n" in parts.content
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert opened == [str(www / "a.css")]  # once, to fill the cache


def test_a_file_just_written_is_not_kept(srv: Running, www: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = opens_of(monkeypatch, www)
    (www / "new.css").write_bytes(b"b{}\n")
    with httpx.Client(base_url=srv.url) as client:
        assert [client.get("/s/new.css").content for _ in range(3)] == [b"b{}\n"] * 3
    assert len(opened) == 3


def test_a_file_is_kept_once_it_has_settled(srv: Running, www: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = opens_of(monkeypatch, www)
    (www / "new.css").write_bytes(b"b{}\n")
    with httpx.Client(base_url=srv.url) as client:
        assert client.get("/s/new.css").content == b"b{}\n"  # just written: read, its fields kept
        real = time.time_ns
        monkeypatch.setattr(time, "time_ns", lambda: real() + LATER)
        assert [client.get("/s/new.css").content for _ in range(3)] == [b"b{}\n"] * 3
    assert len(opened) == 2  # the first request, then the one that kept its bytes


def test_every_change_is_seen_by_the_next_request(srv: Running, www: Path, later: None) -> None:
    path = www / "a.css"
    with httpx.Client(base_url=srv.url) as client:
        first = client.get("/s/a.css")
        assert client.get("/s/a.css").content == b"a{color:red}\n"  # from the cache
        time.sleep(0.02)  # past the file system's clock tick
        path.write_bytes(b"a{color:rgb}\n")  # in place, the same size
        second = client.get("/s/a.css")
        assert second.content == b"a{color:rgb}\n" and second.headers["etag"] != first.headers["etag"]
        (www / "next.css").write_bytes(b"a{color:new}\n")
        os.utime(www / "next.css", ns=(path.stat().st_mtime_ns,) * 2)
        os.replace(www / "next.css", path)  # a new inode, the same size and modification time
        third = client.get("/s/a.css")
        assert third.content == b"a{color:new}\n"
        path.write_bytes(b"longer than it was\n")
        assert client.get("/s/a.css").content == b"longer than it was\n"
        path.unlink()
        assert client.get("/s/a.css").status_code == 404
        path.write_bytes(b"back\n")
        assert client.get("/s/a.css").content == b"back\n"


def test_no_descriptor_is_left_open(srv: Running, www: Path, later: None) -> None:
    with httpx.Client(base_url=srv.url) as client:
        client.get("/s/a.css")
        client.get("/s/big.bin")
        before = len(os.listdir("/proc/self/fd"))
        for i in range(30):
            assert client.get("/s/a.css").status_code == 200
            assert len(client.get("/s/big.bin").content) == 64 * 1024
            client.get("/s/big.bin", headers={"range": "bytes=0-9,100-109"})
            if i % 10 == 0:
                (www / "a.css").write_bytes(b"a{color:%d}\n" % i)
            client.get("/s/missing.css")
        end = time.monotonic() + 5
        while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < end:
            time.sleep(0.05)
        assert len(os.listdir("/proc/self/fd")) <= before


def test_cached_answers_over_http2(srv: Running, www: Path, later: None, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = opens_of(monkeypatch, www)
    with httpx.Client(base_url=srv.url, http1=False, http2=True) as client:
        replies = [client.get("/s/a.css") for _ in range(3)]
        head = client.head("/s/a.css")
        part = client.get("/s/a.css", headers={"range": "bytes=-3"})
    assert all(r.http_version == "HTTP/2" and r.content == b"a{color:red}\n" for r in replies)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "13"
    assert part.status_code == 206 and part.content == b"d}\n"
    assert opened == [str(www / "a.css")]
