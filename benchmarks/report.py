"""benchmarks/run.py's report: docs/benchmarks.md, the chart, the progress lines and what they are made of.

The markdown names the machine, the pinning, the method and the versions of everything measured, then the
req/s of every server in every scenario, the ratios from each baseline (the numbers to compare across runs
and machines), and a table per scenario. Sections that other scripts wrote at the end of the file (the
nginx chain's, the static files') are carried over when it is written anew. The figures' formats are
shared with the round-based scripts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import machine
import quiet
from loadtools import Scenario
from suite import Plan, Result, Server

#: Chart colours: bascule in red/orange, the peers in cool colours and greys that never look like it.
PEER_COLORS = ("#1f4e79", "#5b9bd5", "#2e7d32", "#81c784", "#6a51a3", "#9e9ac8", "#7f7f7f", "#bdbdbd",
               "#00838f")
#: Sections at the end of docs/benchmarks.md that other scripts measure (benchmarks/nginx_chain.py,
#: benchmarks/static.py): kept as they are when this runner rewrites the file.
KEPT_SECTIONS = ("## Behind nginx", "## Static files")


def _which_round(repeat: int) -> str:
    """Which round of each server the tables show (common.median_round): of an even number, the faster
    of the two middle ones, so with two rounds the better one."""
    if repeat % 2:
        return "the median round is shown"
    return "the median round is shown: of an even number, the faster of the middle two" + (
        ", so here each server's better round" if repeat == 2 else "")


def fmt_rps(r: Result) -> str:
    return f"{r.rps:,.0f}" if r.status == "ok" else r.status


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def fmt_errors(r: Result) -> str:
    if r.status != "ok":
        return "-"
    return "0" if not r.errors else f"{r.errors:,} ({r.error_detail})"


def progress_line(r: Result) -> str:
    if r.status != "ok":
        return f"{r.scenario:>10}  {r.server:<17} {r.status.upper()}: {r.note}"
    return (f"{r.scenario:>10}  {r.server:<17} {r.rps:>10,.0f} req/s  p50 {fmt_ms(r.p50_ms):>9}  "
            f"p99 {fmt_ms(r.p99_ms):>9}  errors {fmt_errors(r)}  rss {fmt_mib(r.idle_rss_kib)} -> "
            f"{fmt_mib(r.peak_rss_kib)}  others {fmt_pct(r.others_cpu_pct)}" + (f"  ({r.note})" if r.note else ""))


def versions(plan: Plan) -> dict[str, str]:
    """Versions of what was measured: bascule, each peer, uvloop/httptools on both sides, the load tools."""
    found: dict[str, str] = {}
    builds = {s.python or plan.env.bascule_python: s.name.partition("@")[2] for s in plan.servers if s.is_ours()}
    for python, label in builds.items():
        at = f" @{label}" if label else ""
        for name, version in machine.dist_versions(python, ["bascule", "uvloop", "httptools"]).items():
            found[f"{name}{at}" if name == "bascule" else f"{name} (bascule{at}'s)"] = version
        found[f"bascule build{at}"] = machine.bascule_build(python)
    peers = sorted({s.distribution for s in plan.servers if not s.is_ours()})
    if peers:
        for name, version in machine.dist_versions(str(plan.env.peers_bin / "python"),
                                            [*peers, "uvloop", "httptools"]).items():
            found[name if name in peers else f"{name} (peers')"] = version
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        if shutil.which(tool) is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
            head = (done.stdout + done.stderr).strip().splitlines()
            if head and (m := re.search(r"(\d+\.\d+[\w.+-]*)", head[0])):
                found[tool] = m.group(1)
    return found


def ratio_table(results: list[Result], base: str, scenarios: list[Scenario], servers: list[Server]) -> list[str]:
    by = {(r.server, r.scenario): r for r in results}
    lines = [f"| {base} / peer | " + " | ".join(sc.name for sc in scenarios) + " |",
             "|---|" + "---:|" * len(scenarios)]
    for server in servers:
        if server.name == base:
            continue
        cells = []
        for sc in scenarios:
            value = common.speedup(by.get((base, sc.name)), by.get((server.name, sc.name)))
            cells.append("-" if value is None else f"{value:.2f}x")
        lines.append(f"| {server.name} | " + " | ".join(cells) + " |")
    return lines


def busy_warning(results: list[Result]) -> str:
    """'' on a quiet machine, else a sentence on how much other work shared the CPUs during the runs."""
    busy = [r for r in results if (r.others_cpu_pct or 0.0) > quiet.BUSY_PCT]
    if not busy:
        return ""
    worst = max(r.others_cpu_pct or 0.0 for r in busy)
    return (f"other work on the machine used more than {quiet.BUSY_PCT:g}% of a CPU during {len(busy)} of "
            f"{len(results)} runs (up to {worst:.0f}%; column \"others' CPU\"), so those numbers, and even "
            "their ratios, are noisier than usual. Rerun on an idle machine, or with `--repeat 3`.")


def markdown(plan: Plan, results: list[Result], meta: dict[str, Any], chart: Path | None,
             out: Path, bases: list[str]) -> str:
    m = meta["machine"]
    pinning = (f"server pinned to CPU {plan.server_cpu}, load generator to CPU {plan.tools.client_cpu}"
               if plan.server_cpu is not None else "no CPU pinning (fewer than 2 CPUs or taskset missing)")
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [
        "# Benchmarks",
        "",
        f"Measured {meta['date']} on {m['cpu']} ({m['nproc']} CPUs, {m['memory']}), {m['kernel']}, "
        f"Python {m['python']}; {pinning}. Each server is one worker at its defaults (flags in "
        "`benchmarks/suite.py`), restarted for every scenario, checked with one request, warmed up "
        f"{plan.warmup:g} s, then loaded for {plan.seconds:g} s"
        + (f", in {plan.repeat} rounds ({_which_round(plan.repeat)})" if plan.repeat > 1 else "") + "."
        + (f" Before each run it waited up to {plan.quiet_wait:g} s for other work on the machine to stop"
           if plan.quiet_wait > 0 else "")
        + (f"{'; a' if plan.quiet_wait > 0 else ' A'} run that other work disturbed anyway was measured "
           f"again, up to {plan.busy_retries} times, keeping the least disturbed attempt"
           if plan.busy_retries > 0 else "")
        + ("." if plan.quiet_wait > 0 or plan.busy_retries > 0 else ""),
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Versions: {vers}.",
        "",
        "Absolute numbers drift between machines and runs; the ratios, all taken in this one run, are what "
        "to compare. Errors are wrk's socket errors plus non-2xx answers; RSS is summed over the server's "
        "process tree, idle after the first answer and peak during the load. \"Others' CPU\" is the CPU that "
        "other work on the machine used during a run (% of one CPU): above a few % that run was disturbed.",
        "",
    ]
    if warning := busy_warning(results):
        lines += [f"**Note:** {warning}", ""]
    if chart is not None:
        lines += [f"![requests per second by scenario]({os.path.relpath(chart, out.parent)})", ""]
    names = [s.name for s in plan.servers]
    by = {(r.server, r.scenario): r for r in results}
    lines += ["## Requests per second", "",
              "| server | " + " | ".join(sc.name for sc in plan.scenarios) + " |",
              "|---|" + "---:|" * len(plan.scenarios)]
    for name in names:
        cells = [fmt_rps(by[(name, sc.name)]) if (name, sc.name) in by else "-" for sc in plan.scenarios]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for base in bases:
        lines += [f"## Ratios: {base} / peer (req/s; above 1 means {base} is faster)", "",
                  *ratio_table(results, base, plan.scenarios, plan.servers), ""]
    lines += ["## Scenarios", ""]
    for sc in plan.scenarios:
        lines += [f"### {sc.name}: {sc.title}", "",
                  "| server | req/s | p50 | p99 | errors | idle RSS | peak RSS | others' CPU |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for name in names:
            r = by.get((name, sc.name))
            if r is None:
                continue
            if r.status != "ok":
                lines.append(f"| {name} | {r.status}: {r.note.replace('|', '/')} | | | | | | |")
                continue
            lines.append(f"| {name} | {r.rps:,.0f} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} | "
                         f"{fmt_errors(r)} | {fmt_mib(r.idle_rss_kib)} | {fmt_mib(r.peak_rss_kib)} | "
                         f"{fmt_pct(r.others_cpu_pct)} |")
        notes = [f"- {name}: {by[(name, sc.name)].note}" for name in names
                 if (name, sc.name) in by and by[(name, sc.name)].status == "ok" and by[(name, sc.name)].note]
        if notes:
            lines += ["", *notes]
        lines.append("")
    return "\n".join(lines)


def document(plan: Plan, results: list[Result], meta: dict[str, Any], chart: Path | None, out: Path,
             bases: list[str]) -> str:
    """docs/benchmarks.md anew: :func:`markdown`, then what :func:`kept_sections` finds in the file at ``out``."""
    kept = kept_sections(out)
    return markdown(plan, results, meta, chart, out, bases) + "\n" + (f"\n{kept}" if kept else "")


def kept_sections(path: Path) -> str:
    """The tail of ``path`` from its first KEPT_SECTIONS heading on ('' if none): what a rewrite carries over."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    starts = [i + 1 for title in KEPT_SECTIONS if (i := text.find("\n" + title + "\n")) >= 0]
    return text[min(starts):] if starts else ""


