"""benchmarks/static.py: its pure helpers (wrk's Transfer/sec, the files, the ratios, the table, the argv)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import static as bench


def test_parse_transfer_units() -> None:
    assert bench.parse_transfer("Requests/sec:  1000.00\nTransfer/sec:      1.00GB\n") == 1073.7
    assert bench.parse_transfer("Transfer/sec:    512.50KB\n") == 0.5
    assert bench.parse_transfer("Transfer/sec:     97.31MB\n") == 102.0
    assert bench.parse_transfer("no transfer line") is None


def test_file_bytes_exact_size_and_not_uniform() -> None:
    for sc in bench.SCENARIOS.values():
        data = bench.file_bytes(sc)
        assert len(data) == sc.size
        assert len(set(data[:256])) == 256
    assert bench.SCENARIOS["4k"].path == "/s/4k.bin"


def _round(variant: str, scenario: str, rps: float, status: str = "ok", n: int = 1) -> bench.Round:
    return bench.Round(variant, scenario, n, status=status, rps=rps, mbps=rps / 10)


def test_medians_and_ratios() -> None:
    rounds = [_round("granian", "4k", 100, n=1), _round("granian", "4k", 300, n=2), _round("granian", "4k", 200, n=3),
              _round("bascule", "4k", 500), _round("nginx", "1m", 1000), _round("bascule", "1m", 850),
              _round("bascule@cg", "1m", 0, status="failed")]
    best = bench.common.medians(rounds)
    assert best[("granian", "4k")].rps == 200
    variants = list(bench.variants_for({"cg": "/x/python"}).values())
    ratios = bench.acceptance(best, variants, list(bench.SCENARIOS.values()))
    by = {(r.scenario, r.mine): r for r in ratios}
    assert by[("4k", "bascule")].value == 2.5 and by[("4k", "bascule")].met
    assert by[("1m", "bascule")].value == 0.85 and by[("1m", "bascule")].met is False
    assert by[("1m", "bascule@cg")].value is None and by[("1m", "bascule@cg")].met is None
    assert {r.theirs for r in ratios if r.scenario == "1m"} == {"nginx"}
    table = bench.markdown(variants, list(bench.SCENARIOS.values()), rounds, 3, 64, ratios)
    assert "| granian | 200 | 20 | 100 | 300 | 200 |" in table
    assert "| 4k | bascule / granian | 2.50x (met) | 2x |" in table
    assert "| 1m | bascule / nginx | 0.85x (**not met**) | 0.9x |" in table
    assert "| bascule@cg | failed" in table


def test_server_argv(tmp_path: Path) -> None:
    files = tmp_path / "files"
    plain = bench.variants_for({"cg": "/cg/bin/python"})
    argv = bench.server_argv(plain["bascule@cg"], 8000, files, tmp_path, "/dev/python", Path("/peers"))
    assert argv[:3] == ["/cg/bin/python", "-m", "bascule"] and f"/s={files}" in argv
    argv = bench.server_argv(plain["granian"], 8000, files, tmp_path, "/dev/python", Path("/peers"))
    assert argv[0] == "/peers/granian" and argv[argv.index("--static-path-mount") + 1] == str(files)
    argv = bench.server_argv(plain["whitenoise"], 8000, files, tmp_path, "/dev/python", Path("/peers"))
    assert "gthread" in argv and (tmp_path / "wn_app.py").exists()
    argv = bench.server_argv(plain["nginx"], 8000, files, tmp_path, "/dev/python", Path("/peers"))
    conf = Path(argv[argv.index("-c") + 1]).read_text()
    assert "sendfile on;" in conf and "access_log off;" in conf and f"alias {files}/;" in conf
    assert "worker_processes 1;" in conf and "listen 127.0.0.1:8000" in conf


def test_parse_args() -> None:
    args = bench.parse_args(["--bascule-build", "cg=/cg/python", "--rounds", "2"])
    assert [v.name for v in args.variant_list] == ["nginx", "granian", "whitenoise", "bascule", "bascule@cg"]
    assert [s.name for s in args.scenario_list] == ["4k", "1m"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", "lighttpd"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--bascule-build", "nolabel"])
