"""The admin listener's routes: a fixed table of paths answered by the server itself, never by the app.

``--admin-bind`` gets its own listener, served by bascule's HTTP/1.1 stack (the same parser, limits and
timeouts as the app's listeners) with :meth:`AdminRoutes.dispatch` in place of the app table, so no app route
can shadow ``/readyz`` and no admin route is reachable on the app's port. What the routes say comes from an
:class:`~bascule.ops.contract.AdminSource`: the serving process's own, or the master's (ops/sources.py).

- ``/livez``, ``/readyz``: ``200 ok`` or ``503`` with the reason, one line of text (what a probe logs);
- ``/metrics``: the Prometheus text exposition, ``404`` while metrics are off;
- ``/status``: the HTML status page (ops/status_page.py) with its Content-Security-Policy, ``/status.json`` its data.

GET and HEAD only (``405`` with ``Allow`` otherwise); any other path is ``404``. Every answer is complete in
one write, ``cache-control: no-store`` (a cached probe answer would be a lie).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from bascule.ops.contract import AdminSource
from bascule.ops.status_page import render_status_page, status_page_headers
from bascule.protocols.exchange import Exchange

_log = logging.getLogger("bascule.error")

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
ALLOW = b"GET, HEAD"

Answer = tuple[int, bytes, bytes]
"""(status, content type, body)."""


class AdminRoutes:
    """The dispatch callable of the admin listener's ServerContext: one answer per path, from ``source``."""

    def __init__(self, source: AdminSource, status_page: Callable[[], bytes] | None = render_status_page) -> None:
        self.source = source
        self.status_page = status_page
        self.page_fields = status_page_headers()  # the page's own fields: its CSP allows exactly its scripts
        self.routes: dict[bytes, Callable[[], Answer]] = {
            b"/livez": self.livez,
            b"/readyz": self.readyz,
            b"/metrics": self.metrics,
            b"/status": self.status,
            b"/status.json": self.status_json,
        }

    def dispatch(self, ex: Exchange) -> None:
        route = self.routes.get(ex.raw_path)
        if route is None:
            ex.send_head(404, self._fields(TEXT), b"not found\n", end=True)
            return
        if ex.method not in ("GET", "HEAD"):
            ex.send_head(405, [*self._fields(TEXT), (b"allow", ALLOW)], b"method not allowed\n", end=True)
            return
        try:
            status, content_type, body = route()
        except Exception:
            _log.exception("admin route %s failed", ex.raw_path.decode("latin-1"))
            status, content_type, body = 500, TEXT, b"internal error\n"
        fields = self.page_fields if status == 200 and route == self.status else self._fields(content_type)
        ex.send_head(status, fields, body, end=True)

    @staticmethod
    def _fields(content_type: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", content_type), (b"cache-control", b"no-store")]

    def livez(self) -> Answer:
        return probe_answer(*self.source.livez())

    def readyz(self) -> Answer:
        return probe_answer(*self.source.readyz())

    def metrics(self) -> Answer:
        view = self.source.metrics
        if view is None:
            return 404, TEXT, b"metrics are off\n"
        return 200, PROMETHEUS, view.exposition()

    def status(self) -> Answer:
        if self.status_page is None:
            return 404, TEXT, b"no status page here: see /status.json\n"
        return 200, HTML, self.status_page()

    def status_json(self) -> Answer:
        return 200, JSON, json.dumps(self.source.status(), separators=(",", ":")).encode() + b"\n"


def probe_answer(ok: bool, reason: str) -> Answer:
    """``200`` with the reason (``ok`` when there is nothing to add), or ``503`` with why not."""
    text = reason or ("ok" if ok else "not ready")
    return (200 if ok else 503), TEXT, text.encode("utf-8", "replace") + b"\n"
