"""Command line, ``BASCULE_*`` environment and TOML config file → one :class:`~bascule.config.Config`.

Every option is declared once, as a field of :class:`Config`; this module derives the flags, the
environment variable names, the config-file keys and the docs table from those fields, so nothing here
lists an option by name. Precedence is defaults < config file < environment < command line, and each
level overrides only the options it actually sets (flags use ``argparse.SUPPRESS`` so that an option
left off the command line is absent, not "default"). Errors are :class:`ConfigError` with one line that
says what is wrong and what to do; :func:`main` prints it and returns the error's exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bascule import __version__
from bascule.config import Config, did_you_mean
from bascule.errors import BasculeError, ConfigError

ENV_PREFIX = "BASCULE_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
CONFIG_FILE_NAME = "bascule.toml"
PYPROJECT_NAME = "pyproject.toml"
WEB_CONCURRENCY = "WEB_CONCURRENCY"
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"  # uvicorn's and gunicorn's variable: below every bascule source

# What one value of each scalar type is called in error messages and in the docs.
_EXPECTS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclasses.dataclass(frozen=True, slots=True)
class OptionSpec:
    """One Config field as the outside world spells it, derived from the field and its type hint."""

    name: str
    kind: type  # str, int, float or bool: the type of one value
    optional: bool  # ``X | None``: an empty string from the command line or environment means "unset"
    repeated: bool  # ``tuple[str, ...]``: a repeatable flag, an array in TOML, one value per line in env
    default: Any
    help: str
    choices: tuple[str, ...] | None
    flag: str | None  # None for the positional ``app``
    metavar: str | None
    cli_only: bool  # not allowed in a config file (``config`` itself)

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flags(self) -> tuple[str, ...]:
        """Every command-line spelling: booleans get a ``--no-`` twin, like uvicorn's ``--no-access-log``."""
        if self.flag is None:
            return ()
        if self.kind is bool:
            return (self.flag, "--no-" + self.flag.removeprefix("--"))
        return (self.flag,)

    @property
    def file_key(self) -> str | None:
        return None if self.cli_only else self.name


def option_specs() -> tuple[OptionSpec, ...]:
    """The specs of every Config field, in declaration order (which is also the order in --help and docs)."""
    hints = typing.get_type_hints(Config)
    specs = []
    for f in dataclasses.fields(Config):
        kind, optional, repeated = _analyse_type(f.name, hints[f.name])
        meta = f.metadata
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:  # pragma: no cover - every option has a default so `bascule` works with few flags
            raise TypeError(f"Config.{f.name} has no default; every option needs one")
        specs.append(OptionSpec(
            name=f.name, kind=kind, optional=optional, repeated=repeated, default=default,
            help=meta.get("help", ""), choices=meta.get("choices"),
            flag=None if meta.get("positional") else (meta.get("flag") or "--" + f.name.replace("_", "-")),
            metavar=meta.get("metavar"), cli_only=bool(meta.get("cli_only")),
        ))
    return tuple(specs)


def _analyse_type(name: str, hint: Any) -> tuple[type, bool, bool]:
    """(scalar type, optional, repeated) for a field's type hint; other types are a programming error."""
    if hint in (str, int, float, bool):
        return hint, False, False
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args == (str, Ellipsis):
        return str, False, True
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        if inner in (str, int, float, bool):  # bool | None: on, off, or decided by other options
            return inner, True, False
    raise TypeError(f"Config.{name} has type {hint!r}, which the CLI cannot read: use str, int, float, "
                    f"bool, str | None, int | None, bool | None or tuple[str, ...]")


# -- converting values -------------------------------------------------------------------------------


def _from_text(spec: OptionSpec, text: str, where: str) -> Any:
    """Convert a command-line or environment string; ``where`` names the flag or variable for errors."""
    if spec.repeated:  # only the environment gets here: one value per line, blank lines ignored
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    if spec.optional and not text.strip():
        return None
    if spec.kind is str:
        return text
    if spec.kind is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ConfigError(f"{where} expects a boolean (1/0, true/false, yes/no, on/off), got {text!r}")
    try:
        value = spec.kind(text)
    except ValueError:
        raise ConfigError(f"{where} expects {_EXPECTS[spec.kind]}, got {text!r}") from None
    if spec.kind is float and math.isnan(value):
        raise ConfigError(f"{where} expects a number, got {text!r}")
    return value


