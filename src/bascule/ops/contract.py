"""The two faces the admin listener reads, so the listener, the metrics and the supervisor stay apart.

One process (no workers) and the master of a worker pool answer the same questions from different
places: the process from its own event loop, the master from its workers' reports. Each provides an
:class:`AdminSource`; metrics come behind a :class:`MetricsView` (a local collector's, or the master's
merge of worker snapshots), so ``/metrics`` and ``/status`` render the same way in both.
"""

from __future__ import annotations

from typing import Any, Protocol


class MetricsView(Protocol):
    """Metrics as the admin listener shows them (None where metrics are off)."""

    def exposition(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of every metric, summed over workers."""
        ...

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures for the status page: totals, rates and percentiles, and per worker (by pid)."""
        ...


class AdminSource(Protocol):
    """What the admin listener asks; answered by the serving process or by the master."""

    def livez(self) -> tuple[bool, str]:
        """Alive (the process, and its workers' loops beat), with a short reason for the body."""
        ...

    def readyz(self) -> tuple[bool, str]:
        """Ready for traffic (startup done, a worker serving, not draining, app check passing), and why not."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-ready state for ``/status``: process, workers (pid, uptime, requests, RSS, restarts), metrics."""
        ...

    @property
    def metrics(self) -> MetricsView | None:
        """The metrics to expose, or None when metrics are off."""
        ...
