"""--reload: watch the source tree with watchfiles and tell the master which files changed.

The watching runs in a thread of the master (watchfiles blocks in Rust while it waits); the thread only
collects paths and wakes the master's loop, which restarts the workers (:mod:`bascule.supervisor`).
Workers under --reload are fresh interpreters rather than forks, so the thread is never forked.

What triggers a restart: ``*.py`` and the ``--reload-include`` globs, under the ``--reload-dir``
directories (default: ``--app-dir``), minus the ``--reload-exclude`` globs and what watchfiles ignores by
default (``.git``, ``__pycache__``, ``.venv``, ``node_modules``, editor swap files ...). A glob matches a
file's name, its whole path, or (for excludes) any directory on the way to it, so ``--reload-exclude
build`` leaves out everything under a ``build`` directory.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bascule.config import Config
from bascule.errors import ConfigError

_log = logging.getLogger("bascule.error")

ALWAYS_INCLUDED = ("*.py",)


class ReloadFilter:
    """Decides whether a changed path triggers a reload (watchfiles' ``watch_filter`` signature)."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 default: Callable[[Any, str], bool] | None = None) -> None:
        self.include = (*ALWAYS_INCLUDED, *include)
        self.exclude = tuple(exclude)
        self.default = default

    def __call__(self, change: Any, path: str) -> bool:
        if self.default is not None and not self.default(change, path):
            return False
        parts = Path(path).parts
        for pattern in self.exclude:
            if fnmatch.fnmatch(path, pattern) or any(fnmatch.fnmatch(part, pattern) for part in parts):
                return False
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in self.include)


def watched_dirs(config: Config) -> list[str]:
    """The directories --reload watches, checked to exist (watchfiles would fail later, in its thread)."""
    dirs = list(config.reload_dir) or [config.app_dir]
    resolved = []
    for directory in dirs:
        path = Path(directory).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"reload_dir {directory!r} is not a directory")
        resolved.append(str(path))
    return resolved


class ChangeWatcher:
    """A watchfiles thread: :meth:`take` returns the paths changed since the last call."""

    def __init__(self, config: Config, wake: Callable[[], None]) -> None:
        try:
            import watchfiles
        except ImportError:
            raise ConfigError("--reload needs the watchfiles package: pip install 'bascule[reload]'") from None
        self._watchfiles = watchfiles
        self.dirs = watched_dirs(config)
        self.filter = ReloadFilter(config.reload_include, config.reload_exclude, default=watchfiles.DefaultFilter())
        self._wake = wake
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changes: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="bascule-reload", daemon=True)

    def start(self) -> None:
        _log.info("watching %s for changes", ", ".join(self.dirs))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def take(self) -> list[str]:
        with self._lock:
            changes, self._changes = sorted(self._changes), set()
        return changes

    def _run(self) -> None:
        try:
            for batch in self._watchfiles.watch(*self.dirs, watch_filter=self.filter, stop_event=self._stop,
                                                raise_interrupt=False):
                with self._lock:
                    self._changes.update(path for _, path in batch)
                self._wake()
        except Exception:
            _log.exception("the --reload watcher stopped; restart bascule to watch again")
