"""The MetricsView implementations (bascule.ops.views): the families every process exposes, read back by
prometheus_client's parser, the status page's summary, and histogram quantiles as Prometheus computes them."""

from __future__ import annotations

import json

import pytest
from test_merge import snap

from bascule.ops.merge import MetricsBook, Totals
from bascule.ops.views import MasterMetrics, families, quantile, summary

parser = pytest.importorskip("prometheus_client.parser")

NAMES = {"bascule_requests_total", "bascule_request_duration_seconds", "bascule_requests_in_flight",
         "bascule_connections", "bascule_websockets", "bascule_received_bytes_total", "bascule_sent_bytes_total",
         "bascule_static_responses_total", "bascule_event_loop_lag_last_seconds", "bascule_event_loop_lag_seconds"}


def parsed(text: bytes) -> dict[str, object]:
    return {f.name: f for f in parser.text_string_to_metric_families(text.decode())}


def test_master_exposition_reads_back() -> None:
    book = MetricsBook()
    book.update(1, json.dumps(snap(5, conns=2, sent=7)).encode())
    book.update(2, json.dumps(snap(6, conns=1)).encode())
    book.retire(1)
    book.restarted("crash")
    found = parsed(MasterMetrics(book).exposition())
    # prometheus_client names counter families without _total
    names = {n + "_total" if n + "_total" in NAMES or n == "bascule_worker_restarts" else n for n in found}
    assert names == NAMES | {"bascule_worker_restarts_total"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in parser.text_string_to_metric_families(MasterMetrics(book).exposition().decode())
               for s in f.samples}
    assert samples[("bascule_requests_total", (("method", "GET"), ("protocol", "http/1.1"), ("status", "200")))] == 11
    assert samples[("bascule_request_duration_seconds_count", ())] == 11
    assert samples[("bascule_connections", (("protocol", "http/1.1"),))] == 1  # worker 1 is gone
    assert samples[("bascule_worker_restarts_total", (("reason", "crash"),))] == 1
    assert samples[("bascule_sent_bytes_total", ())] == 7


def test_process_families_have_no_restarts() -> None:
    names = {f.name for f in families(Totals())}
    assert "bascule_worker_restarts_total" not in names


def test_quantile_interpolates_like_histogram_quantile() -> None:
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(0.05)
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.75, bounds, [5, 5, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.99, bounds, [0, 0, 0, 4]) == 0.4  # above the last bound: the last bound


def test_summary_shape() -> None:
    t = Totals.of(snap(4, in_flight=1, conns=2))
    t.requests[("GET", "503", "h2")] = 1
    t.requests[("GET", "499", "h2")] = 2
    figures = summary(t, {42: t})
    assert figures["requests_total"] == 7
    assert figures["status"] == {"2xx": 4, "4xx": 2, "5xx": 1}
    assert set(figures["latency_ms"]) == {"p50", "p90", "p99"}
    assert figures["latency_ms"]["p50"] == pytest.approx(2.5)  # rank 2 of the 4 durations, all in [0, 5 ms]
    assert figures["latency_histogram"]["bounds_ms"][:2] == [5.0, 10.0]
    assert figures["latency_histogram"]["counts"] == t.durations
    assert len(figures["latency_histogram"]["counts"]) == len(figures["latency_histogram"]["bounds_ms"]) + 1
    assert figures["in_flight"] == 1
    assert figures["connections"] == {"http/1.1": 2}
    assert figures["per_worker"] == {"42": {"requests": 7}}
    for key in ("websockets", "bytes_sent", "bytes_received", "loop_lag_ms"):
        assert key in figures
    json.dumps(figures)


def test_master_summary_has_restarts() -> None:
    book = MetricsBook()
    book.restarted("memory")
    figures = MasterMetrics(book).summary()
    assert figures["restarts"]["memory"] == 1
    assert figures["requests_total"] == 0
    assert figures["latency_ms"] == {"p50": None, "p90": None, "p99": None}
