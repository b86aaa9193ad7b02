"""Logging setup for the ``bascule.error`` and ``bascule.access`` loggers (stdlib logging only).

Without ``--log-config`` bascule installs two handlers of its own (errors to stderr, access lines to
stdout) and leaves the root logger alone, so an app's own logging configuration is not disturbed. With
``--log-config`` the file decides everything: JSON or YAML go to dictConfig, INI to fileConfig.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

from bascule.accesslog import DEFAULT_FORMAT, JSON, JSON_FORMAT
from bascule.config import Config
from bascule.errors import ConfigError

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG, "trace": TRACE}


def level_of(name: str) -> int:
    return _LEVELS[name]


def configure_logging(config: Config) -> None:
    """Apply --log-config, or bascule's default handlers at --log-level."""
    error_log = logging.getLogger("bascule.error")
    access_log = logging.getLogger("bascule.access")
    if config.log_config:
        _load_file(config.log_config)
    else:
        for logger, stream, fmt in (
            (error_log, sys.stderr, "%(asctime)s [%(process)d] %(levelname)s: %(message)s"),
            # accesslog.AccessLog writes this one itself; a JSON line stands alone, so that it parses
            (access_log, sys.stdout, JSON_FORMAT if config.access_log_format == JSON else DEFAULT_FORMAT),
        ):
            for handler in list(logger.handlers):
                if getattr(handler, "_bascule_default", False):
                    logger.removeHandler(handler)
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter(fmt))
            handler._bascule_default = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False
    error_log.setLevel(level_of(config.log_level))
    if not config.access_log:
        access_log.setLevel(logging.WARNING)
    elif access_log.level == logging.NOTSET or access_log.level > logging.INFO:
        access_log.setLevel(logging.INFO)


def _load_file(path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"log config file {path!r} does not exist")
    suffix = file.suffix.lower()
    try:
        if suffix == ".json":
            _dict_config(json.loads(file.read_text()), path)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path}: YAML log configs need PyYAML: pip install 'bascule[yaml]'") from None
            _dict_config(yaml.safe_load(file.read_text()), path)
        elif suffix in (".ini", ".cfg", ".conf"):
            logging.config.fileConfig(path, disable_existing_loggers=False)
        else:
            raise ConfigError(f"log config {path!r}: use a .json, .yaml or .ini file")
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, ImportError, configparser.Error) as exc:
        raise ConfigError(f"log config {path!r} is invalid: {exc}") from None


def _dict_config(data: Any, path: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"log config {path!r} must hold a mapping (a dictConfig dictionary)")
    data.setdefault("version", 1)
    data.setdefault("disable_existing_loggers", False)
    logging.config.dictConfig(data)


def reopen_log_files() -> None:
    """SIGUSR1: reopen every logging file handler, so logrotate can move the files away (as gunicorn does).

    Streams the process was started with (stderr redirected by systemd or a shell) have no name to reopen;
    rotate those with ``copytruncate`` or let journald keep them.
    """
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    seen: set[int] = set()
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen:
                seen.add(id(handler))
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
