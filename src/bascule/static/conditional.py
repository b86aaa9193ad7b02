"""Validators, preconditions and ranges for a static file (RFC 9110 sections 8.8, 13 and 14): pure
functions of request header values and the file's size and modification time, so every rule is tested
without a server.

The ETag is strong and made of the modification time (nanoseconds) and the size, as nginx's is (seconds
there): two workers, or two machines with the same deployment, give the same tag. The inode is left out for
that reason. Last-Modified is the IMF-fixdate of the modification time, whole seconds.
"""

from __future__ import annotations

import functools
import itertools
import re
from email.utils import formatdate, parsedate_to_datetime
from typing import Final

NOT_MODIFIED: Final = 304
PRECONDITION_FAILED: Final = 412
UNSATISFIABLE: Final = (-1, -1)
"""parse_ranges' answer for a range set none of whose ranges overlaps the file: 416."""

_ETAG = re.compile(rb'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def make_etag(size: int, mtime_ns: int, coding: str | None = None) -> bytes:
    """A strong entity tag for a file of ``size`` bytes last modified at ``mtime_ns``; a precompressed
    sibling's names its ``coding`` too, so no two representations of one path ever share a tag."""
    if coding is None:
        return b'"%x-%x"' % (mtime_ns, size)
    return b'"%x-%x-%s"' % (mtime_ns, size, coding.encode("ascii"))


def http_date(seconds: float) -> bytes:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) for a POSIX time."""
    return _imf_date(int(seconds))


@functools.lru_cache(maxsize=1024)
def _imf_date(seconds: int) -> bytes:
    """Memoised per second: every static response's Last-Modified formats a file's mtime, and formatdate
    measured ~6% of a 4 KiB file's CPU (benchmarks/static.py); files' mtimes repeat, the cache is bounded."""
    return formatdate(seconds, usegmt=True).encode("ascii")


def parse_http_date(value: bytes) -> int | None:
    """A POSIX time (whole seconds) from an HTTP-date, or None if it is not one (the header is then ignored,
    as RFC 9110 13.1.3 and 13.1.4 ask)."""
    try:
        when = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        return int(when.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def parse_etags(value: bytes) -> list[tuple[bool, bytes]] | None:
    """``W/"a", "b"`` -> [(True, b'"a"'), (False, b'"b"')]; None when the value is not a list of entity
    tags (a malformed header is ignored rather than half-read)."""
    tags: list[tuple[bool, bytes]] = []
    pos = 0
    end = len(value.rstrip())
    while pos < end:
        match = _ETAG.match(value, pos)
        if match is None:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
        pos = match.end()
    return tags


def _list_matches(value: bytes, etag: bytes, *, weak: bool) -> bool:
    """Whether the If-Match/If-None-Match ``value`` matches ``etag`` (ours is always strong): ``*`` matches
    any current file; weak comparison ignores W/ on theirs, strong comparison never matches a weak tag."""
    if value.strip() == b"*":
        return True
    tags = parse_etags(value)
    if not tags:
        return False
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in tags)


def preconditions(method: str, etag: bytes, mtime: int, if_match: bytes | None, if_unmodified_since: bytes | None,
                  if_none_match: bytes | None, if_modified_since: bytes | None) -> int | None:
    """RFC 9110 13.2.2's order: 412 or 304 when a precondition says so, None to answer in full.

    If-Unmodified-Since counts only without If-Match, If-Modified-Since only without If-None-Match (and only
    for GET and HEAD, like the 304 itself); ``mtime`` is the Last-Modified time in whole seconds.
    """
    if if_match is not None:
        if not _list_matches(if_match, etag, weak=False):
            return PRECONDITION_FAILED
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and mtime > since:
            return PRECONDITION_FAILED
    get_or_head = method == "GET" or method == "HEAD"
    if if_none_match is not None:
        if _list_matches(if_none_match, etag, weak=True):
            return NOT_MODIFIED if get_or_head else PRECONDITION_FAILED
    elif if_modified_since is not None and get_or_head:
        since = parse_http_date(if_modified_since)
        if since is not None and mtime <= since:
            return NOT_MODIFIED
    return None


def if_range_holds(value: bytes, etag: bytes, last_modified: bytes) -> bool:
    """If-Range (RFC 9110 13.1.5): the range applies only if the client's validator is still current: a
    strong ETag equal to ours, or a date equal to our Last-Modified exactly. Anything else (a weak tag, another
    date, garbage) means the client's copy is stale, so it gets the whole file."""
    value = value.strip()
    if value.startswith(b'"') or value.startswith(b"W/"):
        return value == etag  # a weak tag never matches (strong comparison)
    ours = parse_http_date(last_modified)
    theirs = parse_http_date(value)
    return ours is not None and theirs == ours


MAX_RANGES: Final = 16
"""More ranges than this in one request get the whole file (RFC 9110 14.2 lets a server ignore Range)."""


def parse_ranges(value: bytes, size: int) -> list[tuple[int, int]] | tuple[int, int] | None:
    """The byte ranges a Range header asks of a file of ``size`` bytes, as (first, last) pairs, inclusive, in
    the client's order.

    None means answer with the whole file: another unit, a malformed header (RFC 9110 14.2 says ignore it),
    more than MAX_RANGES ranges, or ranges that overlap (both would let a small request ask for many times
    the file, the amplification 14.2 warns of). UNSATISFIABLE (416) when no range overlaps the file: each
    starts at or past the end, or is a suffix of length zero. Ranges that do not overlap it are dropped.
    """
    unit, sep, specs = value.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes":
        return None
    items = specs.split(b",")
    if len(items) > MAX_RANGES:
        return None
    spans: list[tuple[int, int]] = []
    for item in items:
        span = _one_range(item.strip(), size)
        if span is None:
            return None
        if span != UNSATISFIABLE:
            spans.append(span)
    if not spans:
        return UNSATISFIABLE
    ordered = sorted(spans)
    for (_, last), (first, _) in itertools.pairwise(ordered):
        if first <= last:
            return None
    return spans


def _one_range(spec: bytes, size: int) -> tuple[int, int] | None:
    """One range-spec: (first, last), UNSATISFIABLE, or None if it is not a valid range-spec."""
    first_text, dash, last_text = spec.partition(b"-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or (first_text and not first_text.isdigit()) or (last_text and not last_text.isdigit()):
        return None
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # an invalid range-spec: the header is ignored
    if first >= size:
        return UNSATISFIABLE
    return first, min(int(last_text), size - 1) if last_text else size - 1
