"""Tests for bascule.cli: flags, BASCULE_* environment, config files, precedence, errors and the docs table."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bascule import __version__
from bascule.cli import build_parser, load_config, main, option_specs, options_markdown
from bascule.config import Config
from bascule.errors import ConfigError, StartupError

ROOT = Path(__file__).resolve().parent.parent
BOOL_SPECS = [spec for spec in option_specs() if spec.kind is bool]


def load(tmp_path: Path, *argv: str, env: Mapping[str, str] | None = None) -> Config:
    """load_config isolated from the real environment and working directory."""
    return load_config(list(argv), environ=dict(env or {}), cwd=str(tmp_path))


def config_error(tmp_path: Path, *argv: str, env: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, *argv, env=env)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- derivation from Config ---------------------------------------------------------------------------


def test_one_spec_per_config_field_in_order() -> None:
    assert [spec.name for spec in option_specs()] == [f.name for f in dataclasses.fields(Config)]


def test_spellings_are_derived_from_field_names() -> None:
    specs = {spec.name: spec for spec in option_specs()}
    assert specs["app_dir"].flags == ("--app-dir",)
    assert specs["access_log"].flags == ("--access-log", "--no-access-log")
    assert specs["server_header"].flags == ("--server-header", "--no-server-header")
    assert specs["app"].flags == ()
    assert specs["timeout_keep_alive"].env_var == "BASCULE_TIMEOUT_KEEP_ALIVE"
    assert specs["config"].file_key is None
    assert specs["mount"].repeated and specs["header"].repeated
    assert specs["limit_concurrency"].optional and specs["limit_concurrency"].kind is int


def test_every_flag_is_in_the_parser() -> None:
    known = {s for action in build_parser()._actions for s in action.option_strings}
    for spec in option_specs():
        assert set(spec.flags) <= known


def test_parser_leaves_out_options_not_given() -> None:
    assert vars(build_parser().parse_args([])) == {}
    assert vars(build_parser().parse_args(["--port", "1"])) == {"port": 1}


# -- command line -------------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "main:app") == Config(app="main:app")


def test_each_type_from_flags(tmp_path: Path) -> None:
    config = load(
        tmp_path, "main:app",
        "--port", "9001",                       # int
        "--timeout-keep-alive", "2.5",          # float
        "--timeout-graceful-shutdown", "3",     # float given as an integer
        "--uds", "/tmp/b.sock",                 # str | None
        "--limit-concurrency", "10",            # int | None
        "--root-path", "/api",                  # str
        "--interface", "wsgi",                  # str with choices
        "--mount", "/a=a:app", "--mount", "/b=b:app",  # tuple[str, ...]
        "--header", "X-A: 1, 2", "--header", "X-B:3",
    )
    assert config.port == 9001
    assert config.timeout_keep_alive == 2.5
    assert config.timeout_graceful_shutdown == 3.0 and isinstance(config.timeout_graceful_shutdown, float)
    assert config.uds == "/tmp/b.sock"
    assert config.limit_concurrency == 10
    assert config.root_path == "/api"
    assert config.interface == "wsgi"
    assert config.mount == ("/a=a:app", "/b=b:app")
    assert config.header == ("X-A: 1, 2", "X-B:3")


def test_equals_spelling(tmp_path: Path) -> None:
    assert load(tmp_path, "main:app", "--port=9002").port == 9002


def test_empty_value_unsets_an_optional_option(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("limit_concurrency = 5\nuds = '/x'\n")
    config = load(tmp_path, "main:app", "--limit-concurrency", "", "--uds", "")
    assert config.limit_concurrency is None and config.uds is None


BOOL_NEEDS = {"http3": ("--ssl-certfile", "c.pem"), "http3_retry": ("--http3", "--ssl-certfile", "c.pem"),
              "http3_0rtt": ("--http3", "--ssl-certfile", "c.pem")}
"""Flags that only apply with others: what each takes beside it to be valid."""


@pytest.mark.parametrize("spec", BOOL_SPECS, ids=lambda s: s.name)
def test_bool_flags_both_ways(tmp_path: Path, spec: Any) -> None:
    on, off = spec.flags
    needs = BOOL_NEEDS.get(spec.name, ())
    assert getattr(load(tmp_path, "main:app", on, *needs), spec.name) is True
    assert getattr(load(tmp_path, "main:app", off, *needs), spec.name) is False


def test_uvicorn_spellings(tmp_path: Path) -> None:
    config = load(tmp_path, "main:app", "--no-access-log", "--no-server-header", "--no-date-header", "--factory")
    assert (config.access_log, config.server_header, config.date_header, config.factory) == (
        False, False, False, True)


def test_mount_without_positional_app(tmp_path: Path) -> None:
    config = load(tmp_path, "--mount", "/=main:app")
    assert config.app is None and config.mount == ("/=main:app",)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"bascule {__version__}\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--no-access-log" in out and "BASCULE_PORT" in out and "MODULE:ATTR" in out


def test_python_dash_m_version() -> None:
    result = subprocess.run([sys.executable, "-m", "bascule", "--version"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0
    assert result.stdout == "bascule 0.1.0\n"


def test_python_dash_m_error_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASCULE_")}
    result = subprocess.run([sys.executable, "-m", "bascule", "--prot", "1", "main:app"], capture_output=True,
                            text=True, timeout=30, check=False, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr == "bascule: unknown option --prot (did you mean --port?)\n"
    assert result.stdout == ""


# -- command-line errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["--prot", "1", "main:app"], "unknown option --prot (did you mean --port?)"),
    (["--prot=1", "main:app"], "unknown option --prot (did you mean --port?)"),
    (["main:app", "--no-acces-log"], "unknown option --no-acces-log (did you mean --no-access-log?)"),
    (["main:app", "--wsgi-thread", "4"], "unknown option --wsgi-thread (did you mean --wsgi-threads?)"),
    (["main:app", "--workerz", "4"], "unknown option --workerz (did you mean --workers?)"),
    (["main:app", "--zzz", "4"], "unknown option --zzz (run 'bascule --help' to list the options)"),
    (["main:app", "-b", "0.0.0.0:80"], "unknown option -b (run 'bascule --help' to list the options)"),
])
def test_unknown_flag(tmp_path: Path, argv: list[str], expected: str) -> None:
    assert config_error(tmp_path, *argv) == expected


def test_no_abbreviations(tmp_path: Path) -> None:
    assert config_error(tmp_path, "main:app", "--wsgi", "4").startswith("unknown option --wsgi")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--port", "abc"], "--port expects an integer, got 'abc'"),
    (["--port", "80.5"], "--port expects an integer, got '80.5'"),
    (["--backlog", ""], "--backlog expects an integer, got ''"),
    (["--timeout-keep-alive", "soon"], "--timeout-keep-alive expects a number, got 'soon'"),
    (["--timeout-keep-alive", "nan"], "--timeout-keep-alive expects a number, got 'nan'"),
    (["--limit-concurrency", "many"], "--limit-concurrency expects an integer, got 'many'"),
    (["--port"], "--port expects a value: write --port PORT"),
    (["--factory=yes"], "--factory/--no-factory takes no value; write --factory or --no-factory"),
])
def test_bad_flag_values(tmp_path: Path, argv: list[str], expected: str) -> None:
    assert config_error(tmp_path, "main:app", *argv) == expected


def test_two_positional_apps(tmp_path: Path) -> None:
    assert config_error(tmp_path, "a:app", "b:app").startswith("unexpected argument 'b:app'")


def test_parse_args_error_is_a_config_error_not_a_usage_dump() -> None:
    with pytest.raises(ConfigError, match=r"^unknown option --prot \(did you mean --port\?\)$"):
        build_parser().parse_args(["--prot", "1"])
    with pytest.raises(ConfigError, match=r"^--port expects an integer, got 'abc'$"):
        build_parser().parse_args(["--port", "abc"])


def test_validation_errors_from_config_are_config_errors(tmp_path: Path) -> None:
    assert "port must be between 0 and 65535" in config_error(tmp_path, "main:app", "--port", "70000")
    assert "did you mean 'asgi3'" in config_error(tmp_path, "main:app", "--interface", "asgi")
    assert config_error(tmp_path, "main:app", "--wsgi-thread-policy", "idle").startswith(
        "wsgi_thread_policy must be one of auto, batch, inherit; got 'idle'")
    assert config_error(tmp_path).startswith("no app given")


# -- environment --------------------------------------------------------------------------------------


def test_each_type_from_env(tmp_path: Path) -> None:
    config = load(tmp_path, env={
        "BASCULE_APP": "main:app",
        "BASCULE_PORT": "9003",
        "BASCULE_TIMEOUT_KEEP_ALIVE": "1.5",
        "BASCULE_ACCESS_LOG": "off",
        "BASCULE_LIMIT_CONCURRENCY": "7",
        "BASCULE_UDS": "/tmp/s",
        "BASCULE_MOUNT": "/a=a:app\n/b=b:app\n",
        "BASCULE_HEADER": "X-A: 1, 2\n\n  X-B: 3  ",
        "BASCULE_LOG_LEVEL": "debug",
    })
    assert config.app == "main:app"
    assert config.port == 9003
    assert config.timeout_keep_alive == 1.5
    assert config.access_log is False
    assert config.limit_concurrency == 7
    assert config.uds == "/tmp/s"
    assert config.mount == ("/a=a:app", "/b=b:app")
    assert config.header == ("X-A: 1, 2", "X-B: 3")  # commas stay inside a value: lines split values
    assert config.log_level == "debug"


@pytest.mark.parametrize(("word", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("On", True), (" true ", True),
    ("0", False), ("false", False), ("No", False), ("OFF", False),
])
def test_env_bool_words(tmp_path: Path, word: str, expected: bool) -> None:
    assert load(tmp_path, "main:app", env={"BASCULE_FACTORY": word}).factory is expected


def test_env_bad_bool_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, "main:app", env={"BASCULE_ACCESS_LOG": "maybe"})
    assert message == "BASCULE_ACCESS_LOG expects a boolean (1/0, true/false, yes/no, on/off), got 'maybe'"


def test_env_bad_int_names_the_variable(tmp_path: Path) -> None:
    assert config_error(tmp_path, "main:app", env={"BASCULE_PORT": "abc"}) == (
        "BASCULE_PORT expects an integer, got 'abc'")


def test_env_empty_unsets_optional(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("limit_concurrency = 5\n")
    assert load(tmp_path, "main:app", env={"BASCULE_LIMIT_CONCURRENCY": ""}).limit_concurrency is None


def test_env_unknown_bascule_variable(tmp_path: Path) -> None:
    assert config_error(tmp_path, "main:app", env={"BASCULE_PROT": "1"}) == (
        "unknown environment variable BASCULE_PROT (did you mean BASCULE_PORT?)")
    assert config_error(tmp_path, "main:app", env={"BASCULE_XYZZY": "1"}).startswith(
        "unknown environment variable BASCULE_XYZZY (unset it")


def test_env_other_variables_are_ignored(tmp_path: Path) -> None:
    config = load(tmp_path, "main:app", env={"PORT": "1", "bascule_port": "2", "UVICORN_PORT": "3", "BASCULEX": ""})
    assert config.port == 8000


# -- config files -------------------------------------------------------------------------------------


def test_bascule_toml(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text(
        'app = "main:app"\nport = 9004\nlog-level = "debug"\naccess_log = false\n'
        'timeout-keep-alive = 2\nmount = ["/a=a:app"]\nheader = ["X-A: 1"]\n'
    )
    config = load(tmp_path)
    assert config.app == "main:app" and config.port == 9004 and config.log_level == "debug"
    assert config.access_log is False
    assert config.timeout_keep_alive == 2.0 and isinstance(config.timeout_keep_alive, float)
    assert config.mount == ("/a=a:app",) and config.header == ("X-A: 1",)
    assert config.config == str(tmp_path / "bascule.toml")


def test_pyproject_tool_bascule(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.bascule]\nport = 9005\n')
    config = load(tmp_path, "main:app")
    assert config.port == 9005
    assert config.config == str(tmp_path / "pyproject.toml")


def test_pyproject_without_tool_bascule_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.ruff]\nline-length = 1\n')
    config = load(tmp_path, "main:app")
    assert config == Config(app="main:app")


def test_bascule_toml_preferred_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.bascule]\nport = 1111\nhost = '0.0.0.0'\n")
    (tmp_path / "bascule.toml").write_text("port = 2222\n")
    config = load(tmp_path, "main:app")
    assert config.port == 2222 and config.host == "127.0.0.1"  # the files are not merged


def test_explicit_config_file(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("port = 1111\n")
    (tmp_path / "prod.toml").write_text("port = 3333\n")
    assert load(tmp_path, "main:app", "--config", "prod.toml").port == 3333  # relative to cwd
    assert load(tmp_path, "main:app", "--config", str(tmp_path / "prod.toml")).port == 3333
    assert load(tmp_path, "main:app", env={"BASCULE_CONFIG": "prod.toml"}).port == 3333


def test_flag_config_wins_over_env_config(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("port = 1111\n")
    (tmp_path / "b.toml").write_text("port = 2222\n")
    assert load(tmp_path, "main:app", "--config", "a.toml", env={"BASCULE_CONFIG": "b.toml"}).port == 1111


def test_explicit_pyproject_reads_tool_bascule(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text("[tool.bascule]\nport = 4444\n")
    assert load(tmp_path, "main:app", "--config", "sub/pyproject.toml").port == 4444


def test_empty_config_reads_no_file(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("port = 1111\n")
    config = load(tmp_path, "main:app", "--config", "")
    assert config.port == 8000 and config.config is None


def test_missing_config_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, "main:app", "--config", "nope.toml")
    assert message == f"config file {tmp_path / 'nope.toml'} does not exist (given by --config); check the path"
    assert "given by BASCULE_CONFIG" in config_error(tmp_path, "main:app", env={"BASCULE_CONFIG": "nope.toml"})


def test_config_file_is_a_directory(tmp_path: Path) -> None:
    assert config_error(tmp_path, "main:app", "--config", ".").startswith("cannot read config file")


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("port = = 1\n")
    message = config_error(tmp_path, "main:app")
    assert message.startswith(f"{tmp_path / 'bascule.toml'} is not valid TOML: ")
    assert "line 1" in message


def test_toml_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_bytes(b"host = '\xff'\n")
    assert config_error(tmp_path, "main:app").endswith("is not valid TOML: it is not UTF-8 text")


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bascule.toml"
    path.write_text("prot = 1\n")
    assert config_error(tmp_path, "main:app") == f"unknown option 'prot' in {path} (did you mean 'port'?)"
    path.write_text("log-levl = 'debug'\n")
    assert config_error(tmp_path, "main:app").endswith("(did you mean 'log_level'?)")
    path.write_text("[server]\nport = 1\n")
    assert config_error(tmp_path, "main:app").startswith("unknown option 'server' in")


def test_unknown_key_in_pyproject_names_the_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.bascule]\nprot = 1\n")
    assert config_error(tmp_path, "main:app") == (
        f"unknown option 'prot' in [tool.bascule] in {path} (did you mean 'port'?)")


@pytest.mark.parametrize(("line", "expected"), [
    ('port = "abc"', "option 'port' in {path} expects an integer, got 'abc'"),
    ('port = "8000"', "option 'port' in {path} expects an integer, got '8000' (write it without quotes)"),
    ("port = true", "option 'port' in {path} expects an integer, got true"),
    ("port = 1.5", "option 'port' in {path} expects an integer, got 1.5"),
    ("access-log = 1", "option 'access-log' in {path} expects true or false, got 1"),
    ("access_log = 'no'", "option 'access_log' in {path} expects true or false, got 'no'"),
    ("access_log = 'false'", "option 'access_log' in {path} expects true or false, got 'false' (write it "
                             "without quotes)"),
    ("timeout_keep_alive = '2.5'", "option 'timeout_keep_alive' in {path} expects a number, got '2.5' (write "
                                   "it without quotes)"),
    ("timeout_keep_alive = 'x'", "option 'timeout_keep_alive' in {path} expects a number, got 'x'"),
    ("timeout_keep_alive = nan", "option 'timeout_keep_alive' in {path} expects a number, got nan"),
    ("host = 1", "option 'host' in {path} expects a string, got 1"),
    ("limit_concurrency = ''", "option 'limit_concurrency' in {path} expects an integer, got ''"),
    ("mount = '/a=a:app'", "option 'mount' in {path} expects an array of strings, got '/a=a:app'"),
    ("header = [1]", "option 'header' in {path} expects an array of strings, got [1]"),
    ("host = {a = 1}", "option 'host' in {path} expects a string, got a table"),
])
def test_wrong_types_in_file(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bascule.toml"
    path.write_text(line + "\n")
    assert config_error(tmp_path, "main:app") == expected.format(path=path)


def test_config_key_not_allowed_in_file(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("config = 'other.toml'\n")
    assert "cannot be set in a config file" in config_error(tmp_path, "main:app")


def test_same_key_twice_in_file(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("log-level = 'debug'\nlog_level = 'info'\n")
    assert "is set twice" in config_error(tmp_path, "main:app")


def test_tool_bascule_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool]\nbascule = 1\n")
    assert "must be a table" in config_error(tmp_path, "main:app")


def test_file_values_are_validated_by_config(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("port = 70000\n")
    assert "port must be between 0 and 65535" in config_error(tmp_path, "main:app")


# -- precedence ---------------------------------------------------------------------------------------


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text(
        "app = 'file:app'\nport = 1001\nhost = '10.0.0.1'\nlog_level = 'error'\nbacklog = 10\n")
    env = {"BASCULE_HOST": "10.0.0.2", "BASCULE_LOG_LEVEL": "warning", "BASCULE_BACKLOG": "20"}
    config = load(tmp_path, "--log-level", "debug", "--backlog", "30", env=env)
    assert config.app == "file:app"          # file only
    assert config.port == 1001               # file only
    assert config.host == "10.0.0.2"         # env over file
    assert config.log_level == "debug"       # flag over env over file
    assert config.backlog == 30
    assert config.wsgi_threads == 16         # nobody: default


def test_flags_override_only_what_they_set(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("access_log = false\nserver_header = false\n")
    config = load(tmp_path, "main:app", "--server-header")
    assert config.access_log is False and config.server_header is True


def test_env_overrides_file_bool(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("access_log = false\n")
    assert load(tmp_path, "main:app", env={"BASCULE_ACCESS_LOG": "yes"}).access_log is True
    assert load(tmp_path, "main:app", "--no-access-log", env={"BASCULE_ACCESS_LOG": "yes"}).access_log is False


def test_positional_app_over_env_over_file(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("app = 'file:app'\n")
    assert load(tmp_path).app == "file:app"
    assert load(tmp_path, env={"BASCULE_APP": "env:app"}).app == "env:app"
    assert load(tmp_path, "cli:app", env={"BASCULE_APP": "env:app"}).app == "cli:app"


def test_repeatable_replaces_lower_level_list(tmp_path: Path) -> None:
    (tmp_path / "bascule.toml").write_text("mount = ['/f=f:app']\nheader = ['X-F: 1']\n")
    config = load(tmp_path, "--mount", "/c=c:app", env={"BASCULE_HEADER": "X-E: 1"})
    assert config.mount == ("/c=c:app",)
    assert config.header == ("X-E: 1",)


# -- main() -------------------------------------------------------------------------------------------


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """main() reads os.environ and the cwd: give it a clean environment and an empty directory."""
    for key in list(os.environ):
        if key.startswith("BASCULE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stands in for bascule.run (the process entry), recording the Config main() would serve."""
    state = types.SimpleNamespace(configs=[], result=0, raises=None)

    def run_config(config: Config) -> int:
        state.configs.append(config)
        if state.raises is not None:
            raise state.raises
        return int(state.result)

    module = types.ModuleType("bascule.run")
    module.run_config = run_config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bascule.run", module)
    return state


