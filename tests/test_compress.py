"""--compress's decision (Compression.start, a pure function of the request's and the response's fields) and
its streaming encoders, decoded by the codings' own decompressors."""

from __future__ import annotations

import importlib.util
import zlib
from typing import Any

import pytest

from bascule.compress import (
    DEFAULT_TYPES,
    Compression,
    GzipEncoder,
    available,
    choose,
    decoders,
    from_options,
    type_matches,
)
from bascule.config import Config
from bascule.errors import ConfigError
from bascule.static.encodings import accepted_codings

HAS_BR = importlib.util.find_spec("brotli") is not None
HAS_ZSTD = importlib.util.find_spec("zstandard") is not None
BIG = b"<p>hello compressed world</p>\n" * 100  # 3,000 bytes of HTML
HTML = (b"content-type", b"text/html; charset=utf-8")
GZIP_ONLY = Compression(codings={"gzip": GzipEncoder})


def start(accept: str | None, headers: list[tuple[bytes, bytes]], *, status: int = 200, body: bytes = BIG,
          end: bool = True, policy: Compression = GZIP_ONLY) -> tuple[dict[bytes, list[bytes]], bytes, Any]:
    request = [] if accept is None else [(b"accept-encoding", accept.encode())]
    out, first, encoder = policy.start(request, status, headers, body, end)
    fields: dict[bytes, list[bytes]] = {}
    for name, value in out:
        fields.setdefault(name.lower(), []).append(value)
    return fields, first, encoder


@pytest.mark.parametrize(("accept", "coding"), [
    ("gzip", "gzip"),
    ("gzip, deflate, br, zstd", "br"),  # browsers: all at q=1, the server's order decides
    ("gzip;q=1, br;q=0.5", "gzip"),
    ("br;q=0, *", "zstd"),
    ("*;q=0.1", "br"),
    ("identity", None),
    ("gzip;q=0", None),
    ("*;q=0", None),
    ("gzip;q=abc", None),  # a malformed q refuses rather than accepts
    ("GZIP", "gzip"),
    ("x-gzip", "gzip"),
    ("", None),
])
def test_choose_follows_q_values_and_the_server_order(accept: str, coding: str | None) -> None:
    assert choose(accepted_codings(accept.encode()), ["br", "zstd", "gzip"]) == coding


CASES: list[tuple[str, str | None, list[tuple[bytes, bytes]], int, bool, bool]] = [
    # (case, Accept-Encoding, response fields, status, compressed?, Vary added?)
    ("html", "gzip", [HTML], 200, True, True),
    ("json", "gzip", [(b"content-type", b"application/json")], 200, True, True),
    ("svg", "gzip", [(b"content-type", b"image/svg+xml")], 200, True, True),
    ("mixed-case name", "gzip", [(b"Content-Type", b"Text/HTML")], 200, True, True),
    ("png", "gzip", [(b"content-type", b"image/png")], 200, False, False),
    ("no type", "gzip", [], 200, False, False),
    ("no accept-encoding", None, [HTML], 200, False, True),
    ("identity only", "identity", [HTML], 200, False, True),
    ("gzip refused", "gzip;q=0, identity", [HTML], 200, False, True),
    ("already encoded", "gzip", [HTML, (b"content-encoding", b"br")], 200, False, False),
    ("no-transform", "gzip", [HTML, (b"cache-control", b"public, No-Transform")], 200, False, False),
    ("range", "gzip", [HTML, (b"content-range", b"bytes 0-9/3000")], 206, False, False),
    ("content-range on 200", "gzip", [HTML, (b"content-range", b"bytes 0-9/3000")], 200, False, False),
    ("204", "gzip", [HTML], 204, False, False),
    ("304", "gzip", [HTML], 304, False, False),
    ("small declared", "gzip", [HTML, (b"content-length", b"100")], 200, False, True),
    ("bad declared", "gzip", [HTML, (b"content-length", b"x")], 200, False, True),
    ("404 page", "gzip", [HTML], 404, True, True),
]


@pytest.mark.parametrize(("case", "accept", "headers", "status", "compressed", "vary"), CASES,
                         ids=[c[0] for c in CASES])
def test_the_decision_table(case: str, accept: str | None, headers: list[tuple[bytes, bytes]], status: int,
                            compressed: bool, vary: bool) -> None:
    fields, first, encoder = start(accept, headers, status=status)
    assert (b"content-encoding" in fields and fields[b"content-encoding"] == [b"gzip"]) == compressed
    assert (fields.get(b"vary") == [b"Accept-Encoding"]) == vary
    assert encoder is None  # the body was whole in one message
    if compressed:
        assert zlib.decompress(first, 47) == BIG
    else:
        assert first == BIG


