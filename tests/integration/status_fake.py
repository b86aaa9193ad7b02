"""A stand-in admin listener for the status page tests: serves the page and a status.json whose numbers
move on every read, in the shape plan16 fixes, with switches for what the page must survive (503s, no
answer, metrics off, workers coming and going, hostile strings)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bascule.ops.status_page import render_status_page, status_page_headers


class FakeAdmin:
    """``mode``: "ok", "503" (answers 503), "hang" (says nothing for ``hang_s``, then closes), "reset" (closes
    at once), "metrics-off" (``metrics: null``)."""

    BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)

    def __init__(self, hang_s: float = 4.0) -> None:
        self.mode = "ok"
        self.histogram = False  # send metrics.latency_histogram (the page then computes recent percentiles)
        self.slow_bucket = 2  # where each read's new observations land: (10, 25] ms at first
        self.buckets = [0] * (len(self.BOUNDS_MS) + 1)
        self.hang_s = hang_s
        self.lock = threading.Lock()
        self.reads = 0
        self.other_paths: list[str] = []
        self.ready = True
        self.draining = False
        self.started = time.time()
        self.workers: list[dict[str, Any]] = [
            {"pid": 4101, "number": 1, "requests": 0, "rss_mib": 41.5, "restarts": 0, "state": "ready"},
            {"pid": 4102, "number": 2, "requests": 0, "rss_mib": 43.25, "restarts": 1, "state": "ready"},
        ]
        self.total = 0
        self.codes = {"2xx": 0, "4xx": 0, "5xx": 0}
        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAdmin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def status(self) -> dict[str, Any]:
        """The next status.json: every read adds requests (a varying number), bytes and latency moves."""
        with self.lock:
            self.reads += 1
            n = self.reads
            step = 40 + (n * 7) % 23
            self.total += step
            self.codes["2xx"] += step - 3
            self.codes["4xx"] += 2
            self.codes["5xx"] += 1
            self.buckets[self.slow_bucket] += step
            for i, worker in enumerate(self.workers):
                worker["requests"] += step // len(self.workers) + i
            now = time.time()
            workers = [dict(w, uptime_s=now - self.started) for w in self.workers]
            metrics = {
                "requests_total": self.total, "status": dict(self.codes),
                "latency_ms": {"p50": 1.5 + n % 5, "p90": 8.0 + n % 7, "p99": 40.0 + n % 11},
                "in_flight": n % 4, "connections": {"http/1.1": 3 + n % 3, "h2": 1}, "websockets": n % 2,
                "bytes_sent": self.total * 1200, "bytes_received": self.total * 300, "loop_lag_ms": 0.4 + n % 3,
                "per_worker": {str(w["pid"]): {"requests": w["requests"]} for w in self.workers},
                "restarts": {"crash": 1, "max-requests": 0, "memory": 2},
            }
            if self.histogram:
                metrics["latency_histogram"] = {"bounds_ms": list(self.BOUNDS_MS), "counts": list(self.buckets)}
            return {"time": now, "mode": "master", "ready": self.ready, "draining": self.draining,
                    "workers": workers, "restarts": 3, "metrics": None if self.mode == "metrics-off" else metrics}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/status":
                    self.answer(200, render_status_page(), status_page_headers())
                elif self.path == "/status.json":
                    if admin.mode == "hang":
                        admin.released.wait(admin.hang_s)
                        return  # then close without a word
                    if admin.mode == "reset":
                        return  # closed at once, nothing said
                    if admin.mode == "503":
                        self.answer(503, b"draining\n", [(b"content-type", b"text/plain")])
                        return
                    body = json.dumps(admin.status()).encode()
                    self.answer(200, body, [(b"content-type", b"application/json")])
                else:
                    admin.other_paths.append(self.path)
                    self.answer(404, b"not found\n", [(b"content-type", b"text/plain")])

            def answer(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name.decode(), value.decode())
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