def test_main_serves_the_config(isolated: Path, fake_server: types.SimpleNamespace,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / "bascule.toml").write_text("port = 9006\n")
    monkeypatch.setenv("BASCULE_HOST", "0.0.0.0")
    fake_server.result = 7
    assert main(["main:app", "--no-access-log"]) == 7
    [config] = fake_server.configs
    assert (config.app, config.port, config.host, config.access_log) == ("main:app", 9006, "0.0.0.0", False)


def test_main_reports_server_errors_in_one_line(isolated: Path, fake_server: types.SimpleNamespace,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fake_server.raises = StartupError("cannot bind 127.0.0.1:8000: address in use")
    assert main(["main:app"]) == StartupError.exit_code
    captured = capsys.readouterr()
    assert captured.err == "bascule: cannot bind 127.0.0.1:8000: address in use\n"


def test_main_keyboard_interrupt_is_quiet(isolated: Path, fake_server: types.SimpleNamespace,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fake_server.raises = KeyboardInterrupt()
    assert main(["main:app"]) == 130
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(("argv", "env", "file", "expected"), [
    (["--prot", "1", "main:app"], {}, None, "bascule: unknown option --prot (did you mean --port?)\n"),
    (["main:app", "--port", "abc"], {}, None, "bascule: --port expects an integer, got 'abc'\n"),
    (["main:app"], {"BASCULE_PROT": "1"}, None,
     "bascule: unknown environment variable BASCULE_PROT (did you mean BASCULE_PORT?)\n"),
    (["main:app"], {}, "prot = 1\n", "bascule: unknown option 'prot' in {path} (did you mean 'port'?)\n"),
    (["main:app"], {}, "port = 'abc'\n", "bascule: option 'port' in {path} expects an integer, got 'abc'\n"),
    ([], {}, None, "bascule: no app given: pass MODULE:ATTR (for example 'main:app'), --mount "
                   "/PREFIX=MODULE:ATTR or --static /PREFIX=DIR\n"),
])
def test_main_config_errors_are_one_line_and_never_import_the_server(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], env: dict[str, str], file: str | None, expected: str,
) -> None:
    monkeypatch.delitem(sys.modules, "bascule.run", raising=False)
    monkeypatch.delitem(sys.modules, "bascule.server", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = isolated / "bascule.toml"
    if file is not None:
        path.write_text(file)
    assert main(argv) == ConfigError.exit_code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == expected.format(path=path)
    assert "bascule.server" not in sys.modules
    assert "bascule.run" not in sys.modules


# -- docs ---------------------------------------------------------------------------------------------


def test_docs_options_md_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert committed == options_markdown(), "docs/options.md is stale: run python scripts/gen_options_doc.py"


def test_docs_table_has_one_row_per_option() -> None:
    rows = [line for line in options_markdown().splitlines() if line.startswith("| ") and "`BASCULE_" in line]
    assert len(rows) == len(option_specs())
    for spec, row in zip(option_specs(), rows, strict=True):
        assert f"`{spec.env_var}`" in row
        for choice in spec.choices or ():
            assert f"`{choice}`" in row


def test_gen_options_doc_check() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_options_doc.py"), "--check"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
