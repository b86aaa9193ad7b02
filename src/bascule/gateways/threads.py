"""A small fixed pool of worker threads for WSGI apps, fed through one SimpleQueue.

concurrent.futures.ThreadPoolExecutor creates a Future and a work item per call and re-checks its thread
count each time; WSGI results travel back through the exchange, so none of that is needed here. A task is
a function and one argument; exceptions are the task's own business (the WSGI runner catches them).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("bascule.error")


class ThreadPool:
    """``size`` daemon threads running ``fn(arg)`` tasks in arrival order."""

    def __init__(self, size: int, name: str = "bascule-wsgi") -> None:
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], None], Any] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        self._queue.put((fn, arg))

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fn, arg = item
            try:
                fn(arg)
            except BaseException:  # a task must never kill its thread
                _log.exception("unhandled error in a WSGI worker thread")
            # an idle thread must not keep its last request alive (its exchange, environ, body buffers)
            item = arg = None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued tasks finish, then stop the threads (bounded by ``timeout`` in all)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
