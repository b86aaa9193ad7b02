"""The ``/status`` page of the admin listener: one self-contained HTML file shipped as package data.

The page (``status.html`` beside this module) has no external assets: its CSS and JavaScript are inline,
it draws its charts on canvas, and it reads ``status.json`` (a relative URL, so it works behind a path
prefix) once a second, computing rates from successive answers. It never parses what the server says as
HTML (textContent only), and it has no inline styles or event-handler attributes, so it runs under a
strict Content-Security-Policy that allows its one script block and its one style block by hash:
:func:`content_security_policy` computes that header from the very bytes served, and
:func:`status_page_headers` gives the whole set of response fields the admin listener should send with it.

The file is read once, on first use (not at import: the admin listener is off by default), and kept.

What the page reads of status.json (plan16.md's shape; anything missing shows as a dash, never an error):
``time`` (server clock, the base of every rate), ``mode``, ``ready``, ``draining``, optional ``reason``
and ``restarts``; ``workers`` (pid, number, uptime_s, requests, rss_mib, restarts, state), rebuilt on each
answer; ``metrics`` or null (metrics off: said so, the workers table goes on). Within ``metrics``: the
counters requests_total, status (by class), bytes_sent, bytes_received (rates from successive answers); the
gauges in_flight, connections (by protocol), websockets, loop_lag_ms; per_worker requests by pid (used
when a worker row has none); restarts by reason. Latency: ``latency_ms`` (p50/p90/p99) as given, or, when
``latency_histogram`` = ``{"bounds_ms": [...], "counts": [...]}`` (per-bucket counters since start, one
more count than bounds for what is above the last), percentiles of the last ten seconds computed from it.
A 503, a timeout (2.5 s) or a failed connection shows "unreachable" with the reason, and polling goes on.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

PAGE_NAME = "status.html"

# The page's one inline <script> and one inline <style> block (no attributes: the CSP hash covers exactly
# the text between the tags, and a src= or type= would change what the browser runs).
_BLOCK = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@functools.cache
def render_status_page() -> bytes:
    """The status page's HTML (UTF-8), read from the package on the first call and cached."""
    return resources.files("bascule.ops").joinpath(PAGE_NAME).read_bytes()


def _hash_source(block: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block).digest()).decode("ascii") + "'"


@functools.cache
def content_security_policy() -> str:
    """The Content-Security-Policy value for the page: nothing but its own inline script and style (by
    hash), fetches to its own origin (status.json), and no framing, forms, plugins or base-URL changes.

    ``img-src data:`` is for the empty ``data:`` icon that keeps browsers from asking for /favicon.ico."""
    page = render_status_page()
    blocks: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _BLOCK.finditer(page):
        blocks[match.group(1)].append(_hash_source(match.group(2)))
    if not blocks[b"script"] or not blocks[b"style"]:
        raise RuntimeError(f"{PAGE_NAME} has lost its inline script or style block")
    return "; ".join((
        "default-src 'none'",
        "script-src " + " ".join(blocks[b"script"]),
        "style-src " + " ".join(blocks[b"style"]),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ))


@functools.cache
def _headers() -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"content-type", b"text/html; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", content_security_policy().encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    )


def status_page_headers() -> list[tuple[bytes, bytes]]:
    """The response fields to send with :func:`render_status_page` (a new list: the caller may add to it).

    ``no-store``: the page is small and a stale copy after an upgrade would read a changed status.json."""
    return list(_headers())
