"""The two :class:`~bascule.ops.contract.MetricsView` implementations: one process, and a master.

Both turn :class:`~bascule.ops.merge.Totals` into the same metric families (:func:`families`) and the same
status-page summary (:func:`summary`): the one process from its own collector, on its event loop; the
master from its :class:`~bascule.ops.merge.MetricsBook`, from the admin listener's thread (the book locks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bascule.ops import exposition as ex
from bascule.ops.merge import MetricsBook, Totals
from bascule.ops.metrics import LAG_BUCKETS, Collector


def families(t: Totals, restarts: dict[str, int] | None = None) -> list[ex.Family]:
    """Every bascule metric family of ``t``; ``restarts`` (the master's) adds bascule_worker_restarts_total."""
    out = [
        ex.counter("bascule_requests_total", "Requests answered (or whose client went away: status 499), by "
                   "method, status and protocol.",
                   [((("method", m), ("status", s), ("protocol", p)), n)
                    for (m, s, p), n in sorted(t.requests.items())]),
        ex.histogram("bascule_request_duration_seconds", "Time from the request head to the response's last "
                     "byte.", t.bounds, t.durations, t.duration_sum),
        ex.gauge("bascule_requests_in_flight", "Requests being served now.", [((), t.in_flight)]),
        ex.gauge("bascule_connections", "Open client connections by protocol (websocket: a WebSocket session, "
                 "over HTTP/2 a stream of an h2 connection).",
                 [((("protocol", p),), n) for p, n in sorted(t.connections.items())]),
        ex.gauge("bascule_websockets", "WebSocket sessions open now.", [((), t.websockets)]),
        ex.counter("bascule_received_bytes_total", "Request body bytes received.", [((), t.received)]),
        ex.counter("bascule_sent_bytes_total", "Response body bytes sent.", [((), t.sent)]),
        ex.counter("bascule_static_responses_total", "Responses of --static mounts, by status.",
                   [((("status", s),), n) for s, n in sorted(t.static.items())]),
        ex.gauge("bascule_event_loop_lag_last_seconds", "How late the event loop ran a timer at its last "
                 "probe (the worst worker's).", [((), t.lag_last)]),
        ex.histogram("bascule_event_loop_lag_seconds", "How late the event loop ran a timer, probed four "
                     "times a second.", LAG_BUCKETS, t.lag, t.lag_sum),
    ]
    if restarts is not None:
        out.append(ex.counter("bascule_worker_restarts_total", "Workers the master replaced, by reason.",
                              [((("reason", r),), n) for r, n in sorted(restarts.items())]))
    return out


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram, interpolated inside its bucket as Prometheus' histogram_quantile
    does (the last finite bound for what is above it); None without observations."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if seen + count >= rank and count > 0:
            if i == len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * ((rank - seen) / count)
        seen += count
    return bounds[-1] if bounds else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def summary(t: Totals, per_worker: dict[int, Totals]) -> dict[str, Any]:
    """The status page's figures (plan16.md, status.json's ``metrics``): totals, latency percentiles since the
    start from the histogram (and the histogram, per bucket, one count more than bounds), gauges, and
    requests per worker by pid. The page computes rates from successive polls."""
    status: dict[str, int] = {}
    for (_, code, _), n in t.requests.items():
        group = code[0] + "xx" if len(code) == 3 and code.isdigit() else "other"
        status[group] = status.get(group, 0) + n
    return {
        "requests_total": t.requests_total,
        "status": dict(sorted(status.items())),
        "latency_ms": {f"p{int(q * 100)}": _ms(quantile(q, t.bounds, t.durations)) for q in (0.5, 0.9, 0.99)},
        # the histogram itself, so the page can take percentiles of the last seconds from successive polls
        "latency_histogram": {"bounds_ms": [round(b * 1000.0, 3) for b in t.bounds], "counts": list(t.durations)},
        "in_flight": t.in_flight,
        "connections": dict(sorted(t.connections.items())),
        "websockets": t.websockets,
        "bytes_sent": t.sent,
        "bytes_received": t.received,
        "loop_lag_ms": round(t.lag_last * 1000.0, 3),
        "per_worker": {str(pid): {"requests": w.requests_total} for pid, w in sorted(per_worker.items())},
    }


class ProcessMetrics:
    """MetricsView of one serving process (no workers): read on its own event loop."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def totals(self) -> Totals:
        return Totals.of(self.collector.snapshot())

    def exposition(self) -> bytes:
        return ex.render(families(self.totals()))

    def summary(self) -> dict[str, Any]:
        totals = self.totals()
        return summary(totals, {os.getpid(): totals})


class MasterMetrics:
    """MetricsView of a master: its workers' snapshots merged by the book (any thread)."""

    def __init__(self, book: MetricsBook) -> None:
        self.book = book

    def exposition(self) -> bytes:
        total, _, restarts = self.book.total()
        return ex.render(families(total, restarts))

    def summary(self) -> dict[str, Any]:
        total, per_worker, restarts = self.book.total()
        figures = summary(total, per_worker)
        figures["restarts"] = restarts
        return figures
