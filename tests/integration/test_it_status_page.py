"""The status page in a real browser: headless Chromium, driven over the DevTools protocol (issue 16).

Against a stand-in admin listener (status_fake.FakeAdmin, on loopback) whose status.json moves on every
read, the page must render the figures and the workers table, show numbers that change between two reads,
run under the strict Content-Security-Policy it is served with (no violation logged), put hostile strings
on screen as text, and survive what an admin listener does in real life: 503, no answer at all, metrics
off, workers replaced, draining. Then against a real bascule (one process, and a master with two workers)
with --admin-bind and metrics on, under a bounded load on its app port. Skipped without chromium.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from it_h2 import Cdp
from it_support import spawn, tcp_ready, wait_for
from status_fake import FakeAdmin
from test_it_http2 import chromium, chromium_binary

from bascule.ops.status_page import render_status_page

pytest.importorskip("websockets")

DASH = "\u2013"  # what the page shows for a figure it does not have

# What a user sees, read from the DOM (textContent), plus whether the charts have ink in the first series'
# colour and whether the stylesheet applied (the CSP allowed it).
READ = """
(() => {
  const text = (id) => document.getElementById(id).textContent;
  const rows = (id) => [...document.querySelectorAll("#" + id + " tbody tr")]
    .map((tr) => [...tr.cells].map((td) => td.textContent));
  const ink = (id) => {
    const canvas = document.getElementById(id);
    const want = getComputedStyle(document.documentElement).getPropertyValue("--c1").trim();
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(want.slice(i, i + 2), 16));
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 200 && Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40
          && Math.abs(data[i + 2] - b) < 40) n += 1;
    }
    return n;
  };
  return {
    state: text("state"), reason: text("reason"), mode: text("mode"),
    rps: text("rps"), total: text("total"), p50: text("p50"), p99: text("p99"), inflight: text("inflight"),
    latency_basis: text("latency-basis"), restarts: text("restarts"), restart_reasons: text("restart-reasons"),
    connections: text("connections"), websockets: text("websockets"), lag: text("lag"), sent: text("sent"),
    received: text("received"), metrics_off: !document.getElementById("metrics-off").hidden,
    workers: rows("workers"), codes: rows("codes"), protocols: rows("protocols"),
    rps_ink: ink("chart-rps"), latency_ink: ink("chart-latency"),
    badge_radius: getComputedStyle(document.getElementById("state")).borderTopLeftRadius,
    images: document.images.length, bold: document.querySelectorAll("b, i").length,
    pwned: window.pwned === true,
  };
})()
"""


@pytest.fixture(scope="module")
def devtools() -> Iterator[str]:
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="bascule-chromium-") as tmp, chromium(Path(tmp) / "profile") as url:
        yield url


async def until(cdp: Cdp, check: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    """The page's reading once ``check`` holds for it (polled every 100 ms), or the last one in the error."""
    end = asyncio.get_running_loop().time() + timeout
    while True:
        seen: dict[str, Any] = await cdp.evaluate(READ)
        if check(seen):
            return seen
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"the page did not get there in {timeout} s: {seen}")
        await asyncio.sleep(0.1)


def csp_complaints(cdp: Cdp) -> list[str]:
    return [e["entry"]["text"] for e in cdp.seen("Log.entryAdded")
            if e["entry"].get("source") == "security" or "Content Security Policy" in e["entry"]["text"]]


async def on_page(devtools: str, url: str, steps: Callable[[Cdp], Any]) -> Any:
    from websockets.asyncio.client import connect

    async with connect(devtools, max_size=None, open_timeout=10) as ws:
        cdp = Cdp(ws)
        try:
            await cdp.open_page()
            await cdp.call("Page.enable")
            await cdp.call("Runtime.enable")
            await cdp.call("Log.enable")
            await cdp.navigate(url, timeout=20)
            result = await steps(cdp)
            errors = [e for e in cdp.seen("Runtime.exceptionThrown")]
            assert not errors, errors
            assert not csp_complaints(cdp), csp_complaints(cdp)
            return result
        finally:
            cdp.reader.cancel()


