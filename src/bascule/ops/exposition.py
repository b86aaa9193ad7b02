"""The Prometheus text exposition format (0.0.4), written here rather than through ``prometheus_client``.

The metrics are plain numbers merged from worker snapshots (:mod:`bascule.ops.merge`); a client library
would want its own registry and objects for them, and bascule does not depend on it. The format is small
and exact: per family a ``# HELP`` line (backslash and newline escaped) and a ``# TYPE`` line, then one
line per sample, ``name{label="value",...} number``, label values with backslash, double quote and newline
escaped; a histogram's ``_bucket`` samples are cumulative, ``le`` ascending and ending with ``+Inf`` (equal
to ``_count``), then ``_sum`` and ``_count``. Numbers are written as Go's ``strconv`` would read them back:
``+Inf``, ``-Inf``, ``NaN``, integers without a fraction. tests/ops/test_exposition.py reads the output
back with prometheus_client's parser, and tests/integration/test_it_prometheus.py with a real Prometheus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of :func:`render`'s output (what Prometheus negotiates for this format)."""

Labels = tuple[tuple[str, str], ...]
"""Label pairs in the order they are written: ``(("method", "GET"), ("status", "200"))``."""

_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES: Final = ("counter", "gauge", "histogram", "untyped")


class Family:
    """One metric family: its name, help, type and samples (``(suffix, labels, value)``)."""

    __slots__ = ("help", "kind", "name", "samples")

    def __init__(self, name: str, kind: str, help: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        if kind not in TYPES:
            raise ValueError(f"invalid metric type {kind!r}")
        self.name = name
        self.kind = kind
        self.help = help
        self.samples: list[tuple[str, Labels, float]] = []

    def add(self, labels: Labels, value: float, suffix: str = "") -> Family:
        for label, _ in labels:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        self.samples.append((suffix, labels, value))
        return self


def counter(name: str, help: str, samples: Iterable[tuple[Labels, float]] = ()) -> Family:
    family = Family(name, "counter", help)
    for labels, value in samples:
        family.add(labels, value)
    return family


def gauge(name: str, help: str, samples: Iterable[tuple[Labels, float]] = ()) -> Family:
    family = Family(name, "gauge", help)
    for labels, value in samples:
        family.add(labels, value)
    return family


def histogram(name: str, help: str, bounds: Sequence[float], counts: Sequence[int], total: float,
              labels: Labels = ()) -> Family:
    """A histogram from per-bucket counts (not cumulative): ``counts[i]`` observations fell at or below
    ``bounds[i]`` and above the bound before it; ``counts[-1]`` (one more than ``bounds``) above the last."""
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{name}: {len(counts)} bucket counts for {len(bounds)} bounds (want one more)")
    if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
        raise ValueError(f"{name}: bucket bounds must increase")
    family = Family(name, "histogram", help)
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        family.add((*labels, ("le", go_float(bound))), running, "_bucket")
    running += counts[-1]
    family.add((*labels, ("le", "+Inf")), running, "_bucket")
    family.add(labels, total, "_sum")
    family.add(labels, running, "_count")
    return family


def go_float(value: float) -> str:
    """A bucket bound as prometheus_client writes ``le`` (``0.005``, ``1.0``, ``+Inf``): one spelling per
    bound, so series from different scrapes and processes carry the same label value."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def number(value: float) -> str:
    """A sample value: integers as such (counts stay exact past 2**53), floats by ``repr`` (round-trips)."""
    if type(value) is int:
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(float(value))


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Family]) -> bytes:
    """The text exposition of ``families``, in the order given (each name at most once)."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric family {family.name!r} twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            if labels:
                inner = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels)
                lines.append(f"{family.name}{suffix}{{{inner}}} {number(value)}")
            else:
                lines.append(f"{family.name}{suffix} {number(value)}")
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
