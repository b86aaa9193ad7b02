"""Accept-Encoding negotiation for precompressed siblings (the pure part, bascule.static.encodings)."""

from __future__ import annotations

import pytest

from bascule.static.encodings import accepted_codings, choose_coding

ALL = ("br", "zstd", "gzip")


def test_accepted_codings() -> None:
    assert accepted_codings(b"gzip, br;q=0.5, X-GZIP ;Q=0.1, *;q=0") == {"gzip": 0.1, "br": 0.5, "*": 0.0}
    assert accepted_codings(b"br;q=abc, gzip;q=2, zstd;q=nan") == {"br": 0.0, "gzip": 0.0, "zstd": 0.0}
    assert accepted_codings(b"") == {}


@pytest.mark.parametrize(("header", "available", "expected"), [
    (None, ALL, None),
    (b"", ALL, None),
    (b"identity", ALL, None),
    (b"gzip, deflate, br, zstd", ALL, "br"),  # a tie: the server's order
    (b"gzip, deflate, br, zstd", ("zstd", "gzip"), "zstd"),
    (b"gzip", ALL, "gzip"),
    (b"br;q=0.5, gzip", ALL, "gzip"),  # the client's q first
    (b"br;q=0, gzip;q=0", ALL, None),
    (b"*", ALL, "br"),
    (b"*;q=0.5, gzip", ALL, "gzip"),
    (b"*, br;q=0", ("br", "gzip"), "gzip"),
    (b"br", ("gzip",), None),
    (b"gzip", (), None),
])
def test_choose_coding(header: bytes | None, available: tuple[str, ...], expected: str | None) -> None:
    assert choose_coding(header, available) == expected
