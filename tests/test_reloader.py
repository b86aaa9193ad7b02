"""Tests for bascule.reloader: which changed paths trigger --reload, the watched directories, and the
watchfiles thread noticing a real edit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bascule.config import Config
from bascule.errors import ConfigError
from bascule.reloader import ChangeWatcher, ReloadFilter, watched_dirs


def test_python_files_always_trigger() -> None:
    accept = ReloadFilter()
    assert accept(None, "/p/app/main.py")
    assert not accept(None, "/p/app/index.html")
    assert not accept(None, "/p/app/main.pyc")


def test_include_and_exclude_globs() -> None:
    accept = ReloadFilter(include=["*.html", "/p/conf/*.toml"], exclude=["build", "*_test.py", "/p/gen/*"])
    assert accept(None, "/p/templates/index.html")
    assert accept(None, "/p/conf/app.toml")
    assert not accept(None, "/p/other/app.toml")
    assert not accept(None, "/p/build/lib/main.py")  # a directory on the way
    assert not accept(None, "/p/app/main_test.py")
    assert not accept(None, "/p/gen/models.py")
    assert accept(None, "/p/app/main.py")


def test_default_filter_is_consulted_first() -> None:
    accept = ReloadFilter(default=lambda change, path: "__pycache__" not in path)
    assert not accept(None, "/p/__pycache__/x.py")
    assert accept(None, "/p/x.py")


def test_watched_dirs(tmp_path: Path) -> None:
    assert watched_dirs(Config(app="m:a", app_dir=str(tmp_path))) == [str(tmp_path.resolve())]
    (tmp_path / "src").mkdir()
    config = Config(app="m:a", reload=True, reload_dir=(str(tmp_path / "src"),))
    assert watched_dirs(config) == [str((tmp_path / "src").resolve())]
    with pytest.raises(ConfigError, match="is not a directory"):
        watched_dirs(Config(app="m:a", reload=True, reload_dir=(str(tmp_path / "nope"),)))


def test_watcher_reports_an_edited_python_file(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    (tmp_path / "main.py").write_text("x = 1\n")
    woken = threading.Event()
    watcher = ChangeWatcher(Config(app="m:a", reload=True, reload_dir=(str(tmp_path),)), woken.set)
    watcher.start()
    try:
        time.sleep(0.3)  # let the watcher settle before the edit
        (tmp_path / "notes.txt").write_text("ignored")
        (tmp_path / "main.py").write_text("x = 2\n")
        assert woken.wait(10)
        deadline = time.monotonic() + 5
        changes: list[str] = []
        while time.monotonic() < deadline and not changes:
            changes = watcher.take()
            time.sleep(0.05)
        assert changes == [str((tmp_path / "main.py").resolve())]
        assert watcher.take() == []
    finally:
        watcher.stop()
