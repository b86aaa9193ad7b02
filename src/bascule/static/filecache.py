"""What a static file's responses need, kept between requests: its identity, its response fields, and for
a small file its bytes.

Why: a 4 KiB file answered from scratch cost an ``open``, an ``fstat``, a read and a ``close`` per request,
and Python formatted the same ETag, Last-Modified and field list each time (about a fifth of the CPU in a
py-spy profile of benchmarks/static.py). With this cache a small file costs one ``stat`` of its path and
one write; a large one still has its ``open`` and ``fstat`` (for ``sendfile``), and reuses the fields.

When it is right to use an entry (the bound docs/static.md states):

- Every request checks the file first: a small file by a ``stat`` of its path, a large one by the ``fstat``
  of the descriptor it is sent from. The entry is used only if the file's identity is unchanged: inode,
  device, size, modification and change times (nanoseconds). Writing the file, replacing it (a new inode,
  as ``collectstatic`` and editors do) or touching it changes one of them, and the next request reads it
  afresh. No time-to-live: a change is seen by the first request after it.
- A file changed less than :data:`SETTLE_NS` ago is not kept ("racy" files, as git calls them): a file
  system stamps times with a coarse clock, so two writes of the same size within one tick leave the same
  identity, and bytes read between them would be kept for good. A file that has been still for two
  seconds can only change with a later time stamp. (A wall clock set back by more than that defeats it.)
- Bounded: at most :data:`MAX_ENTRIES` files and :data:`MAX_BYTES` bytes of content; past either, the
  oldest entries go. No file descriptor is kept: nothing to leak, nothing to close when a file changes.
"""

from __future__ import annotations

import os
import time
from typing import Final

from bascule.protocols.exchange import Headers

SETTLE_NS: Final = 2_000_000_000
MAX_ENTRIES: Final = 4096
MAX_BYTES: Final = 8 * 1024 * 1024


class CachedFile:
    """One representation of one file (the file itself, or a precompressed sibling) as last seen.

    ``full`` is the field list of a plain 200 (never mutated: shared by every response that sends it);
    ``data`` the file's bytes when they are kept (a small file that has settled), else None."""

    __slots__ = ("coding", "content_type", "ctime_ns", "data", "dev", "etag", "full", "ino", "last_modified",
                 "mtime", "mtime_ns", "path", "size", "validators", "vary")

    def __init__(self, path: str, info: os.stat_result, coding: str | None, vary: bool, etag: bytes,
                 last_modified: bytes, content_type: bytes, cache_control: bytes) -> None:
        self.path = path
        self.ino = info.st_ino
        self.dev = info.st_dev
        self.size = info.st_size
        self.mtime_ns = info.st_mtime_ns
        self.ctime_ns = info.st_ctime_ns
        self.coding = coding
        self.vary = vary
        self.etag = etag
        self.mtime = info.st_mtime_ns // 1_000_000_000
        self.last_modified = last_modified
        self.content_type = content_type
        validators: Headers = [(b"etag", etag), (b"last-modified", last_modified), (b"cache-control", cache_control)]
        if vary:  # the answer depends on Accept-Encoding: caches must know (RFC 9110 12.5.5)
            validators.append((b"vary", b"Accept-Encoding"))
        self.validators = validators
        full: Headers = [(b"content-type", content_type), *validators, (b"accept-ranges", b"bytes")]
        if coding is not None:
            full.append((b"content-encoding", coding.encode("ascii")))
        full.append((b"content-length", b"%d" % self.size))
        self.full = full
        self.data: bytes | None = None

    def same(self, info: os.stat_result) -> bool:
        """Whether ``info`` (a stat of the path or of an open descriptor) is still the file this entry saw."""
        return (info.st_mtime_ns == self.mtime_ns and info.st_ctime_ns == self.ctime_ns
                and info.st_size == self.size and info.st_ino == self.ino and info.st_dev == self.dev)


def settled(info: os.stat_result) -> bool:
    """Whether the file has not changed for SETTLE_NS, so that its identity tells any later write apart.

    The change time, not the modification time: every write, rename or utime sets it to the clock's now,
    while a modification time can be anything a tool set (``rsync -t`` from a host whose clock runs ahead
    would leave a file never cached)."""
    return time.time_ns() - info.st_ctime_ns >= SETTLE_NS


class FileCache:
    """Entries by the path served (a realpath: the file or its sibling), oldest first."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: dict[str, CachedFile] = {}
        self.bytes = 0

    def get(self, path: str) -> CachedFile | None:
        return self.entries.get(path)

    def fresh(self, path: str, coding: str | None, vary: bool) -> CachedFile | None:
        """The entry for ``path`` sent in ``coding`` (a sibling can also be asked for by its own name, as
        itself) with its bytes, if a ``stat`` of the path shows the same file now; an entry the file no
        longer matches is dropped. ``vary``: whether the file has siblings now (the fields say so)."""
        entry = self.entries.get(path)
        if entry is None or entry.data is None or entry.coding != coding or entry.vary != vary:
            return None
        try:
            info = os.stat(path, follow_symlinks=False)
        except (OSError, ValueError):
            self.drop(path)
            return None
        if entry.same(info):
            return entry
        self.drop(path)
        return None

    def put(self, entry: CachedFile) -> None:
        """Keep ``entry`` (replacing the path's previous one), then trim the oldest past the bounds."""
        self.drop(entry.path)
        data = entry.data
        if data is not None and len(data) > self.max_bytes:
            entry.data = data = None
        self.entries[entry.path] = entry
        if data is not None:
            self.bytes += len(data)
        entries = self.entries
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            self.drop(next(iter(entries)))

    def fill(self, entry: CachedFile, data: bytes) -> None:
        """Give ``entry`` its file's bytes (read after the entry was made: a file that settled since, or a
        fresh entry); counted against the budget if ``entry`` is still the one kept for its path."""
        if entry.data is not None:
            return
        entry.data = data
        if self.entries.get(entry.path) is not entry:
            return  # replaced meanwhile: the bytes serve this request only
        if len(data) > self.max_bytes:
            del self.entries[entry.path]
            return
        self.bytes += len(data)
        entries = self.entries
        while self.bytes > self.max_bytes:
            self.drop(next(iter(entries)))

    def drop(self, path: str) -> None:
        entry = self.entries.pop(path, None)
        if entry is not None and entry.data is not None:
            self.bytes -= len(entry.data)
