"""What the interleaved-rounds benchmark scripts share: benchmarks/nginx_chain.py, static.py and h3.py.

Each of them measures every variant once per round, several rounds, and reports the median round of each
(variant, scenario) against the issue's target ratios. The parts that are the same in all three live here,
once: the order of the runs, the median, the ratios and their table, the per-round table's frame, the
versions and the JSON result. What differs (how a run is measured, which columns a row has) stays in each
script. Process and /proc helpers are in benchmarks/procs.py; machine facts and versions are
benchmarks/machine.py's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

sys.path.insert(0, str(Path(__file__).parent))

import machine  # benchmarks/machine.py: machine facts, versions

S = TypeVar("S")
V = TypeVar("V")


# ------------------------------------------------------------------------------------------ the runs


@dataclass(kw_only=True)
class RoundsPlan(Generic[V, S]):
    """What every round-based script's run needs; each script's Plan adds its own (keyword-only here, so
    that a script's own fields, with or without defaults, may follow)."""

    variants: list[V]
    scenarios: list[S]
    rounds: int
    seconds: float  # timed, per run
    warmup: float
    connections: int
    bascule_python: str  # --bascule-python: the interpreter that runs `-m bascule`
    bascule_args: tuple[str, ...]
    server_cpu: str | None  # None: not pinned
    client_cpu: str | None
    log_dir: Path
    quiet_wait: float = 0.0  # before each run, wait at most this long for other work to stop
    start_timeout: float = 30.0


def interleaved(scenarios: Sequence[S], rounds: int, variants: Sequence[V]) -> Iterator[tuple[S, int, V]]:
    """(scenario, round number from 0, variant): scenario by scenario, round by round, every variant in turn,
    so that drift over a long run (other work, heat, caches) spreads over all the variants alike instead of
    landing on whichever ran last."""
    for sc in scenarios:
        for round_no in range(rounds):
            for v in variants:
                yield sc, round_no, v


class Measured(Protocol):
    """What this module reads of a round (each script's Round)."""

    variant: str
    scenario: str
    status: str
    rps: float


R = TypeVar("R", bound=Measured)


def run_rounds(scenarios: Sequence[S], rounds: int, variants: Sequence[V], measure: Callable[[V, S, int], R],
               progress: Callable[[R], str]) -> list[R]:
    """Every run in :func:`interleaved` order, each printed as it ends; returns every round."""
    every: list[R] = []
    for sc, round_no, v in interleaved(scenarios, rounds, variants):
        r = measure(v, sc, round_no)
        every.append(r)
        print(progress(r), flush=True)
    return every


# --------------------------------------------------------------------------------------- the results


class Scored(Protocol):
    """What :func:`median_round` reads of a round (run.py's Result too, which has no ``variant``)."""

    status: str
    rps: float


Q = TypeVar("Q", bound=Scored)


def median_round(rounds: Sequence[Q]) -> Q | None:
    """The round with the median req/s among the ok ones (None if none is ok).

    Of an even count, the upper middle one, the faster: other work on the machine only ever slows a round
    down, never speeds one up, so the faster of the two middle rounds is the less disturbed (two rounds: the
    better one, as calmly() keeps the least disturbed attempt). An odd count has one middle round.
    """
    ok = sorted((r for r in rounds if r.status == "ok"), key=lambda r: r.rps)
    return ok[len(ok) // 2] if ok else None


def medians(rounds: Sequence[R]) -> dict[tuple[str, str], R]:
    """(variant, scenario) -> its :func:`median_round`, else (no ok round) its first round."""
    groups: dict[tuple[str, str], list[R]] = {}
    for r in rounds:
        groups.setdefault((r.variant, r.scenario), []).append(r)
    out: dict[tuple[str, str], R] = {}
    for key, group in groups.items():
        best = median_round(group)
        out[key] = best if best is not None else group[0]
    return out


@dataclass(frozen=True)
class Ratio:
    """One of an issue's target ratios for one bascule variant in one scenario."""

    scenario: str
    mine: str
    theirs: str
    value: float | None  # None when either side has no ok round
    target: float

    @property
    def met(self) -> bool | None:
        return None if self.value is None else self.value >= self.target


def speedup(mine: Scored | None, theirs: Scored | None) -> float | None:
    """``mine``'s req/s over ``theirs``' (None unless both are there, both ok, and ``theirs`` is not 0)."""
    if mine and theirs and mine.status == theirs.status == "ok" and theirs.rps > 0:
        return mine.rps / theirs.rps
    return None


def ratio(best: Mapping[tuple[str, str], Measured], scenario: str, mine: str, theirs: str, target: float) -> Ratio:
    """``mine`` over ``theirs`` by median req/s in ``scenario`` (no value unless both have an ok median)."""
    value = speedup(best.get((mine, scenario)), best.get((theirs, scenario)))
    return Ratio(scenario, mine, theirs, None if value is None else round(value, 3), target)


def ratio_table(ratios: Sequence[Ratio], header: str) -> list[str]:
    """The markdown lines of the ratios against their targets (none when there are none)."""
    if not ratios:
        return []
    lines = [header, "|---|---|---:|---:|"]
    for r in ratios:
        value = "-" if r.value is None else f"{r.value:.2f}x"
        verdict = "" if r.met is None else (" (met)" if r.met else " (**not met**)")
        lines.append(f"| {r.scenario} | {r.mine} / {r.theirs} | {value}{verdict} | {r.target:g}x |")
    lines.append("")
    return lines


class Tabled(Measured, Protocol):
    """What :func:`rounds_table` reads of a round besides."""

    note: str
    errors: int
    others_cpu_pct: float | None


T = TypeVar("T", bound=Tabled)


def rounds_table(title: str, first: str, before: Sequence[str], after: Sequence[str], n_rounds: int,
                 variants: Sequence[str], scenario: str, rounds: Sequence[T],
                 cells: Callable[[T], tuple[Sequence[str], Sequence[str]]]) -> list[str]:
    """One scenario's markdown table: a row per variant with its median req/s, the ``before`` columns, req/s of
    every round, the errors, the ``after`` columns and the most other work's CPU in any of its rounds.

    ``cells(median round)`` gives the ``before`` and ``after`` cells; a variant whose median is not ok gets
    its status and note instead.
    """
    best = medians(rounds)
    heads = " | ".join([f"round {i + 1}" for i in range(n_rounds)])
    lines = [f"{title}:", "", row([first, "median req/s", *before, heads, "errors", *after, "others' CPU"]),
             "|---|---:|" + "---:|" * (len(before) + n_rounds + len(after) + 2)]
    for v in variants:
        mine = [r for r in rounds if r.variant == v and r.scenario == scenario]
        if not mine:
            continue
        b = best[(v, scenario)]
        if b.status != "ok":
            lines.append(f"| {v} | {b.status}: {b.note.replace('|', '/')[:100]} |"
                         + " |" * (len(before) + n_rounds + len(after) + 2))
            continue
        rps = " | ".join(f"{r.rps:,.0f}" if r.status == "ok" else r.status for r in mine)
        rps += " |" * (n_rounds - len(mine))
        others = max((r.others_cpu_pct or 0.0 for r in mine if r.status == "ok"), default=0.0)
        ahead, behind = cells(b)
        lines.append(row([v, f"{b.rps:,.0f}", *ahead, rps, str(b.errors), *behind, f"{others:.0f}%"]))
    lines.append("")
    return lines


def row(cells: Sequence[str]) -> str:
    """A markdown table row."""
    return "| " + " | ".join(cells) + " |"


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# ------------------------------------------------------------------------------------ the command line


def parse_builds(ap: argparse.ArgumentParser, specs: Sequence[str]) -> dict[str, str]:
    """--bascule-build LABEL=PYTHON (repeatable) -> {LABEL: PYTHON}; a malformed one is a usage error."""
    builds: dict[str, str] = {}
    for spec in specs:
        label, sep, python = spec.partition("=")
        if not (sep and label and python) or "@" in label or "," in label:
            ap.error(f"--bascule-build: expected LABEL=PYTHON, got {spec!r}")
        builds[label] = python
    return builds


def pick_scenarios(ap: argparse.ArgumentParser, names: str, known: Mapping[str, S]) -> list[S]:
    """--scenarios a,b -> those scenarios; an unknown one is a usage error."""
    out = []
    for name in names.split(","):
        if name not in known:
            ap.error(f"unknown scenario {name!r}; choose from {', '.join(known)}")
        out.append(known[name])
    return out


class Served(Protocol):
    """What :func:`bascule_pythons` reads of a variant (frozen in the scripts, hence properties)."""

    @property
    def server(self) -> str: ...
    @property
    def python(self) -> str: ...


def bascule_pythons(variants: Sequence[Served], bascule_python: str) -> dict[str, str]:
    """Each interpreter that runs a bascule variant -> the suffix of its versions' names: '' for
    --bascule-python's, `` @PYTHON`` for a --bascule-build's."""
    pythons = (v.python or bascule_python for v in variants if v.server == "bascule")
    return {python: "" if python == bascule_python else f" @{python}" for python in pythons}


def bascule_versions(pythons: Mapping[str, str], packages: Sequence[str]) -> dict[str, str]:
    """``packages`` and bascule's build in each interpreter, named ``NAME@LABEL`` (the label may be '')."""
    found: dict[str, str] = {}
    for python, at in pythons.items():
        for name, version in machine.dist_versions(python, packages).items():
            found[f"{name}{at}"] = version
        found[f"bascule build{at}"] = machine.bascule_build(python)
    return found


def meta_head(started: datetime.datetime, script: str, argv: Sequence[str] | None,
              versions: dict[str, str]) -> dict[str, Any]:
    """The JSON result's first "meta" keys: when, the command (``script``'s), the machine, the versions."""
    return {"date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)]),
            "machine": machine.machine_info(), "versions": versions}


def write_json(path: Path, meta: dict[str, Any], every: Sequence[Any], best: Mapping[Any, Any],
               ratios: Sequence[Ratio]) -> None:
    """The JSON result: the meta, every round, the medians and the ratios (with whether each is met)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "meta": meta, "rounds": [asdict(r) for r in every], "medians": [asdict(r) for r in best.values()],
        "ratios": [{**asdict(r), "met": r.met} for r in ratios]}, indent=1) + "\n")
    print(f"wrote {path}")
