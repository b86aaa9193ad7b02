"""The master's merge of worker snapshots (bascule.ops.merge): sums, retired workers' counts kept, gauges
from live workers only, restarts, and snapshots it cannot read."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

from bascule.ops.merge import RESTART_REASONS, MetricsBook, Totals
from bascule.ops.metrics import DEFAULT_BUCKETS, LAG_BUCKETS


def snap(requests: int, *, in_flight: int = 0, conns: int = 0, sent: int = 0, lag_last: float = 0.0,
         bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> dict[str, Any]:
    durations = [0] * (len(bounds) + 1)
    durations[0] = requests
    return {"pid": 1, "started": 1.0, "time": 2.0, "requests": [["GET", "200", "http/1.1", requests]],
            "bounds": list(bounds), "duration": durations, "duration_sum": requests * 0.001, "received": 0,
            "sent": sent, "static": [["200", 1]], "lag": [1] + [0] * len(LAG_BUCKETS), "lag_sum": 0.0,
            "lag_last": lag_last, "in_flight": in_flight, "connections": {"http/1.1": conns} if conns else {},
            "websockets": 0}


def payload(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def test_live_workers_are_summed() -> None:
    book = MetricsBook()
    book.update(10, payload(snap(5, in_flight=1, conns=2, sent=100, lag_last=0.002)))
    book.update(11, payload(snap(7, in_flight=2, conns=1, sent=50, lag_last=0.001)))
    total, per_worker, restarts = book.total()
    assert total.requests == {("GET", "200", "http/1.1"): 12}
    assert total.durations[0] == 12
    assert total.sent == 150
    assert total.in_flight == 3
    assert total.connections == {"http/1.1": 3}
    assert total.lag_last == 0.002  # the worst, not a sum
    assert total.static == {"200": 2}
    assert {pid: t.requests_total for pid, t in per_worker.items()} == {10: 5, 11: 7}
    assert restarts == dict.fromkeys(RESTART_REASONS, 0)


def test_a_newer_snapshot_replaces_the_last_one() -> None:
    book = MetricsBook()
    book.update(10, payload(snap(5)))
    book.update(10, payload(snap(9)))
    assert book.total()[0].requests_total == 9


def test_a_dead_workers_counts_are_kept_and_its_gauges_dropped() -> None:
    book = MetricsBook()
    book.update(10, payload(snap(5, in_flight=1, conns=2, sent=10)))
    book.update(11, payload(snap(7, in_flight=1, conns=1, sent=20)))
    book.retire(10)
    book.update(12, payload(snap(1)))  # its replacement starts from zero
    total, per_worker, _ = book.total()
    assert total.requests_total == 13
    assert total.sent == 30
    assert total.durations[0] == 13
    assert total.in_flight == 1 and total.connections == {"http/1.1": 1}
    assert set(per_worker) == {11, 12}
    book.retire(10)  # twice, or a worker that never reported: nothing
    book.retire(99)
    assert book.total()[0].requests_total == 13


def test_restarts_by_reason() -> None:
    book = MetricsBook()
    book.restarted("crash")
    book.restarted("crash")
    book.restarted("memory")
    restarts = book.total()[2]
    assert restarts["crash"] == 2 and restarts["memory"] == 1 and restarts["reload"] == 0


@pytest.mark.parametrize("bad", [b"not json", b"[]", b"{}", payload({**snap(1), "requests": [["GET", "200", "h", -1]]}),
                                 payload({**snap(1), "duration": [1, 2]}), payload({**snap(1), "sent": 1.5}),
                                 payload(snap(1, bounds=(1.0, 2.0)))])
def test_unreadable_snapshots_are_ignored_and_logged_once(bad: bytes, caplog: pytest.LogCaptureFixture) -> None:
    book = MetricsBook()
    book.update(10, payload(snap(3)))
    with caplog.at_level(logging.WARNING, logger="bascule.error"):
        book.update(10, bad)
        book.update(10, bad)
    assert book.total()[0].requests_total == 3
    assert len([r for r in caplog.records if "metrics snapshot" in r.getMessage()]) == 1


def test_custom_bounds() -> None:
    book = MetricsBook((0.5, 1.0))
    book.update(1, payload(snap(2, bounds=(0.5, 1.0))))
    assert book.total()[0].durations == [2, 0, 0]


def test_totals_refuse_other_bounds() -> None:
    t = Totals()
    with pytest.raises(ValueError):
        t.add(Totals((1.0,)), gauges=False)


def test_readers_and_writers_from_two_threads() -> None:
    book = MetricsBook()
    stop = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(book.total()[0].requests_total)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1, 300):
        book.update(i, payload(snap(1)))
        book.retire(i)
    stop.set()
    reader.join()
    assert book.total()[0].requests_total == 299
    assert seen == sorted(seen)  # a counter never goes back