def _from_toml(spec: OptionSpec, value: Any, where: str) -> Any:
    """Check a TOML value's type strictly: TOML has real types, so '8000' is not an integer."""
    if spec.repeated:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ConfigError(f"{where} expects an array of strings, got {_toml_repr(value)}")
    if spec.kind is bool:
        ok = isinstance(value, bool)
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        hint = " (write it without quotes)" if _valid_unquoted(spec, value) else ""
        raise ConfigError(f"{where} expects {_EXPECTS[spec.kind]}, got {_toml_repr(value)}{hint}")
    return float(value) if spec.kind is float else value


def _valid_unquoted(spec: OptionSpec, value: Any) -> bool:
    """Whether a quoted TOML string would have been right without its quotes ('8000' for a port)."""
    if not isinstance(value, str) or spec.kind is str or spec.repeated:
        return False
    try:
        unquoted = tomllib.loads(f"v = {value}").get("v")
    except tomllib.TOMLDecodeError:
        return False
    if isinstance(unquoted, str):
        return False
    try:
        _from_toml(spec, unquoted, "")
    except ConfigError:
        return False
    return True


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


# -- the command line --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        unknown = re.fullmatch(r"unrecognized arguments: (.*)", message, re.DOTALL)
        if unknown:
            raise ConfigError(_unknown_arguments(unknown.group(1).split(), self))
        about = re.fullmatch(r"argument (\S+): (.*)", message, re.DOTALL)
        if about:
            name, detail = about.groups()
            if detail == "expected one argument":
                raise ConfigError(f"{name} expects a value: write {name} {_example(name)}")
            if detail.startswith("ignored explicit argument"):
                raise ConfigError(f"{name} takes no value; write {name.replace('/', ' or ')}")
            raise ConfigError(detail)  # our own converters' messages already name the flag
        raise ConfigError(message)


def _example(flag: str) -> str:
    for spec in option_specs():
        if spec.flag == flag:
            return spec.metavar or (spec.choices[0] if spec.choices else "VALUE")
    return "VALUE"


def _unknown_arguments(extras: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """The message for leftover arguments: the first unknown option with a suggestion, or a stray word."""
    known = [s for action in parser._actions for s in action.option_strings]
    for arg in extras:
        if arg.startswith("-") and arg != "-":
            flag = arg.partition("=")[0]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            if close:
                return f"unknown option {flag} (did you mean {close[0]}?)"
            return f"unknown option {flag} (run 'bascule --help' to list the options)"
    return (f"unexpected argument {extras[0]!r}: give one MODULE:ATTR app, and mount more with "
            f"--mount /PREFIX=MODULE:ATTR")


def _argparse_type(spec: OptionSpec, flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return _from_text(spec, text, flag)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _help_text(spec: OptionSpec) -> str:
    parts = [spec.help]
    if spec.choices:
        parts.append(f"One of: {', '.join(spec.choices)}.")
    parts.append(f"[default: {_default_text(spec)}; env: {spec.env_var}]")
    return " ".join(parts).replace("%", "%%")  # argparse %-formats help strings


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser, one argument per Config field; options not given are absent."""
    parser = _Parser(
        prog="bascule",
        description="Serve a WSGI or ASGI app (or several, with --mount).",
        epilog=(f"Every option can also be set in the environment ({ENV_PREFIX}<NAME>) or in a config file "
                f"(./{CONFIG_FILE_NAME}, or [tool.bascule] in ./{PYPROJECT_NAME}). The command line wins "
                f"over the environment, which wins over the file."),
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"bascule {__version__}")
    for spec in option_specs():
        help_text = _help_text(spec)
        if spec.flag is None:
            parser.add_argument(spec.name, nargs="?", metavar=spec.metavar, help=help_text,
                                type=_argparse_type(spec, spec.metavar or spec.name),
                                default=argparse.SUPPRESS)
        elif spec.kind is bool:
            parser.add_argument(spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction,
                                help=help_text, default=argparse.SUPPRESS)
        elif spec.repeated:
            parser.add_argument(spec.flag, dest=spec.name, action="append", metavar=spec.metavar,
                                help=help_text, default=argparse.SUPPRESS)
        else:
            metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else spec.metavar
            parser.add_argument(spec.flag, dest=spec.name, metavar=metavar, help=help_text,
                                type=_argparse_type(spec, spec.flag), default=argparse.SUPPRESS)
    return parser


def _read_argv(argv: Sequence[str]) -> dict[str, Any]:
    parser = build_parser()
    namespace, extras = parser.parse_known_args(list(argv))
    if extras:
        raise ConfigError(_unknown_arguments(extras, parser))
    values = vars(namespace)
    for spec in option_specs():
        if spec.repeated and spec.name in values:
            values[spec.name] = tuple(values[spec.name])
    return values


# -- the environment and the config file -------------------------------------------------------------


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Options from ``BASCULE_*`` variables; any other BASCULE_ variable is a typo and an error."""
    by_var = {spec.env_var: spec for spec in option_specs()}
    values: dict[str, Any] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        spec = by_var.get(var)
        if spec is None:  # compare without the shared prefix, which would make everything look close
            names = [name.removeprefix(ENV_PREFIX) for name in by_var]
            close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), names, n=1, cutoff=0.6)
            hint = (f"did you mean {ENV_PREFIX}{close[0]}?" if close
                    else "unset it; see 'bascule --help' for the names")
            raise ConfigError(f"unknown environment variable {var} ({hint})")
        values[spec.name] = _from_text(spec, environ[var], var)
    return values


