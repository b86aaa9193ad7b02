"""One ``--static /PREFIX=DIR`` mount: answers an Exchange from the directory without entering an app.

The answer is worked out on the loop in the dispatch call itself; only sending the body may wait (on the
socket, on a read that misses the page cache), and then a Task carries it on (``start_eager``: the server's
own code, which asks nothing of the current task, pays for a Task only when it really waits). Such Tasks are
kept in ``tasks`` so a graceful stop waits for them and a forced one cancels them, and ``ex.cancel_app``
lets --timeout-request end one. The file descriptor is closed on every path: sent, client gone, cancelled,
failed.

Everything odd is a 404 with a small text body (a path that is not valid, a file that vanished or cannot be
read); only a bug in here is a 500, logged with its traceback in the error log, never in the response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import stat
from typing import Final, NamedTuple

from bascule.errors import ConfigError
from bascule.gateways.eager import start_eager
from bascule.protocols.exchange import Exchange, Headers
from bascule.protocols.sendfile import ChunkReader
from bascule.static.conditional import (
    NOT_MODIFIED,
    UNSATISFIABLE,
    http_date,
    if_range_holds,
    make_etag,
    parse_ranges,
    preconditions,
)
from bascule.static.content_types import content_type
from bascule.static.encodings import choose_coding
from bascule.static.filecache import CachedFile, FileCache, settled
from bascule.static.immutable import IMMUTABLE, ImmutablePolicy
from bascule.static.resolve import FILE, MISSING, REDIRECT, Found, Resolver, decode_request_path, split_segments

_log = logging.getLogger("bascule.error")
NOT_FOUND_BODY: Final = b"Not Found\n"
ALLOW: Final = (b"allow", b"GET, HEAD")
#: Bodies up to this size are read (from the page cache; a worker thread if the disk would be waited for) and
#: sent with the head in one write: cheaper than a second system call for sendfile. Larger ones go zero-copy.
INLINE_MAX: Final = 16 * 1024
_CONDITIONAL = frozenset((b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
                          b"range", b"if-range"))


def check_static_dir(prefix: str, directory: str) -> str:
    """The realpath of a --static directory; ConfigError (one line) if it is not a readable directory."""
    real = os.path.realpath(directory)
    if not os.path.isdir(real):
        raise ConfigError(f"static {prefix or '/'}={directory}: {directory!r} is not a directory")
    if not os.access(real, os.R_OK | os.X_OK):
        raise ConfigError(f"static {prefix or '/'}={directory}: {directory!r} cannot be read by this user")
    return real


def check_fallback(resolver: Resolver, prefix: str, directory: str, fallback: str) -> tuple[str, ...]:
    """--static-fallback's file as segments; ConfigError unless it is a file under every --static directory."""
    parts = split_segments("/" + fallback.strip("/"))
    if parts is None or not parts[0] or resolver.locate(parts[0], False).kind != FILE:
        raise ConfigError(f"static_fallback {fallback!r} is not a file under {directory!r} (static {prefix or '/'}): "
                          f"give a path relative to each --static directory, such as index.html")
    return parts[0]


def accept_encoding(headers: Headers) -> bytes | None:
    """The request's Accept-Encoding, several fields joined as one list (RFC 9110 5.3); None without one."""
    value: bytes | None = None
    for name, field in headers:
        if name == b"accept-encoding":
            value = field if value is None else value + b"," + field
    return value


def wants_html(headers: Headers) -> bool:
    """Whether the request is a page navigation (its Accept names text/html), not a script's or an image's."""
    return any(name == b"accept" and b"text/html" in value for name, value in headers)


