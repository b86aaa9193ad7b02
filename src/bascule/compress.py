"""Response compression (``--compress``): whether a response is compressed, and the streaming encoders.

One decision for every gateway: :meth:`Compression.start` sees the response head and its first body bytes
(the gateways hold the head back until then) and returns the head to send, the first bytes to send and the
encoder for the rest (None: the response goes out as the app wrote it). The gateways only call it when
the option is on, so an app pays nothing per request without it (docs/compression.md).

A response is left alone when the client did not ask for a coding we have (Accept-Encoding, q-values and
``*``; no Accept-Encoding field means no compression, as every browser sends one), when it has no content
to compress (1xx, 204, 304), when it is already encoded (Content-Encoding), partial (206 or Content-Range),
marked ``Cache-Control: no-transform``, of a type outside the list, or smaller than the minimum size (its
declared Content-Length, or its whole body when the first message ends it). A compressed response loses
its Content-Length (the wire then streams it: chunked on HTTP/1.1, DATA frames on HTTP/2, unless the whole
body is in one message, when the exchange counts the compressed bytes), gains ``Content-Encoding`` and has
a strong ETag weakened (the bytes differ, the meaning does not). ``Vary: Accept-Encoding`` goes on every
response of a compressible type and status, compressed or not, so a cache keeps the variants apart.
A HEAD is answered like its GET: same fields, its body compressed when the GET's would be (so a length the
exchange derives from it is the GET's).

Each body message of a streamed response is compressed and flushed (gzip: Z_SYNC_FLUSH), so server-sent
events and other streamed pieces reach the client when the app sends them; the last one finishes the stream.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from bascule.static.encodings import accepted_codings

Headers = list[tuple[bytes, bytes]]



def _optional(module: str) -> Any:
    """An extra's module, or None when it is not installed (typed Any: its stubs may be absent too)."""
    try:
        return importlib.import_module(module)
    except ImportError:  # pragma: no cover - depends on the install
        return None


_brotli = _optional("brotli")  # the brotli extra (Google's binding)
_zstd = _optional("zstandard")  # the zstd extra

DEFAULT_TYPES: tuple[str, ...] = (
    "text/*", "application/json", "application/javascript", "application/xml", "application/xhtml+xml",
    "application/ld+json", "application/manifest+json", "application/rss+xml", "application/atom+xml",
    "application/wasm", "image/svg+xml",
)
"""Types worth compressing: text and structured text. Images (other than SVG), audio, video, archives and
fonts in WOFF2 are compressed already; compressing them again spends CPU for nothing."""

DEFAULT_MIN_SIZE = 512
"""Below this many bytes, compression hardly pays: gzip's header and trailer alone are 18 bytes, a small
body shrinks by a few dozen, and the whole response fits in one TCP segment (MSS ~1460) either way."""

CACHE_SIZE = 256
"""Distinct Content-Type and Accept-Encoding values a policy remembers its decision for."""

LEVELS = {"gzip": 6, "br": 4, "zstd": 3}
"""On-the-fly levels: zlib's own default; brotli 4 and zstd 3 compress as well as gzip 6 or better, faster
(the high brotli levels are for precompressed files, not for every response)."""


class Encoder:
    """A streaming encoder for one response: :meth:`chunk` for each body message, in order."""

    coding = ""

    def chunk(self, data: bytes, end: bool) -> bytes:
        """The encoded bytes for ``data``: flushed so the client can decode all of it now; the stream's end
        when ``end``."""
        raise NotImplementedError


class GzipEncoder(Encoder):
    coding = "gzip"

    def __init__(self, level: int = LEVELS["gzip"]) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 16+15: a gzip wrapper

    def chunk(self, data: bytes, end: bool) -> bytes:
        z = self._z
        if end:
            return z.compress(data) + z.flush(zlib.Z_FINISH)
        if not data:
            return b""
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


class BrotliEncoder(Encoder):
    coding = "br"

    def __init__(self, level: int = LEVELS["br"]) -> None:
        assert _brotli is not None
        self._c = _brotli.Compressor(quality=level)

    def chunk(self, data: bytes, end: bool) -> bytes:
        c = self._c
        if end:
            out: bytes = c.process(data) + c.finish()
            return out
        if not data:
            return b""
        out = c.process(data) + c.flush()
        return out


class ZstdEncoder(Encoder):
    coding = "zstd"

    def __init__(self, level: int = LEVELS["zstd"]) -> None:
        assert _zstd is not None
        self._c = _zstd.ZstdCompressor(level=level).compressobj()

    def chunk(self, data: bytes, end: bool) -> bytes:
        c = self._c
        if end:
            out: bytes = c.compress(data) + c.flush()
            return out
        if not data:
            return b""
        out = c.compress(data) + c.flush(_zstd.COMPRESSOBJ_FLUSH_BLOCK)
        return out


def available() -> dict[str, Callable[[], Encoder]]:
    """The codings this install can produce, by Accept-Encoding token (gzip always; br and zstd with their
    extras)."""
    found: dict[str, Callable[[], Encoder]] = {}
    if _zstd is not None:
        found["zstd"] = ZstdEncoder
    if _brotli is not None:
        found["br"] = BrotliEncoder
    found["gzip"] = GzipEncoder
    return found