def run(devtools: str, url: str, steps: Callable[[Cdp], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(on_page(devtools, url, steps), 90))


def numbers_shown(seen: dict[str, Any]) -> dict[str, Any]:
    return {key: seen[key] for key in ("rps", "total", "p50", "p99", "sent", "received")} | {
        "worker_requests": [row[3] for row in seen["workers"]], "codes": seen["codes"]}


@pytest.mark.timeout(120)
def test_the_page_renders_and_its_numbers_change(devtools: str) -> None:
    with FakeAdmin() as admin:
        async def steps(cdp: Cdp) -> tuple[dict[str, Any], dict[str, Any]]:
            first = await until(cdp, lambda s: s["state"] == "ready" and len(s["workers"]) == 2 and s["rps"] != DASH)
            reads = admin.reads
            second = await until(cdp, lambda s: admin.reads >= reads + 2 and s["total"] != first["total"])
            return first, second

        first, second = run(devtools, admin.origin + "/status", steps)
        assert admin.other_paths == []  # no favicon, no asset: the page is self-contained
    print(f"first: {first}\nsecond: {second}")
    assert first["mode"] == "master and workers"
    assert [row[0] for row in second["workers"]] == ["4101", "4102"]
    assert [row[1] for row in second["workers"]] == ["1", "2"]
    assert second["workers"][0][5] == "41.5 MiB" and second["workers"][1][6] == "1"
    assert all(row[7] == "ready" for row in second["workers"])
    assert [row[0] for row in second["codes"]] == ["2xx", "4xx", "5xx"]
    assert [row[0] for row in second["protocols"]] == ["h2", "http/1.1"]
    assert second["p50"].endswith(" ms") and second["lag"].endswith(" ms") and second["sent"].endswith("/s")
    assert float(second["rps"]) > 0
    assert not second["metrics_off"]
    changed = {k for k, v in numbers_shown(second).items() if v != numbers_shown(first)[k]}
    assert {"total", "worker_requests", "codes", "sent"} <= changed, changed
    assert second["latency_basis"] == "since start"  # latency_ms as given: no histogram in this answer
    assert second["restarts"] == "3" and second["restart_reasons"] == "crash 1, memory 2"
    assert second["rps_ink"] > 20 and second["latency_ink"] > 20  # the charts drew their lines
    assert second["badge_radius"] == "16px"  # the stylesheet applied under the CSP


@pytest.mark.timeout(150)
def test_the_page_survives_outages_and_changes(devtools: str) -> None:
    """503, no answer, a reset connection, metrics off, workers replaced, draining: the page says so and
    keeps polling; every hostile string lands as text."""
    with FakeAdmin(hang_s=4.0) as admin:
        async def steps(cdp: Cdp) -> dict[str, Any]:
            await until(cdp, lambda s: s["state"] == "ready" and len(s["workers"]) == 2)
            admin.mode = "503"
            seen = await until(cdp, lambda s: s["state"] == "unreachable")
            assert seen["reason"] == "HTTP 503", seen
            admin.mode = "ok"
            await until(cdp, lambda s: s["state"] == "ready" and s["reason"] == "")
            admin.mode = "hang"  # longer than the page's 2.5 s timeout
            seen = await until(cdp, lambda s: s["state"] == "unreachable")
            assert seen["reason"].startswith("no answer within"), seen
            admin.mode = "reset"
            await until(cdp, lambda s: s["reason"] == "connection failed")
            admin.mode = "ok"
            await until(cdp, lambda s: s["state"] == "ready", timeout=15)

            admin.mode = "metrics-off"
            off = await until(cdp, lambda s: s["metrics_off"])
            assert off["rps"] == off["p99"] == DASH and off["total"] == "metrics off", off
            assert off["codes"] == [["metrics off"]] and off["protocols"] == [["metrics off"]], off
            assert len(off["workers"]) == 2 and off["workers"][0][3] != DASH, off  # requests from the workers
            later = await until(cdp, lambda s: s["workers"][0][3] != off["workers"][0][3])
            assert later["metrics_off"]
            admin.mode = "ok"
            await until(cdp, lambda s: not s["metrics_off"] and s["rps"] != DASH)

            with admin.lock:
                admin.workers[1] = {"pid": 4203, "number": 2, "requests": 5, "rss_mib": 40.0, "restarts": 2,
                                    "state": "starting"}
            replaced = await until(cdp, lambda s: [row[0] for row in s["workers"]] == ["4101", "4203"])
            assert replaced["workers"][1][6] == "2" and replaced["workers"][1][7] == "starting", replaced
            with admin.lock:
                admin.workers.append({"pid": 4204, "number": 3, "requests": 0, "rss_mib": None, "restarts": 0,
                                      "state": "ready"})
            grown = await until(cdp, lambda s: len(s["workers"]) == 3)
            assert grown["workers"][2][5] == DASH, grown  # no RSS known
            with admin.lock:
                admin.workers.clear()
            await until(cdp, lambda s: s["workers"] == [["no workers"]])

            admin.draining = True
            admin.ready = False
            await until(cdp, lambda s: s["state"] == "draining")
            admin.draining = False
            await until(cdp, lambda s: s["state"] == "not ready")
            admin.ready = True

            hostile = '<img src=x onerror="window.pwned=true"><b>bold</b>'
            with admin.lock:
                admin.workers.append({"pid": hostile, "number": 1, "requests": 1, "rss_mib": 1.0, "restarts": 0,
                                      "state": hostile})
                admin.codes[hostile] = 1
            return await until(cdp, lambda s: len(s["workers"]) == 1 and s["workers"][0][-1] == hostile)

        seen = run(devtools, admin.origin + "/status", steps)
    print(f"last: {seen}")
    assert seen["workers"][0][0] == seen["workers"][0][7]
    assert any(row[0].startswith("<img") for row in seen["codes"]), seen["codes"]
    assert seen["images"] == 0 and seen["bold"] == 0 and not seen["pwned"], seen


@pytest.mark.timeout(120)
def test_latency_is_recent_when_the_histogram_is_given(devtools: str) -> None:
    """With metrics.latency_histogram, the percentiles are of the last ten seconds: when every new request
    lands in (250, 500] ms after a minute's worth in (10, 25] ms, p50 follows within the window, where the
    percentiles since start would stay in the old bucket."""
    with FakeAdmin() as admin:
        admin.histogram = True

        async def steps(cdp: Cdp) -> tuple[dict[str, Any], dict[str, Any]]:
            fast = await until(cdp, lambda s: s["latency_basis"].startswith("last ") and s["p50"] == "17.5 ms")
            with admin.lock:
                admin.buckets[2] += 100_000  # a long past of fast requests: since start, p50 stays fast
                admin.slow_bucket = 6
            slow = await until(cdp, lambda s: s["p50"] == "375 ms" and s["latency_basis"] == "last 10 s",
                               timeout=20)
            return fast, slow

        fast, slow = run(devtools, admin.origin + "/status", steps)
    print(f"fast: {fast}\nslow: {slow}")
    assert slow["p99"] == "498 ms", slow  # 250 + 250 * 0.99


class Load:
    """A bounded load on the app's port: ``connections`` threads, each on a keep-alive connection it replaces
    every 25 requests (so the workers' accept loops share them), together at most ``count`` requests and
    ``seconds`` of time, paced so the server and the browser keep CPU on a small machine."""

    def __init__(self, url: str, *, connections: int = 4, count: int = 8000, seconds: float = 60.0,
                 pause: float = 0.004) -> None:
        self.url, self.count, self.seconds, self.pause = url, count, seconds, pause
        self.lock = threading.Lock()
        self.done = 0
        self.failed: list[str] = []
        self.pids: set[str] = set()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(connections)]

    def take(self) -> bool:
        with self.lock:
            self.done += 1
            return self.done <= self.count

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        while not self.stopped.is_set() and time.monotonic() < end:
            with httpx.Client(timeout=5) as client:
                for _ in range(25):
                    if self.stopped.is_set() or time.monotonic() > end or not self.take():
                        return
                    try:
                        answer = client.get(self.url)
                        if answer.status_code != 200:
                            self.failed.append(f"HTTP {answer.status_code}")
                        self.pids.add(answer.text)
                    except httpx.HTTPError as exc:
                        self.failed.append(repr(exc))
                    time.sleep(self.pause)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(10)