class StaticMount:
    """Serves the files under ``directory`` at ``prefix`` (a decoded path prefix without a trailing slash)."""

    def __init__(self, prefix: str, directory: str, *, max_age: int, immutable: bool = True,
                 fallback: str | None = None, follow_symlinks: bool = False) -> None:
        self.prefix = prefix
        root = check_static_dir(prefix, directory)
        self.resolver = Resolver(root, follow_symlinks=follow_symlinks)
        self.fallback: tuple[str, ...] | None = None
        """--static-fallback's file as path segments: what a page navigation to a missing path gets."""
        if fallback is not None:
            self.fallback = check_fallback(self.resolver, prefix, directory, fallback)
        self.cache_control = b"public, max-age=%d" % max_age
        self.immutable = ImmutablePolicy(root) if immutable else None
        self.tasks: set[asyncio.Task[None]] = set()
        self.files = FileCache()

    def handle(self, ex: Exchange) -> None:
        """Answer one request (called on the loop; returns at once, a body still being sent in a Task)."""
        ex.static = True  # the metrics' bascule_static_responses_total
        method = ex.method
        if method != "GET" and method != "HEAD":
            ex.send_head(405, [ALLOW, (b"content-type", b"text/plain; charset=utf-8")],
                         b"Method Not Allowed\n", end=True)
            return
        path = decode_request_path(ex.raw_path)
        if path is None or not (path == self.prefix or path.startswith(self.prefix + "/")):
            self.not_found(ex)
            return
        parts = split_segments(path[len(self.prefix):])
        if parts is None:
            self.not_found(ex)
            return
        found = self.resolver.find(parts[0], parts[1], ex.loop.time())
        if found.kind == MISSING and self.fallback is not None and wants_html(ex.headers):
            found = self.resolver.find(self.fallback, False, ex.loop.time())
        if found.kind == REDIRECT:
            self.redirect(ex)
        elif found.kind == FILE:
            path = found.path
            coding: str | None = None
            if found.siblings:
                coding = choose_coding(accept_encoding(ex.headers), tuple(name for name, _ in found.siblings))
                if coding is not None:
                    path = next(sibling for name, sibling in found.siblings if name == coding)
            entry = self.files.fresh(path, coding, bool(found.siblings))
            if entry is not None:
                self.send_cached(ex, entry)
                return
            task = start_eager(ex.loop, self.serve_file(ex, found, path, coding))
            if task is not None:
                self.track(ex, task)
        else:
            self.not_found(ex)

    def track(self, ex: Exchange, task: asyncio.Task[None]) -> None:
        """A response still being sent: --timeout-request and a forced stop may cancel it, a graceful stop
        waits for it."""
        ex.cancel_app = task.cancel
        ex.app_task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send_cached(self, ex: Exchange, entry: CachedFile) -> None:
        """Answer from a cached small file's bytes and fields, on the loop: no descriptor, no Task unless the
        client is slow to read."""
        data = entry.data
        assert data is not None
        plain = True
        for name, _ in ex.headers:
            if name in _CONDITIONAL:
                plain = False
                break
        if plain:
            ex.send_head(200, entry.full, data if ex.method == "GET" else b"", end=True)
        else:
            answer = self.answer(ex, entry)
            if answer.parts and ex.method == "GET":
                if len(answer.parts) == 1:
                    _, first, count = answer.parts[0]
                    ex.send_head(answer.status, answer.headers, data[first:first + count], end=True)
                else:
                    body = [piece for head, first, count in answer.parts for piece in (head, data[first:first + count])]
                    body.append(answer.closing)
                    ex.send_head(answer.status, answer.headers, b"".join(body), end=True)
            else:
                ex.send_head(answer.status, answer.headers, b"", end=True)
        if ex.write_paused and not ex.disconnected:
            task = start_eager(ex.loop, ex.drain())
            if task is not None:
                self.track(ex, task)

    @staticmethod
    def not_found(ex: Exchange) -> None:
        ex.send_simple(404, NOT_FOUND_BODY)

    @staticmethod
    def redirect(ex: Exchange) -> None:
        """A directory asked for without its trailing slash: 301 to the same path with one, the query kept.

        The Location is relative to the request (``./name/``), so it stays right whatever prefix a proxy or
        --root-path put in front of the server; the ``./`` keeps a name with a colon from reading as a scheme.
        """
        raw = ex.raw_path
        last = raw[raw.rfind(b"/") + 1:]
        location = b"./" + last + b"/"
        if ex.query_string:
            location += b"?" + ex.query_string
        ex.send_head(301, [(b"location", location), (b"content-type", b"text/plain; charset=utf-8")],
                     b"Moved Permanently\n", end=True)

    async def serve_file(self, ex: Exchange, found: Found, path: str, coding: str | None) -> None:
        """Open, check and send the file at ``path`` (``found``'s, or the precompressed sibling in ``coding``
        the client takes); its descriptor is closed whatever happens. A small file that has settled is kept
        in ``files`` for the next requests."""
        fd = -1
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                info = os.fstat(fd)
            except OSError:  # vanished, replaced by a symlink, not readable: as if never there
                self.files.drop(path)
                self.not_found(ex)
                return
            if not stat.S_ISREG(info.st_mode):
                self.files.drop(path)
                self.not_found(ex)
                return
            entry = self.files.get(path)
            vary = bool(found.siblings)
            if entry is None or entry.coding != coding or entry.vary != vary or not entry.same(info):
                entry = self.entry(found, path, coding, info)
                self.files.put(entry)
            if entry.data is None and entry.size <= INLINE_MAX and settled(info):
                data = await ChunkReader(ex.loop, fd).read(0, entry.size)
                if ex.disconnected:
                    return
                if len(data) == entry.size:  # else the file shrank: the send_file path logs it and aborts
                    self.files.fill(entry, data)
            if entry.data is not None:
                self.send_cached(ex, entry)
                if ex.write_paused and not ex.disconnected:
                    await ex.drain()
                return
            answer = self.answer(ex, entry)
            if not answer.parts:
                ex.send_head(answer.status, answer.headers, b"", end=True)
                return
            if ex.method == "GET" and len(answer.parts) == 1 and answer.parts[0][2] <= INLINE_MAX:
                _, first, count = answer.parts[0]
                data = await ChunkReader(ex.loop, fd).read(first, count)
                if ex.disconnected:
                    return
                if len(data) == count:  # else the file shrank: the send_file path below logs it and aborts
                    ex.send_head(answer.status, answer.headers, data, end=True)
                    if ex.write_paused and not ex.disconnected:
                        await ex.drain()
                    return
            ex.send_head(answer.status, answer.headers, b"", end=False)
            for head, first, count in answer.parts:
                if ex.finished or ex.disconnected:
                    break
                if head:
                    ex.send_body(head)
                await ex.send_file(fd, first, count)
            if not ex.finished and not ex.disconnected:
                ex.send_body(answer.closing, end=True)
            if ex.write_paused and not ex.disconnected:
                await ex.drain()
        except asyncio.CancelledError:  # --timeout-request, or a forced stop
            if not ex.response_started:
                ex.send_simple(503, b"Service Unavailable\n")
            elif not ex.finished:
                ex.abort()
            raise
        except Exception:
            _log.exception("static file %s could not be served", path)
            if not ex.response_started:
                ex.send_simple(500, b"Internal Server Error\n")
            elif not ex.finished:
                ex.abort()
        finally:
            if fd >= 0:
                os.close(fd)

    def entry(self, found: Found, path: str, coding: str | None, info: os.stat_result) -> CachedFile:
        """The fields of ``path`` (``found``'s file sent as itself when ``coding`` is None, else its sibling)
        as ``info`` describes it, computed once for every request until the file changes."""
        immutable = self.immutable
        cache_control = IMMUTABLE if immutable is not None and immutable(found.path) else self.cache_control
        return CachedFile(path, info, coding, bool(found.siblings), make_etag(info.st_size, info.st_mtime_ns, coding),
                          http_date(info.st_mtime_ns // 1_000_000_000), content_type(found.path), cache_control)

    def answer(self, ex: Exchange, entry: CachedFile) -> Answer:
        """What to send for the representation ``entry`` describes, given the request's conditional and
        Range fields."""
        etag = entry.etag
        validators = entry.validators
        fields: dict[bytes, bytes] = {}
        for name, value in ex.headers:
            if name in _CONDITIONAL and name not in fields:
                fields[name] = value
        if not fields:
            return Answer(200, entry.full, ((b"", 0, entry.size),))
        verdict = preconditions(ex.method, etag, entry.mtime, fields.get(b"if-match"),
                                fields.get(b"if-unmodified-since"), fields.get(b"if-none-match"),
                                fields.get(b"if-modified-since"))
        if verdict == NOT_MODIFIED:
            return Answer(NOT_MODIFIED, validators)
        if verdict is not None:
            return Answer(verdict, [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"0")])
        size = entry.size
        wanted = fields.get(b"range")
        if wanted is not None and ex.method == "GET":
            if_range = fields.get(b"if-range")
            spans = parse_ranges(wanted, size) \
                if if_range is None or if_range_holds(if_range, etag, entry.last_modified) else None
            if spans == UNSATISFIABLE:
                return Answer(416, [(b"content-range", b"bytes */%d" % size), (b"content-length", b"0"), *validators])
            if type(spans) is list:
                headers = entry.full[:-1]  # without its content-length
                if len(spans) == 1:
                    first, last = spans[0]
                    headers.append((b"content-range", b"bytes %d-%d/%d" % (first, last, size)))
                    headers.append((b"content-length", b"%d" % (last - first + 1)))
                    return Answer(206, headers, ((b"", first, last - first + 1),))
                return byteranges(headers, entry.content_type, spans, size)
        return Answer(200, entry.full, ((b"", 0, size),))


class Answer(NamedTuple):
    """A response to send: ``parts`` are (bytes before, first byte, count) slices of the file, ``closing``
    the bytes after the last; no parts, no body at all (304, 412, 416)."""

    status: int
    headers: Headers
    parts: tuple[tuple[bytes, int, int], ...] = ()
    closing: bytes = b""


def byteranges(headers: Headers, media_type: bytes, spans: list[tuple[int, int]], size: int) -> Answer:
    """A 206 multipart/byteranges answer (RFC 9110 14.6) for several ranges, in the order asked. Every
    part's head is known up front, so the Content-Length is exact and the file parts still go by send_file."""
    boundary = secrets.token_hex(12).encode("ascii")
    parts: list[tuple[bytes, int, int]] = []
    length = 0
    for first, last in spans:
        head = (b"\r\n--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
                % (boundary, media_type, first, last, size))
        parts.append((head, first, last - first + 1))
        length += len(head) + last - first + 1
    closing = b"\r\n--%s--\r\n" % boundary
    length += len(closing)
    headers = [(name, value) for name, value in headers if name != b"content-type"]
    headers.append((b"content-type", b"multipart/byteranges; boundary=" + boundary))
    headers.append((b"content-length", b"%d" % length))
    return Answer(206, headers, tuple(parts), closing)