def _load_toml(path: Path, named_by: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (given by {named_by}); check the path") \
            from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _pyproject_table(data: dict[str, Any], path: Path) -> dict[str, Any] | None:
    tool = data.get("tool")
    table = tool.get("bascule") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"tool.bascule in {path} must be a table: write [tool.bascule] and the options "
                          f"under it")
    return table


def _find_config_file(
    explicit: tuple[str, str | None] | None, cwd: Path
) -> tuple[Path, dict[str, Any], str] | None:
    """(path, table of options, description for errors) of the config file to read, or None.

    ``explicit`` is (how it was named, path) from --config or BASCULE_CONFIG; an empty path there means
    "read no file", which switches off discovery. A file called pyproject.toml is always read from its
    [tool.bascule] table; any other file holds the options at its top level.
    """
    if explicit is not None:
        named_by, given = explicit
        if given is None:
            return None
        path = cwd / Path(given).expanduser()
        data = _load_toml(path, named_by)
        if path.name == PYPROJECT_NAME:
            return path, _pyproject_table(data, path) or {}, f"[tool.bascule] in {path}"
        return path, data, str(path)
    own = cwd / CONFIG_FILE_NAME
    if own.is_file():
        return own, _load_toml(own, "discovery"), str(own)
    pyproject = cwd / PYPROJECT_NAME
    if pyproject.is_file():
        table = _pyproject_table(_load_toml(pyproject, "discovery"), pyproject)
        if table is not None:
            return pyproject, table, f"[tool.bascule] in {pyproject}"
    return None