def admin_status(admin: str) -> dict[str, Any]:
    try:
        answer = httpx.get(f"{admin}/status.json", timeout=2)
    except httpx.HTTPError:
        return {}
    return answer.json() if answer.status_code == 200 else {}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [0, 2])
def test_the_page_of_a_real_bascule_under_load(devtools: str, tmp_path: Path, workers: int) -> None:
    """bascule --admin-bind (one process, and a master with two workers) under a bounded load on its app
    port: the page served by the admin listener renders the workers and its numbers move."""
    port, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    log = tmp_path / "server.log"
    args = ["it_workers:app", "--port", str(port), "--admin-bind", f"127.0.0.1:{admin_port}", "--no-access-log"]
    if workers:
        args += ["--workers", str(workers)]
    with spawn(args, log=log, ready=tcp_ready(admin_port)) as proc:
        assert wait_for(lambda: len(admin_status(admin).get("workers", [])) == max(workers, 1)
                        and admin_status(admin).get("ready"), 20), (admin_status(admin), log.read_text()[-2000:])
        pids = sorted(str(w["pid"]) for w in admin_status(admin)["workers"])
        page = httpx.get(f"{admin}/status", timeout=5)
        assert page.status_code == 200 and page.content == render_status_page()
        assert page.headers["content-type"] == "text/html; charset=utf-8"

        async def steps(cdp: Cdp) -> tuple[dict[str, Any], dict[str, Any]]:
            first = await until(cdp, lambda s: s["state"] == "ready" and len(s["workers"]) == max(workers, 1)
                                and s["rps"] not in (DASH, "0.00"), timeout=20)
            second = await until(cdp, lambda s: s["total"] != first["total"] and s["rps"] != DASH
                                 and [r[3] for r in s["workers"]] != [r[3] for r in first["workers"]], timeout=20)
            return first, second

        with Load(f"http://127.0.0.1:{port}/pid") as load:
            first, second = run(devtools, f"{admin}/status", steps)
        assert proc.poll() is None, log.read_text()[-2000:]
    print(f"load: {load.done} requests, pids {sorted(load.pids)}\nfirst: {first}\nsecond: {second}")
    assert not load.failed, load.failed[:5]
    shown = sorted(row[0] for row in second["workers"])
    if workers:
        assert shown == pids and load.pids <= set(pids), (shown, pids, load.pids)
        assert second["mode"] == "master and workers"
    else:
        assert shown == [str(proc.pid)] and second["mode"] == "single process"
    assert float(second["rps"].replace(",", "")) > 0
    assert int(second["total"].split()[0].replace(",", "")) > int(first["total"].split()[0].replace(",", ""))
    assert second["codes"][0][0] == "2xx"
    # one answer's figures agree: the workers' requests add up to the total (no worker has died)
    assert sum(int(row[3].replace(",", "")) for row in second["workers"]) == int(
        second["total"].split()[0].replace(",", ""))
    assert all(row[7] == "serving" for row in second["workers"]), second["workers"]
    assert second["latency_basis"].startswith("last ") and second["p50"].endswith(" ms"), second  # from the histogram
    assert second["rps_ink"] > 20 and second["latency_ink"] > 20