def test_a_whole_body_below_the_minimum_is_left_alone_but_a_stream_is_compressed() -> None:
    fields, first, encoder = start("gzip", [HTML], body=b"<p>short</p>")
    assert first == b"<p>short</p>" and b"content-encoding" not in fields and fields[b"vary"] == [b"Accept-Encoding"]
    fields, first, encoder = start("gzip", [HTML], body=b"<p>short</p>", end=False)
    assert fields[b"content-encoding"] == [b"gzip"] and encoder is not None
    rest = encoder.chunk(b"<p>more</p>", True)
    assert zlib.decompress(first + rest, 47) == b"<p>short</p><p>more</p>"


def test_compressing_drops_the_length_weakens_a_strong_etag_and_keeps_a_vary() -> None:
    fields, _, _ = start("gzip", [HTML, (b"content-length", b"3000"), (b"etag", b'"abc"'),
                                  (b"vary", b"Cookie")])
    assert b"content-length" not in fields
    assert fields[b"etag"] == [b'W/"abc"']
    assert fields[b"vary"] == [b"Cookie", b"Accept-Encoding"]
    fields, _, _ = start("gzip", [HTML, (b"etag", b'W/"abc"'), (b"vary", b"accept-encoding, cookie")])
    assert fields[b"etag"] == [b'W/"abc"'] and fields[b"vary"] == [b"accept-encoding, cookie"]
    fields, _, _ = start("gzip", [HTML, (b"vary", b"*")])
    assert fields[b"vary"] == [b"*"]


def test_an_uncompressed_response_keeps_its_etag_and_length() -> None:
    fields, _, _ = start("identity", [HTML, (b"content-length", b"3000"), (b"etag", b'"abc"')])
    assert fields[b"content-length"] == [b"3000"] and fields[b"etag"] == [b'"abc"']


def test_types_match_exactly_or_by_wildcard() -> None:
    assert type_matches(b"text/event-stream", DEFAULT_TYPES)
    assert type_matches(b"application/json; charset=utf-8", DEFAULT_TYPES)
    assert not type_matches(b"application/jsonx", DEFAULT_TYPES)
    assert not type_matches(b"image/png", DEFAULT_TYPES)
    assert not type_matches(b"texts/plain", ["text/*"])
    assert from_options(10, "image/png, text/csv").types == ("image/png", "text/csv")
    assert from_options(10, "").types == DEFAULT_TYPES


@pytest.mark.parametrize("coding", sorted(available()))
def test_each_encoder_streams_what_a_decoder_reads_piece_by_piece(coding: str) -> None:
    """Every flushed chunk decodes at once to everything sent so far (what server-sent events need), and
    the finished stream decodes whole."""
    encoder = available()[coding]()
    pieces = [b"data: %d %s\n\n" % (i, b"x" * i) for i in range(50)]
    if coding == "gzip":
        incremental: Any = zlib.decompressobj(47)
        feed = incremental.decompress
    elif coding == "br":
        import brotli  # type: ignore[import-not-found,unused-ignore]
        feed = brotli.Decompressor().process
    else:
        import zstandard  # type: ignore[import-not-found,unused-ignore]
        feed = zstandard.ZstdDecompressor().decompressobj().decompress
    wire = b""
    for piece in pieces:
        out = encoder.chunk(piece, False)
        assert out
        wire += out
        assert feed(out) == piece
    wire += encoder.chunk(b"", True)
    assert decoders()[coding](wire) == b"".join(pieces)
    assert encoder.coding == coding


def test_an_empty_chunk_mid_stream_sends_nothing() -> None:
    encoder = GzipEncoder()
    assert encoder.chunk(b"", False) == b""
    assert zlib.decompress(encoder.chunk(b"", True), 47) == b""


@pytest.mark.skipif(not (HAS_BR and HAS_ZSTD), reason="the brotli and zstd extras are not installed")
def test_the_extras_are_offered_when_installed() -> None:
    assert list(available()) == ["zstd", "br", "gzip"]
    assert Compression().order == ["br", "zstd", "gzip"]
    fields, first, _ = start("zstd, br;q=0.9", [HTML], policy=Compression())
    assert fields[b"content-encoding"] == [b"zstd"] and decoders()["zstd"](first) == BIG


@pytest.mark.parametrize(("options", "message"), [
    ({"compress_min_size": -1}, "compress_min_size must be >= 0"),
    ({"compress_types": "text/html, nonsense"}, "compress_types must be media types"),
])
def test_bad_options_are_one_line_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Config(app="x:app", **options)
    assert "\n" not in str(info.value)


def test_options_default_off() -> None:
    config = Config(app="x:app")
    assert config.compress is False and config.compress_min_size == 512 and config.compress_types == ""