def _read_table(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Options from a config-file table; keys may use '-' or '_'; unknown keys are errors."""
    specs = {spec.name: spec for spec in option_specs()}
    file_keys = [spec.file_key for spec in specs.values() if spec.file_key]
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        spec = specs.get(key)
        if spec is None:
            raise ConfigError(f"unknown option {raw_key!r} in {source}{did_you_mean(key, file_keys)}")
        if spec.file_key is None:
            raise ConfigError(f"option {raw_key!r} cannot be set in a config file ({source}); "
                              f"use {spec.flag} or {spec.env_var}")
        if key in values:
            raise ConfigError(f"option {raw_key!r} is set twice in {source} (also as {spelled[key]!r}); "
                              f"keep one")
        values[key] = _from_toml(spec, value, f"option {raw_key!r} in {source}")
        spelled[key] = raw_key
    return values


# -- putting it together -----------------------------------------------------------------------------


def load_config(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Config:
    """The Config that ``bascule ARGV`` would serve, without serving it (no side effects besides reading).

    Precedence is defaults < ``$WEB_CONCURRENCY`` (workers) and ``$FORWARDED_ALLOW_IPS`` < config file <
    environment < command line; a level overrides only the options it sets, and a repeatable option set at
    a level replaces the whole list from lower levels. The ``config`` option of the result is the path of
    the file that was read, if any. ``--help`` and ``--version`` print and raise SystemExit(0), as argparse does.
    """
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    base = Path(os.getcwd() if cwd is None else cwd)
    from_argv = _read_argv(args)
    from_env = _read_environ(env)
    explicit: tuple[str, str | None] | None = None
    if "config" in from_argv:
        explicit = ("--config", from_argv["config"])
    elif "config" in from_env:
        explicit = (f"{ENV_PREFIX}CONFIG", from_env["config"])
    found = _find_config_file(explicit, base)
    values: dict[str, Any] = {}
    if WEB_CONCURRENCY in env:  # the platform's worker count (Heroku, Render, ...): below every bascule source
        text = env[WEB_CONCURRENCY]
        if not text.strip().isdigit():
            raise ConfigError(f"{WEB_CONCURRENCY} expects a number of workers, got {text!r}")
        values["workers"] = int(text)
    if FORWARDED_ALLOW_IPS in env:
        values["forwarded_allow_ips"] = env[FORWARDED_ALLOW_IPS]
    if found is not None:
        path, table, source = found
        values.update(_read_table(table, source))
        values["config"] = str(path)
    values.update((k, v) for k, v in from_env.items() if k != "config")
    values.update((k, v) for k, v in from_argv.items() if k != "config")
    return Config(**values)


def main(argv: list[str] | None = None) -> int:
    """The ``bascule`` command: build the Config, serve it, and turn bascule's errors into one line."""
    try:
        try:
            config = load_config(argv)
        except SystemExit as exc:  # --help / --version: argparse printed and asked to exit
            return exc.code if isinstance(exc.code, int) else 0
        from bascule.run import run_config  # late, so a bad command line never loads the server

        return run_config(config)
    except BasculeError as exc:
        # One line, except an import failure's traceback tail (the user's own frames), kept below it.
        message = str(exc).strip() or type(exc).__name__
        print(f"bascule: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


# -- the docs table ----------------------------------------------------------------------------------


def _default_text(spec: OptionSpec) -> str:
    """The default as it would be written in bascule.toml, or 'unset'."""
    value = spec.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    return repr(value)


def _type_text(spec: OptionSpec) -> str:
    if spec.repeated:
        return "list of strings"
    name = _TYPE_NAMES[spec.kind]
    return f"{name} or unset" if spec.optional else name


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_DOC_INTRO = f"""\
# Options

<!-- Generated by scripts/gen_options_doc.py from bascule.config.Config; do not edit by hand. -->

Every option can be set in up to three places. Precedence is defaults < config file < environment <
command line, and each place overrides only the options it sets. A repeatable option (a list) set in
one place replaces the whole list from the places below it.

- **Command line**: `bascule [OPTIONS] [MODULE:ATTR]`. Boolean options come in pairs (`--access-log` /
  `--no-access-log`); repeatable options are given once per value (`--mount /a=a:app --mount /b=b:app`).
  Options that can be unset are unset by an empty value (`--uds ''`).
- **Environment**: `{ENV_PREFIX}<NAME>`. Booleans accept `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`
  (any case). Repeatable options take one value per line (newlines, not commas, because values such
  as headers may contain commas); blank lines are ignored. An empty value unsets an option that can be
  unset. Any other variable starting with `{ENV_PREFIX}` is an error, so typos do not go unnoticed.
- **Config file**: `--config FILE` (or `{ENV_PREFIX}CONFIG`); without it, `./{CONFIG_FILE_NAME}` if it
  exists, else the `[tool.bascule]` table of `./{PYPROJECT_NAME}`. A file named `{PYPROJECT_NAME}` given
  with `--config` is also read from its `[tool.bascule]` table; any other file holds the options at its
  top level. Keys may be written with `-` or `_`. Values are typed TOML: `port = 8000`, not
  `port = "8000"`; lists are arrays of strings. Unknown keys are errors. An empty `--config ''` reads
  no file at all.

"""


def options_markdown() -> str:
    """docs/options.md: one table row per Config field. A test keeps the committed file equal to this."""
    rows = [
        "| Option | Environment | Config file | Type | Default | Description |",
        "|---|---|---|---|---|---|",
    ]
    for spec in option_specs():
        if spec.flag is None:
            flags = f"{_code(spec.metavar or spec.name)} (positional)"
        else:
            value = "" if spec.kind is bool or spec.choices or not spec.metavar else " " + spec.metavar
            flags = ", ".join(_code(f + value) for f in spec.flags)
        key = _code(spec.file_key) if spec.file_key else "—"
        description = spec.help
        if spec.choices:
            description += " One of: " + ", ".join(_code(c) for c in spec.choices) + "."
        default = "unset" if spec.default is None else _code(_default_text(spec))
        cells = [flags, _code(spec.env_var), key, _type_text(spec), default, description]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return _DOC_INTRO + "\n".join(rows) + "\n"
