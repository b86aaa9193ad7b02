"""A real Prometheus (the Debian package) scrapes /metrics of a real master's --admin-bind with 2 workers: the
exposition parses (up == 1), bascule_requests_total summed over the workers equals the requests sent, and a
worker killed with SIGKILL loses none of the counts it had already reported (and counts as a crash restart).
One process serves its own /metrics the same way.

Prometheus runs on loopback with a temporary configuration (scrape every second) and storage; the test reads
its HTTP API. Skipped only where the prometheus binary is missing outside CI: .ci/run installs it, and there it fails
if missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from it_support import spawn, tcp_ready, wait_for

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
IN_CI = bool(os.environ.get("CI") or os.environ.get("BASCULE_EXPECT_COMPILED"))  # .ci/run sets the latter
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                                      reason="the prometheus binary is not installed (apt-get install prometheus)")


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[str]:
    """A Prometheus on loopback scraping ``target`` (host:port, path /metrics) every second; its API URL."""
    assert PROMETHEUS is not None, "prometheus is not installed"
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                      "scrape_configs:\n  - job_name: bascule\n    static_configs:\n"
                      f"      - targets: ['{target}']\n")
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_for(lambda: _get_ok(url + "/-/ready"), timeout=30)
        assert ready, (tmp / "prometheus.log").read_text(errors="replace")[-2000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def query(api: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(api + "/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def scalar(api: str, expr: str) -> float | None:
    result = query(api, expr)
    return float(result[0]["value"][1]) if result else None


def until(api: str, expr: str, want: float, timeout: float = 20.0) -> float | None:
    """Poll ``expr`` until it equals ``want``; the last value seen."""
    seen: list[float | None] = [None]

    def check() -> bool:
        seen[0] = scalar(api, expr)
        return seen[0] == want

    wait_for(check, timeout=timeout, interval=0.25)
    return seen[0]


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def send(url: str, count: int) -> None:
    """``count`` requests, each on a new connection (so both workers take some)."""
    for _ in range(count):
        with httpx.Client() as client:
            assert client.get(url + "/pid").status_code == 200


@contextlib.contextmanager
def bascule(tmp: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``bascule it_workers:app ARGS --admin-bind`` (metrics on with it); (process, app URL, admin host:port)."""
    app_port, admin_port = free_port(), free_port()
    log_path = tmp / "bascule.log"
    argv = ["it_workers:app", "--port", str(app_port), "--admin-bind", f"127.0.0.1:{admin_port}", "--no-access-log",
            *args]
    with spawn(argv, log=log_path, ready=tcp_ready(admin_port)) as proc:
        assert wait_for(tcp_ready(app_port), timeout=20), log_path.read_text(errors="replace")
        yield proc, f"http://127.0.0.1:{app_port}", f"127.0.0.1:{admin_port}"


@needs_prometheus
def test_prometheus_sums_workers_and_keeps_a_killed_workers_counts(tmp_path: Path) -> None:
    with bascule(tmp_path, "--workers", "2") as (proc, url, target), prometheus(tmp_path, target) as api:
        assert wait_for(lambda: len(children(proc.pid)) == 2 and httpx.get(f"http://{target}/readyz").is_success,
                        timeout=20)
        assert until(api, 'up{job="bascule"}', 1.0) == 1.0, "Prometheus could not scrape or parse the exposition"
        send(url, 60)
        total = 'sum(bascule_requests_total{method="GET",status="200"})'
        assert until(api, total, 60.0) == 60.0
        per_worker = {pid: 0 for pid in children(proc.pid)}
        assert len(per_worker) == 2
        assert until(api, "sum(bascule_request_duration_seconds_count)", 60.0) == 60.0
        assert scalar(api, 'sum(bascule_requests_total{protocol="http/1.1"})') == 60.0

        victim = max(children(proc.pid))
        os.kill(victim, signal.SIGKILL)  # after its last snapshot: nothing it counted is lost
        assert wait_for(lambda: len(children(proc.pid) - {victim}) == 2, timeout=20)
        assert until(api, 'bascule_worker_restarts_total{reason="crash"}', 1.0) == 1.0
        assert scalar(api, total) == 60.0
        send(url, 15)
        assert until(api, total, 75.0) == 75.0
        # the sum never went back (a worker's death is no counter reset)
        assert scalar(api, 'sum(resets(bascule_requests_total{method="GET",status="200"}[1m]))') in (None, 0.0)
        assert scalar(api, "histogram_quantile(0.5, sum by (le) (bascule_request_duration_seconds_bucket))") \
            is not None


def test_one_process_exposes_its_own_metrics(tmp_path: Path) -> None:
    """Without workers the process serves /metrics itself, from its own collector (no Prometheus needed)."""
    parser = pytest.importorskip("prometheus_client.parser")
    with bascule(tmp_path) as (proc, url, target):
        send(url, 7)
        response = httpx.get(f"http://{target}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in parser.text_string_to_metric_families(response.text) for s in family.samples}
        key = ("bascule_requests_total", (("method", "GET"), ("protocol", "http/1.1"), ("status", "200")))
        assert samples[key] == 7
        assert samples[("bascule_request_duration_seconds_count", ())] == 7
        assert not any(name == "bascule_worker_restarts_total" for name, _ in samples)
        status = httpx.get(f"http://{target}/status.json").json()
        assert status["metrics"]["requests_total"] == 7
        assert status["metrics"]["per_worker"] == {str(proc.pid): {"requests": 7}}


def test_no_metrics_route_with_no_metrics(tmp_path: Path) -> None:
    with bascule(tmp_path, "--no-metrics") as (_, _url, target):
        assert httpx.get(f"http://{target}/metrics").status_code == 404
        assert httpx.get(f"http://{target}/status.json").json()["metrics"] is None


def metrics_of(target: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parser = pytest.importorskip("prometheus_client.parser")
    text = httpx.get(f"http://{target}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def test_recycled_workers_hand_over_every_count(tmp_path: Path) -> None:
    """--max-requests recycles workers while requests come: each stops gracefully and sends its last snapshot,
    so the master's sum is exact, however many requests a worker served after its last periodic one."""
    with bascule(tmp_path, "--workers", "2", "--max-requests", "15") as (_, url, target):
        send(url, 90)
        key = ("bascule_requests_total", (("method", "GET"), ("protocol", "http/1.1"), ("status", "200")))

        def settled() -> bool:
            figures = metrics_of(target)
            return figures.get(key) == 90 and figures[("bascule_requests_in_flight", ())] == 0

        assert wait_for(settled, timeout=30, interval=0.3), metrics_of(target).get(key)
        figures = metrics_of(target)
        assert figures[("bascule_worker_restarts_total", (("reason", "max-requests"),))] >= 2
        assert figures[("bascule_request_duration_seconds_count", ())] == 90
