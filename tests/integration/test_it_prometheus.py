"""A real Prometheus (the Debian package) scrapes a bascule master's merged metrics from 2 workers: the
exposition parses (up == 1), bascule_requests_total summed over the workers equals the requests sent, and a
worker killed with SIGKILL loses none of the counts it had already reported (and counts as a crash restart).

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
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from it_support import APPS, clean_env, tcp_ready, wait_for

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
IN_CI = bool(os.environ.get("CI") or os.environ.get("BASCULE_EXPECT_COMPILED"))  # .ci/run sets the latter
pytestmark = pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
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
def master(tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """it_workers:app on a master with 2 workers and --metrics; (process, app URL, metrics host:port)."""
    app_port, metrics_port = free_port(), free_port()
    log = open(tmp / "master.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, str(APPS / "it_metrics_master.py"), str(app_port), str(metrics_port)],
                            cwd=APPS, env=clean_env(PYTHONPATH=os.pathsep.join([str(APPS), os.environ.get(
                                "PYTHONPATH", "")])), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ok = wait_for(tcp_ready(app_port), timeout=20) and wait_for(tcp_ready(metrics_port), timeout=5)
        ok = ok and wait_for(lambda: (tmp / "master.log").read_text(errors="replace").count(" ready in ") >= 2,
                             timeout=20)
        assert ok, (tmp / "master.log").read_text(errors="replace")
        yield proc, f"http://127.0.0.1:{app_port}", f"127.0.0.1:{metrics_port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def test_prometheus_sums_workers_and_keeps_a_killed_workers_counts(tmp_path: Path) -> None:
    with master(tmp_path) as (proc, url, target), prometheus(tmp_path, target) as api:
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
