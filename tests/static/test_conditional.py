"""The pure rules of bascule.static.conditional: validators, preconditions in RFC 9110's order, ranges."""

from __future__ import annotations

import pytest

from bascule.static.conditional import (
    MAX_RANGES,
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    UNSATISFIABLE,
    http_date,
    if_range_holds,
    make_etag,
    parse_etags,
    parse_http_date,
    parse_ranges,
    preconditions,
)

ETAG = make_etag(1234, 1_700_000_000_123_456_789)
MTIME = 1_700_000_000
DATE = http_date(MTIME)


def test_etag_is_strong_and_changes_with_size_and_time() -> None:
    assert ETAG.startswith(b'"') and ETAG.endswith(b'"')
    assert make_etag(1235, 1_700_000_000_123_456_789) != ETAG
    assert make_etag(1234, 1_700_000_000_123_456_790) != ETAG  # sub-second changes count
    assert make_etag(1234, 1_700_000_000_123_456_789) == ETAG


def test_http_date_round_trip() -> None:
    assert DATE == b"Tue, 14 Nov 2023 22:13:20 GMT"
    assert parse_http_date(DATE) == MTIME
    assert parse_http_date(b"Tuesday, 14-Nov-23 22:13:20 GMT") == MTIME  # obsolete RFC 850 form
    assert parse_http_date(b"Tue Nov 14 22:13:20 2023") is None or parse_http_date(b"Tue Nov 14 22:13:20 2023") == MTIME
    for junk in (b"", b"yesterday", b"Tue, 99 Nov 2023 22:13:20 GMT", b"\xff\xfe"):
        assert parse_http_date(junk) is None


def test_parse_etags() -> None:
    assert parse_etags(b'"a", W/"b" ,"c,d"') == [(False, b'"a"'), (True, b'"b"'), (False, b'"c,d"')]
    assert parse_etags(b"") == []
    assert parse_etags(b'"a" "b"') is None
    assert parse_etags(b"a") is None
    assert parse_etags(b'"a", junk') is None


def pre(method: str = "GET", *, im: bytes | None = None, ius: bytes | None = None, inm: bytes | None = None,
        ims: bytes | None = None) -> int | None:
    return preconditions(method, ETAG, MTIME, im, ius, inm, ims)


def test_if_none_match() -> None:
    assert pre(inm=ETAG) == NOT_MODIFIED
    assert pre("HEAD", inm=ETAG) == NOT_MODIFIED
    assert pre(inm=b"W/" + ETAG) == NOT_MODIFIED  # weak comparison
    assert pre(inm=b'"other", ' + ETAG) == NOT_MODIFIED
    assert pre(inm=b"*") == NOT_MODIFIED
    assert pre(inm=b'"other"') is None
    assert pre(inm=b"garbage") is None


def test_if_modified_since_only_without_if_none_match() -> None:
    assert pre(ims=DATE) == NOT_MODIFIED
    assert pre(ims=http_date(MTIME + 10)) == NOT_MODIFIED
    assert pre(ims=http_date(MTIME - 1)) is None
    assert pre(ims=b"not a date") is None
    assert pre(inm=b'"other"', ims=DATE) is None  # If-None-Match decides alone


def test_if_match_and_if_unmodified_since() -> None:
    assert pre(im=ETAG) is None
    assert pre(im=b"*") is None
    assert pre(im=b"W/" + ETAG) == PRECONDITION_FAILED  # strong comparison
    assert pre(im=b'"other"') == PRECONDITION_FAILED
    assert pre(ius=DATE) is None
    assert pre(ius=http_date(MTIME - 1)) == PRECONDITION_FAILED
    assert pre(im=ETAG, ius=http_date(MTIME - 1)) is None  # If-Match decides alone
    assert pre(im=b'"other"', inm=ETAG) == PRECONDITION_FAILED  # 412 before 304


@pytest.mark.parametrize(("value", "size", "expected"), [
    (b"bytes=0-0", 10, [(0, 0)]),
    (b"bytes=2-5", 10, [(2, 5)]),
    (b"bytes=2-", 10, [(2, 9)]),
    (b"bytes=5-100", 10, [(5, 9)]),
    (b"bytes=-3", 10, [(7, 9)]),
    (b"bytes=-30", 10, [(0, 9)]),
    (b"Bytes = 1-2", 10, [(1, 2)]),
    (b"bytes=10-", 10, UNSATISFIABLE),
    (b"bytes=10-20", 10, UNSATISFIABLE),
    (b"bytes=-0", 10, UNSATISFIABLE),
    (b"bytes=0-", 0, UNSATISFIABLE),
    (b"bytes=-5", 0, UNSATISFIABLE),
    (b"bytes=20-30, 40-", 10, UNSATISFIABLE),
    (b"bytes=5-2", 10, None),  # invalid: ignored
    (b"bytes=0-1,3-4", 10, [(0, 1), (3, 4)]),
    (b"bytes=6-7, 0-1", 10, [(6, 7), (0, 1)]),  # the client's order
    (b"bytes=0-1, 20-30", 10, [(0, 1)]),  # the part past the end is dropped
    (b"bytes=0-5,3-8", 10, None),  # overlapping: the whole file
    (b"bytes=0-,-1", 10, None),
    (b"bytes=0-1,,3-4", 10, None),
    (b"bytes=0-1,x", 10, None),
    (b"items=0-1", 10, None),
    (b"bytes=a-b", 10, None),
    (b"bytes=-", 10, None),
    (b"bytes 0-1", 10, None),
    (b"bytes=+1-2", 10, None),
])
def test_parse_ranges(value: bytes, size: int, expected: list[tuple[int, int]] | tuple[int, int] | None) -> None:
    assert parse_ranges(value, size) == expected


def test_too_many_ranges_get_the_whole_file() -> None:
    many = b"bytes=" + b",".join(b"%d-%d" % (i * 2, i * 2) for i in range(MAX_RANGES + 1))
    assert parse_ranges(many, 1000) is None
    assert parse_ranges(many.rsplit(b",", 1)[0], 1000) == [(i * 2, i * 2) for i in range(MAX_RANGES)]


def test_if_range() -> None:
    assert if_range_holds(ETAG, ETAG, DATE)
    assert not if_range_holds(b"W/" + ETAG, ETAG, DATE)
    assert not if_range_holds(b'"other"', ETAG, DATE)
    assert if_range_holds(DATE, ETAG, DATE)
    assert not if_range_holds(http_date(MTIME + 1), ETAG, DATE)  # exact date only
    assert not if_range_holds(b"junk", ETAG, DATE)


def test_http_date_memoised_and_whole_seconds() -> None:
    """Formatted once per second of mtime: a fraction does not change it, and the answer is shared."""
    assert http_date(MTIME + 0.75) == DATE
    assert http_date(MTIME) is http_date(MTIME + 0.25)
    assert http_date(MTIME + 1) == b"Tue, 14 Nov 2023 22:13:21 GMT"
