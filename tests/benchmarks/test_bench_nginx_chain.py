"""benchmarks/nginx_chain.py's pure parts: the nginx configuration, the command lines, the ratios."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common
import nginx_chain as nc

VARIANTS = {v.name: v for v in nc.base_variants()}


SOCKETS = Path("/tmp/bascule-nginx-chain-test")


def routes(*names: str) -> list[tuple[int, nc.Variant, int | Path]]:
    """nginx on 800N in front of each variant, on 900N or (a ``unix`` variant) its socket under SOCKETS."""
    return [(8000 + i, VARIANTS[name], nc.socket_path(SOCKETS, VARIANTS[name]) if VARIANTS[name].unix else 9000 + i)
            for i, name in enumerate(names)]


def server_block(conf: str, port: int) -> str:
    return conf.split(f"listen 127.0.0.1:{port} ", 1)[1].split("    }\n", 1)[0]


def upstream_block(conf: str, port: int) -> str:
    return conf.split(f"upstream up_{port} {{", 1)[1].split("}", 1)[0]


def test_conf_passes_each_variant_its_own_way(tmp_path: Path) -> None:
    conf = nc.nginx_conf(tmp_path, routes("uwsgi", "bascule-http", "bascule-fastcgi", "bascule-scgi"), keepalive=48)
    assert "include /etc/nginx/uwsgi_params;" in server_block(conf, 8000)
    assert "uwsgi_pass up_8000;" in server_block(conf, 8000)
    assert "keepalive" not in upstream_block(conf, 8000)  # nginx never reuses a uwsgi connection
    http = server_block(conf, 8001)
    assert "proxy_pass http://up_8001;" in http and "proxy_http_version 1.1;" in http
    assert 'proxy_set_header Connection "";' in http
    assert "keepalive 48;" in upstream_block(conf, 8001) and "server 127.0.0.1:9001;" in upstream_block(conf, 8001)
    assert "fastcgi_keep_conn on;" in server_block(conf, 8002) and "keepalive 48;" in upstream_block(conf, 8002)
    assert "scgi_pass up_8003;" in server_block(conf, 8003) and "keepalive" not in upstream_block(conf, 8003)
    # one set of settings for every variant
    assert conf.count("access_log off;") == 1 and conf.count("worker_processes 1;") == 1
    assert f"uwsgi_temp_path {tmp_path}/uwsgi;" in conf


def test_conf_passes_the_unix_variants_over_a_socket_without_keepalive(tmp_path: Path) -> None:
    conf = nc.nginx_conf(tmp_path, routes("bascule-http", "bascule-http-unix", "bascule-http-unix-loop"))
    for port, name in ((8001, "bascule-http-unix"), (8002, "bascule-http-unix-loop")):
        assert upstream_block(conf, port).split() == ["#", name, "server", f"unix:{SOCKETS}/{name}.sock;"]
        # the same proxy settings and headers as bascule-http: only the upstream block differs
        assert server_block(conf, port) == server_block(conf, 8000).replace("up_8000", f"up_{port}")
    assert "keepalive 32;" in upstream_block(conf, 8000)


def test_conf_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gopher"):
        nc.nginx_conf(tmp_path, [(1, nc.Variant("x", "gopher", "bascule"), 2)])


@pytest.mark.skipif(shutil.which(nc.NGINX) is None, reason="nginx is not installed")
def test_conf_is_valid_nginx(tmp_path: Path) -> None:
    names = [n for n in VARIANTS if not n.endswith("-loop")]
    conf = nc.nginx_conf(tmp_path, routes(*names))
    (tmp_path / "nginx.conf").write_text(conf)
    done = subprocess.run([nc.NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                           "-e", str(tmp_path / "error.log")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_upstream_commands() -> None:
    uwsgi = nc.upstream_argv(VARIANTS["uwsgi"], 3031, "/py", "/bin/uwsgi", "--processes 1")
    assert uwsgi[:3] == ["/bin/uwsgi", "--socket", "127.0.0.1:3031"] and uwsgi[-2:] == ["--processes", "1"]
    loop = nc.upstream_argv(VARIANTS["bascule-uwsgi-loop"], 3031, "/py", "/bin/uwsgi", "", ["--x"])
    assert loop[:3] == ["/py", "-m", "bascule"] and loop[-1] == "--x"
    assert "uwsgi://127.0.0.1:3031" in loop and loop[loop.index("--wsgi-mode") + 1] == "loop"
    http = nc.upstream_argv(VARIANTS["bascule-http"], 8000, "/py", "/bin/uwsgi", "")
    assert http[http.index("--bind") + 1] == "127.0.0.1:8000"
    built = nc.with_builds(nc.base_variants(), {"cg": "/cg/python"})["bascule-scgi@cg"]
    assert nc.upstream_argv(built, 4000, "/py", "/bin/uwsgi", "")[0] == "/cg/python" and built.optional


def test_unix_upstream_commands(tmp_path: Path) -> None:
    unix = nc.upstream_argv(VARIANTS["bascule-http-unix"], tmp_path / "s.sock", "/py", "/bin/uwsgi", "")
    assert unix[:3] == ["/py", "-m", "bascule"] and unix[unix.index("--bind") + 1] == f"unix:{tmp_path}/s.sock"
    assert unix[unix.index("--wsgi-mode") + 1] == "threads"
    loop = nc.upstream_argv(VARIANTS["bascule-http-unix-loop"], tmp_path / "s.sock", "/py", "/bin/uwsgi", "")
    assert loop[loop.index("--wsgi-mode") + 1] == "loop"
    # another protocol or uWSGI given a path would bind it the same way
    assert "uwsgi://unix:/run/u.sock" in nc.upstream_argv(VARIANTS["bascule-uwsgi"], Path("/run/u.sock"), "/py",
                                                          "/bin/uwsgi", "")
    assert nc.upstream_argv(VARIANTS["uwsgi"], Path("/run/u.sock"), "/py", "/bin/uwsgi", "")[1:3] == [
        "--socket", "/run/u.sock"]


def test_unix_variants_are_optional_and_keep_their_socket_through_a_build(tmp_path: Path) -> None:
    built = nc.with_builds(nc.base_variants(), {"c/g": "/cg/python"})["bascule-http-unix-loop@c/g"]
    assert (built.kind, built.mode, built.unix, built.optional, built.python, built.build) == (
        "http", "loop", True, True, "/cg/python", "c/g")
    assert nc.upstream_argv(built, tmp_path / "x.sock", "/py", "/bin/uwsgi", "")[0] == "/cg/python"
    assert nc.socket_path(tmp_path, built) == tmp_path / "bascule-http-unix-loop@c_g.sock"  # one file, not a dir
    assert not any(v.unix for v in nc.base_variants() if v.name in nc.DEFAULT_VARIANTS)
    assert [nc.bind_form(VARIANTS[n]) for n in ("bascule-http-unix", "bascule-scgi")] == ["unix:", "scgi://"]
    with pytest.raises(ValueError, match="107 bytes"):
        nc.socket_path(tmp_path / ("d" * 100), built)


#: A bascule that knows no Unix sockets: says so as a config error, exit 2, and tells whether the socket file
#: it was given was still there when it started.
NO_UNIX = """#!/bin/sh
for a; do case $a in unix:*) p=${a#unix:};; esac; done
if [ -e "$p" ]; then echo "stale file left"; fi
echo "bascule: bind 'unix:$p': write an IPv6 address in brackets"
exit 2
"""


def test_a_bascule_refusing_unix_is_skipped_after_the_stale_socket_went(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(NO_UNIX)
    fake.chmod(0o755)
    variant = VARIANTS["bascule-http-unix"]
    path = nc.socket_path(tmp_path, variant)
    with socket.socket(socket.AF_UNIX) as left:  # the last round's file: nobody listens on it any more
        left.bind(str(path))
    plan = nc.Plan(variants=[variant], scenarios=[nc.SCENARIOS["text"]], rounds=1, seconds=1, warmup=0,
                   connections=1, bascule_python=str(fake), bascule_args=(), server_cpu=None, client_cpu=None,
                   log_dir=tmp_path, uwsgi="uwsgi", uwsgi_args="", scratch=tmp_path, start_timeout=10,
                   routes={variant.name: (1, path)})  # nginx is not reached
    result = nc.measure(plan, variant, nc.SCENARIOS["text"], 0, 0, None)
    assert (result.status, result.note) == ("skipped", "this bascule refuses --bind unix:")
    log = (tmp_path / "bascule-http-unix-text-1.log").read_text()
    assert "bind 'unix:" in log and "stale" not in log


def test_refused_bind(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("bascule: bind 'fastcgi://127.0.0.1:9': write an IPv6 address in brackets\n")
    assert nc.refused_bind(2, log)
    assert not nc.refused_bind(1, log)  # a crash is a failure, not a missing listener
    assert not nc.refused_bind(2, tmp_path / "absent")


def rnd(variant: str, rps: float, scenario: str = "text", status: str = "ok") -> nc.Round:
    return nc.Round(variant, scenario, 1, status=status, rps=rps)


def test_acceptance_ratios_pair_the_same_mode_and_build() -> None:
    variants = list(nc.with_builds([VARIANTS[n] for n in nc.DEFAULT_VARIANTS], {"cg": "/cg/python"}).values())
    rps = {"uwsgi": 10_000, "bascule-uwsgi": 25_000, "bascule-uwsgi-loop": 30_000, "bascule-http": 25_000,
           "bascule-http-loop": 40_000, "bascule-uwsgi@cg": 15_000, "bascule-http@cg": 10_000}
    best = common.medians([rnd(name, value) for name, value in rps.items()])
    ratios = {(r.mine, r.theirs): r for r in nc.acceptance(best, variants, [nc.SCENARIOS["text"]])}
    assert ratios[("bascule-uwsgi", "uwsgi")].value == 2.5 and ratios[("bascule-uwsgi", "uwsgi")].met
    assert ratios[("bascule-uwsgi", "bascule-http")].value == 1.0
    loop = ratios[("bascule-uwsgi-loop", "bascule-http-loop")]
    assert loop.value == 0.75 and loop.target == 0.9 and loop.met is False
    assert ratios[("bascule-uwsgi@cg", "bascule-http@cg")].value == 1.5
    # a side with no ok round has no ratio, and no verdict
    assert ratios[("bascule-uwsgi-loop@cg", "uwsgi")].value is None
    assert ratios[("bascule-uwsgi-loop@cg", "uwsgi")].met is None
    assert len(ratios) == 8


def test_parse_args_variants_and_builds() -> None:
    args = nc.parse_args(["--bascule-build", "cg=/cg/python"])
    names = [v.name for v in args.variant_list]
    assert names[:5] == list(nc.DEFAULT_VARIANTS) and "bascule-uwsgi@cg" in names and "uwsgi@cg" not in names
    assert len(nc.parse_args(["--all"]).variant_list) == len(nc.base_variants())
    assert "bascule-http-unix" not in names and "bascule-http-unix@cg" not in names  # opt-in, like FastCGI
    unix = nc.parse_args(["--bascule-build", "cg=/cg/python", "--variants", "bascule-http,bascule-http-unix@cg"])
    assert [(v.name, v.unix) for v in unix.variant_list] == [("bascule-http", False), ("bascule-http-unix@cg", True)]
    with pytest.raises(SystemExit):
        nc.parse_args(["--variants", "uwsgi,nope"])
    with pytest.raises(SystemExit):
        nc.parse_args(["--bascule-build", "no-equals-sign"])


def test_wrk_argv_posts_from_the_shared_lua_script(tmp_path: Path) -> None:
    echo = nc.wrk_argv(tmp_path, nc.SCENARIOS["echo"], 8080, 2.4, 32, "1")
    script = tmp_path / f"post-{nc.ECHO_SIZE}.lua"
    assert echo == ["taskset", "-c", "1", "wrk", "-t1", "-c32", "-d2s", "--timeout", "5s", "--latency", "-s",
                    str(script), "http://127.0.0.1:8080/echo"]
    assert f'string.rep("a", {nc.ECHO_SIZE})' in script.read_text()
    assert nc.wrk_argv(tmp_path, nc.SCENARIOS["text"], 1, 0.2, 4, None) == [
        "wrk", "-t1", "-c4", "-d1s", "--timeout", "5s", "--latency", "http://127.0.0.1:1/"]
