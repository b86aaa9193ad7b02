"""A file's Content-Type from its extension: a fixed table for the web's common types, then Python's
built-in table (never the host's /etc/mime.types, so a response does not depend on the machine).

Text types get ``; charset=utf-8``: without it browsers guess (and old ones sniffed UTF-7). JavaScript is
``text/javascript`` (RFC 9239), as nginx and whitenoise now send it.
"""

from __future__ import annotations

import functools
import mimetypes
import os

DEFAULT_TYPE = b"application/octet-stream"

_TABLE: dict[str, str] = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".json": "application/json", ".map": "application/json",
    ".webmanifest": "application/manifest+json", ".txt": "text/plain", ".csv": "text/csv",
    ".xml": "application/xml", ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif",
    ".ico": "image/x-icon", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
    ".otf": "font/otf", ".wasm": "application/wasm", ".pdf": "application/pdf", ".mp4": "video/mp4",
    ".webm": "video/webm", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".zip": "application/zip",
    ".gz": "application/gzip", ".md": "text/markdown",
}
_CHARSET_TYPES = frozenset(("application/javascript", "application/json", "application/manifest+json",
                            "application/xml", "image/svg+xml"))
_BUILTIN = mimetypes.MimeTypes(filenames=())  # Python's own table only


def with_charset(media_type: str) -> str:
    """``media_type`` with ``; charset=utf-8`` where the body is text."""
    if media_type.startswith("text/") or media_type in _CHARSET_TYPES:
        return media_type + "; charset=utf-8"
    return media_type


def content_type(path: str) -> bytes:
    """The Content-Type value for the file at ``path`` (only its name is looked at)."""
    return _for_extension(os.path.splitext(path)[1].lower())


@functools.lru_cache(maxsize=512)
def _for_extension(ext: str) -> bytes:
    """Memoised per extension: asked on every static response, and mimetypes' lookup measured ~6% of a 4 KiB
    file's CPU (benchmarks/static.py); a bounded cache, since request paths choose the extension."""
    media_type = _TABLE.get(ext)
    if media_type is None:
        guessed, encoding = _BUILTIN.guess_type("x" + ext, strict=False)
        if guessed is None or encoding is not None:
            return DEFAULT_TYPE
        media_type = guessed
    return with_charset(media_type).encode("ascii")
