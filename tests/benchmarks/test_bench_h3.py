"""benchmarks/h3.py: its pure helpers (profile split, tables, ratios, argv), and the client against the floor."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import h3 as bench


def _plan(tmp_path: Path, names: tuple[str, ...], builds: dict[str, str] | None = None) -> bench.Plan:
    known = bench.variants_for(builds or {})
    return bench.Plan(variants=[known[n] for n in names], scenarios=list(bench.SCENARIOS.values()), rounds=2,
                      seconds=3, warmup=1, connections=4, streams=16, bascule_python="/dev/python",
                      bascule_args=("--log-level", "warning"), hypercorn="/peers/hypercorn", server_cpu="0",
                      client_cpu="1", log_dir=tmp_path, cert=tmp_path / "c.pem", key=tmp_path / "k.pem",
                      bodies={"small": b"Hello, world!", "big": b"x" * 65536})


def test_profile_split_takes_the_innermost_known_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (bascule/run.py:1);flush (bascule/protocols/h3/connection.py:2);datagrams_to_send (aioquic/quic/"
        "connection.py:3);encrypt (aioquic/_crypto.py:4) 6\n"
        "run (bascule/run.py:1);serve (bascule/context.py:2);asgi_app (apps.py:3) 1\n"
        "run (bascule/run.py:1);parse (bascule/protocols/h3/headers.py:9);lower (enum.py:5) 2\n"
        "select (selectors.py:1) 1\n"
        "garbage line\n")
    assert bench.profile_split(raw, "bascule") == {"aioquic": 60.0, "server": 20.0, "app": 10.0, "other": 10.0}
    assert bench.profile_split(tmp_path / "missing.txt", "bascule") == {}


def test_tables_ratios_and_relative(tmp_path: Path) -> None:
    plan = _plan(tmp_path, ("hypercorn", "bascule", "aioquic", "bascule@cg"), {"cg": "/cg/python"})
    rounds = [bench.Round("hypercorn", "small", 1, rps=1000, server_us=500, datagrams=5.0),
              bench.Round("hypercorn", "small", 2, rps=800, server_us=480),
              bench.Round("bascule", "small", 1, rps=2400, server_us=150),
              bench.Round("bascule", "small", 2, rps=3000, server_us=160, client_us=30, client_busy_pct=11,
                          datagrams=1.04, drops=3, server_drops=1,
                          profile={"aioquic": 70.0, "server": 28.0, "app": 1.0, "other": 1.0}),
              bench.Round("aioquic", "small", 1, rps=6000, server_us=70),
              bench.Round("bascule@cg", "small", 1, status="failed", note="check: no | answer")]
    best = bench.common.medians(rounds)
    assert best[("hypercorn", "small")].rps == 1000 and best[("bascule", "small")].rps == 3000
    by = {(r.scenario, r.mine): r for r in bench.ratios(best, plan)}
    assert by[("small", "bascule")].value == 3.0 and by[("small", "bascule")].met
    assert by[("small", "bascule@cg")].value is None
    assert all(r.theirs == "hypercorn" and r.target == 3.0 for r in by.values())
    table = bench.markdown(plan, rounds)
    assert "| hypercorn | 1,000 | 1,000 | 800 | 0 |" in table
    assert "| small | bascule / hypercorn | 3.00x (met) | 3x |" in table
    assert "| small | bascule | 3.00x | 3.12x | 50% |" in table  # req/s, CPU per request, share of the floor
    assert "| small | aioquic | 6.00x | 7.14x | - |" in table
    assert "| small | bascule | 70% | 28% | 1% | 1% |" in table  # the median round's profile
    assert "| 160 | 30 | 11% | 1.0 | 3 (1) | 0% |" in table
    assert "| bascule@cg | failed: check: no / answer |" in table


def test_server_and_client_argv(tmp_path: Path) -> None:
    plan = _plan(tmp_path, ("hypercorn", "bascule", "aioquic", "bascule-wsgi", "bascule@cg"), {"cg": "/cg/python"})
    known = bench.variants_for({"cg": "/cg/python"})
    argv = bench.server_argv(plan, known["bascule@cg"], 8443)
    assert argv[:3] == ["/cg/python", "-m", "bascule"] and "--http3" in argv and argv[-2:] == ["--log-level", "warning"]
    assert argv[argv.index("--ssl-certfile") + 1] == str(tmp_path / "c.pem") and "apps:asgi_app" in argv
    assert "apps:wsgi_app" in bench.server_argv(plan, known["bascule-wsgi"], 8443)
    argv = bench.server_argv(plan, known["hypercorn"], 8443)
    assert argv[0] == "/peers/hypercorn" and argv[argv.index("--quic-bind") + 1] == "127.0.0.1:8443"
    assert bench.server_argv(plan, known["aioquic-batched"], 8443)[-1] == "batched"
    assert bench.server_argv(plan, known["aioquic"], 8443)[-1] == "plain"
    client = bench.client_argv(plan, bench.SCENARIOS["big"], 8443)
    assert client[:3] == ["taskset", "-c", "1"] and client[-2] == "--client"
    assert json.loads(client[-1]) == {"port": 8443, "path": "/big", "connections": 4, "streams": 16, "warmup": 1,
                                      "seconds": 3, "size": 65536}


def test_parse_args() -> None:
    args = bench.parse_args(["--bascule-build", "cg=/cg/python", "--variants", "hypercorn,bascule@cg"])
    assert [v.name for v in args.variant_list] == ["hypercorn", "bascule@cg"]
    assert args.variant_list[1].python == "/cg/python"
    assert [s.name for s in bench.parse_args([]).scenario_list] == ["small", "big"]
    assert [v.name for v in bench.parse_args([]).variant_list] == list(bench.DEFAULT_VARIANTS)
    for bad in (["--variants", "quiche"], ["--bascule-build", "nolabel"], ["--streams", "0"], ["--scenarios", "x"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_udp_counters_read_this_machine() -> None:
    sent, drops = bench.udp_counters()
    assert sent >= 0 and drops >= 0
    assert bench.socket_drops(1) == 0


@pytest.mark.timeout(60)
def test_the_client_loads_the_floor(tmp_path: Path) -> None:
    """The real thing, briefly: the floor server (aioquic) and the curl_cffi client, 2 connections x 4 streams."""
    pytest.importorskip("curl_cffi")
    pytest.importorskip("aioquic")
    trustme = pytest.importorskip("trustme")
    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    port = bench.procs.free_port()
    script = str(Path(bench.__file__).resolve())
    proc = subprocess.Popen([sys.executable, script, "--floor", str(port), str(cert), str(key), "batched"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert bench.check(port, "/big", b"x" * 65536, 15) == ""
        started = time.monotonic()
        done = subprocess.run([sys.executable, script, "--client", json.dumps(
            {"port": port, "path": "/", "connections": 2, "streams": 4, "warmup": 0.2, "seconds": 1, "size": 13})],
            capture_output=True, text=True, timeout=30)
        assert time.monotonic() - started < 20
    finally:
        bench.procs.stop(proc)  # type: ignore[arg-type]
    go, figures = done.stdout.splitlines()
    result = json.loads(figures)
    assert go == "go" and result["errors"] == 0, done.stdout + done.stderr
    assert result["requests"] > 10 and result["connections"] == 2
    assert result["client_cpu"] > 0 and result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