PREFERENCE = ("br", "zstd", "gzip")
"""The order among codings the client accepts with the same q-value (browsers send ``gzip, deflate, br,
zstd``, all at q=1): the static files' order (static/encodings.py), so a page and its assets agree; at
the levels used here brotli and zstd both beat gzip's ratio, at gzip's speed or better."""


def choose(accept: dict[str, float], codings: Sequence[str]) -> str | None:
    """The coding to use among ``codings`` (in preference order), or None: each one's q is its own entry's,
    else ``*``'s; q=0 refuses it; the highest q wins, ties going to the earlier coding."""
    star = accept.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in codings:
        q = accept.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best


def type_matches(content_type: bytes, types: Sequence[str]) -> bool:
    """Whether a Content-Type (parameters ignored) is in ``types`` (exact, or ``major/*``)."""
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    major = media.split("/", 1)[0]
    return any(t == media or (t.endswith("/*") and t[:-2] == major) for t in types)


class Compression:
    """The --compress policy of a server: which codings, types and minimum size; shared by all requests."""

    def __init__(self, min_size: int = DEFAULT_MIN_SIZE, types: Sequence[str] = DEFAULT_TYPES,
                 codings: dict[str, Callable[[], Encoder]] | None = None) -> None:
        self.min_size = min_size
        self.types = tuple(t.lower() for t in types)
        self.codings = available() if codings is None else codings
        self.order = [c for c in PREFERENCE if c in self.codings]
        # Decisions by field value: a server sees few distinct Content-Types and Accept-Encodings (browsers
        # send fixed strings), so each is parsed once. Bounded: cleared when full, as http1x's header blocks.
        self._type_ok: dict[bytes, bool] = {}
        self._coding_for: dict[bytes, str | None] = {}

    def matches(self, content_type: bytes) -> bool:
        """type_matches for this policy's list, remembered per Content-Type value."""
        ok = self._type_ok.get(content_type)
        if ok is None:
            ok = type_matches(content_type, self.types)
            if len(self._type_ok) >= CACHE_SIZE:
                self._type_ok.clear()
            self._type_ok[content_type] = ok
        return ok

    def coding(self, accept_encoding: bytes) -> str | None:
        """The coding for an Accept-Encoding value (several fields joined), remembered per value."""
        try:
            return self._coding_for[accept_encoding]
        except KeyError:
            coding = choose(accepted_codings(accept_encoding), self.order)
            if len(self._coding_for) >= CACHE_SIZE:
                self._coding_for.clear()
            self._coding_for[accept_encoding] = coding
            return coding

    def start(self, request_headers: Sequence[tuple[bytes, bytes]], status: int, headers: Headers,
              body: bytes, end: bool) -> tuple[Headers, bytes, Encoder | None]:
        """Decide for one response: (head to send, first body bytes to send, encoder for the later body
        messages or None)."""
        if status < 200 or status in (204, 206, 304):
            return headers, body, None
        content_type = None
        length = None
        vary_done = False
        for raw_name, value in headers:
            name = raw_name.lower()  # ASGI apps may send any case
            if name == b"content-encoding" or name == b"content-range":
                return headers, body, None
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"cache-control" and b"no-transform" in value.lower():
                return headers, body, None
            elif name == b"vary":
                low = value.lower()
                vary_done = vary_done or b"accept-encoding" in low or value.strip() == b"*"
        if content_type is None or not self.matches(content_type):
            return headers, body, None
        if not vary_done:
            headers = [*headers, (b"vary", b"Accept-Encoding")]
        if length is not None:
            if not length.strip().isdigit() or int(length) < self.min_size:
                return headers, body, None
        elif end and len(body) < self.min_size:
            return headers, body, None
        accept = [value for name, value in request_headers if name == b"accept-encoding"]
        if not accept:
            return headers, body, None
        coding = self.coding(accept[0] if len(accept) == 1 else b", ".join(accept))
        if coding is None:
            return headers, body, None
        encoder = self.codings[coding]()
        out: Headers = []
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                continue
            if low == b"etag" and value.startswith(b'"'):
                value = b"W/" + value
            out.append((name, value))
        out.append((b"content-encoding", coding.encode("ascii")))
        if end and not body:  # a HEAD answered with its GET's fields only: no length to claim, nothing to encode
            return out, b"", None
        return out, encoder.chunk(body, end), (None if end else encoder)


def from_options(min_size: int, types: str) -> Compression:
    """The policy for --compress-min-size and --compress-types (a comma-separated list; empty: the default)."""
    listed = [t.strip() for t in types.split(",") if t.strip()] if types else list(DEFAULT_TYPES)
    return Compression(min_size=min_size, types=listed)


def decoders() -> dict[str, Callable[[bytes], bytes]]:
    """Whole-body decoders for the available codings (tests and tools)."""
    found: dict[str, Callable[[bytes], bytes]] = {"gzip": lambda b: zlib.decompress(b, 47)}
    if _brotli is not None:
        found["br"] = _brotli.decompress
    if _zstd is not None:
        def unzstd(data: bytes) -> bytes:
            assert _zstd is not None
            out: Any = _zstd.ZstdDecompressor().decompressobj().decompress(data)
            return bytes(out)
        found["zstd"] = unzstd
    return found
