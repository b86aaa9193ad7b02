"""Content types from the extension, with a charset for text."""

from __future__ import annotations

import pytest

from bascule.static.content_types import content_type, with_charset


@pytest.mark.parametrize(("name", "expected"), [
    ("a.html", b"text/html; charset=utf-8"),
    ("A.CSS", b"text/css; charset=utf-8"),
    ("app.js", b"text/javascript; charset=utf-8"),
    ("m.mjs", b"text/javascript; charset=utf-8"),
    ("d.json", b"application/json; charset=utf-8"),
    ("i.svg", b"image/svg+xml; charset=utf-8"),
    ("p.png", b"image/png"),
    ("f.woff2", b"font/woff2"),
    ("w.wasm", b"application/wasm"),
    ("x.tar.gz", b"application/gzip"),
    ("noext", b"application/octet-stream"),
    ("weird.zzzz", b"application/octet-stream"),
    ("doc.rtf", b"application/rtf"),  # from Python's own table
])
def test_content_type(name: str, expected: bytes) -> None:
    assert content_type(name) == expected


def test_with_charset() -> None:
    assert with_charset("text/x-anything") == "text/x-anything; charset=utf-8"
    assert with_charset("image/jpeg") == "image/jpeg"


def test_content_type_is_memoised_per_extension() -> None:
    """Asked on every response: the second ask of an extension is a cache hit, with the same answer whatever
    the rest of the name is."""
    first = content_type("dir/one.css")
    assert content_type("other/TWO.CSS") is first
    assert content_type("x.zzzz") == content_type("y.zzzz") == b"application/octet-stream"
