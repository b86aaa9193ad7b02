"""From a request path to a file under a static directory, refusing whatever could leave it.

The rules (docs/static.md), each a 404 rather than an error: the path is percent-decoded exactly once
(``%252e`` stays the literal name ``%2e``) and must be valid UTF-8 (so overlong forms such as ``%c0%ae``
never become a dot); NUL and backslash are refused; every segment starting with ``.`` is refused, which
covers ``..``, ``.`` and dotfiles (``.git``, ``.env``); the file found is resolved with realpath and must lie
under the directory's own realpath, so a symlink may point elsewhere inside the directory but never out of
it (unless ``--static-follow-symlinks``, below), and a symlink to a dotfile is refused like the dotfile.
Only regular files are served. A directory is served through its ``index.html`` when the path ends with
``/``, and redirected to the ``/`` form otherwise.
A file's precompressed siblings (``.br``, ``.zst``, ``.gz``) are found under the same rules.

With ``--static-follow-symlinks`` a symlink inside the directory may lead out of it, to a file or a
directory anywhere (Django's ``collectstatic --link`` fills STATIC_ROOT with such links); the request path
itself is checked as before, so only links someone placed in the directory lead out, and a link to a
dotfile is still refused.

Resolutions are cached for a second (:class:`Resolver`), bounded in size: realpath costs an lstat per path
component. The file itself is checked on every request (filecache.py), so its size and validators are
always current; a file replaced within the second is still found (by the same name), one removed gives 404.
"""

from __future__ import annotations

import os
import stat
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from bascule.static.encodings import SIBLINGS

FILE: Final = "file"
REDIRECT: Final = "redirect"
MISSING: Final = "missing"
CACHE_SECONDS: Final = 1.0
CACHE_ENTRIES: Final = 4096


class Found(NamedTuple):
    """What a path names: a FILE at ``path`` (a realpath), a directory to REDIRECT to its ``/`` form, or
    MISSING (404). A FILE's ``siblings`` are its precompressed versions, (coding, realpath) (encodings.py)."""

    kind: str
    path: str = ""
    siblings: tuple[tuple[str, str], ...] = ()


NOT_FOUND: Final = Found(MISSING)


def decode_request_path(raw_path: bytes) -> str | None:
    """The request path percent-decoded once as strict UTF-8, or None for what no file name may hold: invalid
    UTF-8 (overlong encodings included), NUL, backslash."""
    if 37 in raw_path:  # "%"
        raw_path = unquote_to_bytes(raw_path)
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in path or "\\" in path:
        return None
    return path


def split_segments(rel: str) -> tuple[tuple[str, ...], bool] | None:
    """The path below the mount (``/css/a.css``, or ``""`` for the mount itself) as its non-empty segments
    and whether it ends with ``/``; None if a segment starts with a dot or the path is not absolute."""
    if rel and not rel.startswith("/"):
        return None
    segments = tuple(segment for segment in rel.split("/") if segment)
    for segment in segments:
        if segment.startswith("."):
            return None
    return segments, rel.endswith("/")


class Resolver:
    """Finds files under one directory (given as its realpath), with a short-lived cache of answers."""

    def __init__(self, root: str, index: str = "index.html", *, follow_symlinks: bool = False) -> None:
        self.root = root
        self.root_prefix = root.rstrip(os.sep) + os.sep
        self.index = index
        self.follow_symlinks = follow_symlinks
        """--static-follow-symlinks: a symlink inside the directory may lead out of it."""
        self._cache: dict[tuple[tuple[str, ...], bool], tuple[float, Found]] = {}

    def find(self, segments: tuple[str, ...], trailing: bool, now: float) -> Found:
        """What ``segments`` name under the directory, from the cache when it is younger than a second."""
        key = (segments, trailing)
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        found = self.locate(segments, trailing)
        cache = self._cache
        if len(cache) >= CACHE_ENTRIES:
            cache.clear()
        cache[key] = (now, found)
        return found

    def locate(self, segments: tuple[str, ...], trailing: bool) -> Found:
        """What ``segments`` name under the directory, looked up now (no cache)."""
        real = self._contained(os.path.join(self.root, *segments))
        if real is None:
            return NOT_FOUND
        try:
            mode = os.stat(real).st_mode
        except (OSError, ValueError):
            return NOT_FOUND
        if stat.S_ISDIR(mode):
            if not trailing:
                return Found(REDIRECT)
            index = self._contained(os.path.join(real, self.index))
            if index is None:
                return NOT_FOUND
            try:
                mode = os.stat(index).st_mode
            except (OSError, ValueError):
                return NOT_FOUND
            return self._file(index) if stat.S_ISREG(mode) else NOT_FOUND
        if stat.S_ISREG(mode) and not trailing:
            return self._file(real)
        return NOT_FOUND

    def _file(self, real: str) -> Found:
        """A FILE, with the precompressed siblings found next to it (regular files, inside the directory)."""
        siblings: list[tuple[str, str]] = []
        for coding, suffix in SIBLINGS:
            sibling = self._contained(real + suffix)
            if sibling is None:
                continue
            try:
                if stat.S_ISREG(os.stat(sibling).st_mode):
                    siblings.append((coding, sibling))
            except (OSError, ValueError):
                continue
        return Found(FILE, real, tuple(siblings))

    def _contained(self, path: str) -> str | None:
        """``path``'s realpath if it lies under the directory and no part below it starts with a dot."""
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            return None
        if real == self.root:
            return real
        if not real.startswith(self.root_prefix):
            # Out of the directory. ``path`` itself is under it (its segments hold no dot segment), so only a
            # symlink inside leads here: allowed with follow_symlinks, unless it names a dotfile. The rest of
            # the target may hold dot directories (a link into a .venv's site-packages is collectstatic --link).
            if self.follow_symlinks and not os.path.basename(real).startswith("."):
                return real
            return None
        if (os.sep + ".") in real[len(self.root_prefix) - 1:]:
            return None
        return real