def bar_colors(servers: Sequence[Server]) -> list[tuple[str, str]]:
    """(fill, edge) of each server's bars: bascule's ASGI red, WSGI orange, its loop mode lighter, all edged in
    black; the peers in PEER_COLORS' order, no edge."""
    colors = []
    peers_seen = 0
    for server in servers:
        if server.is_ours():
            colors.append(("#c0392b" if server.interface == "asgi"
                           else "#f5b041" if server.name.endswith("-loop") else "#e67e22", "black"))
        else:
            colors.append((PEER_COLORS[peers_seen % len(PEER_COLORS)], "none"))
            peers_seen += 1
    return colors


def draw_chart(plan: Plan, results: list[Result], path: Path, subtitle: str) -> str:
    """Grouped bars: req/s per scenario, one bar per server. Returns '' or why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'): no chart drawn"
    by = {(r.server, r.scenario): r for r in results}
    scenarios = [sc.name for sc in plan.scenarios]
    n = len(plan.servers)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(min(16.0, max(8.0, 1.5 + len(scenarios) * (0.16 * n + 0.4))), 6.0))
    for i, (server, (color, edge)) in enumerate(zip(plan.servers, bar_colors(plan.servers), strict=True)):
        name = server.name
        values = [by[(name, sc)].rps if (name, sc) in by and by[(name, sc)].status == "ok" else 0.0
                  for sc in scenarios]
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(scenarios))]
        ax.bar(xs, values, width, label=name, color=color, edgecolor=edge, linewidth=0.6)
    ax.set_xticks(range(len(scenarios)), scenarios)
    top = max((r.rps for r in results if r.status == "ok"), default=0.0)
    if top > 0:
        ax.set_ylim(0, top * 1.2)  # room for the legend above the tallest bar
    ax.set_ylabel("requests per second (one worker, one core)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    ax.set_title(f"bascule and peers, HTTP/1.1 req/s by scenario\n{subtitle}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(ncol=min(n, 5), fontsize=8, loc="upper right", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
