"""accesslog.AccessLog's direct write: byte for byte what the stdlib path writes, and taken only when safe."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bascule.accesslog import AccessLog
from bascule.config import Config
from bascule.logs import configure_logging


class Done:
    method = "GET"
    raw_path = b"/a\nb"
    query_string = b"x=1"
    http_version = "1.1"
    status = 200
    client = ("127.0.0.1", 5000)
    headers = [(b"user-agent", b"curl")]
    proxied = False
    peer = None
    start_time = 0.0
    perf_start = 0.0
    head_time = 0.0
    rid: str | None = None
    sent = 12
    dropped = False


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    logger = logging.getLogger("bascule.access")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    configure_logging(Config(app="x:y"))
    yield out
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def log_one(monkeypatch: pytest.MonkeyPatch, at: float, *extra: logging.Handler) -> None:
    """One line at time ``at``, the logger as bascule.logs left it plus ``extra`` handlers (pytest attaches
    its capture handlers to every logger that does not propagate, at each test phase: set aside here)."""
    logger = logging.getLogger("bascule.access")
    ours = [h for h in logger.handlers if getattr(h, "_bascule_default", False)]
    monkeypatch.setattr(logger, "handlers", [*ours, *extra])
    monkeypatch.setattr(time, "time", lambda: at)
    loop = asyncio.new_event_loop()
    try:
        access = AccessLog("{client} {request_line} {status} {bytes}", loop, logger, logging.getLogger("bascule.error"))
        access.request_finished(Done())  # type: ignore[arg-type]
    finally:
        loop.close()


@pytest.mark.parametrize("at", [1765000000.123, 1765000000.0, 1765000000.9999, 1765000001.5])
def test_the_direct_line_is_the_formatters(stdout: io.StringIO, monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    def no_record(*args: object) -> None:
        raise AssertionError("the direct path makes no LogRecord")

    with monkeypatch.context() as patch:
        patch.setattr(logging.getLogger("bascule.access"), "info", no_record)
        log_one(patch, at)
    direct = stdout.getvalue()
    reference = io.StringIO()  # the stdlib path, same handler settings, same clock
    handler = logging.StreamHandler(reference)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(message)s"))
    log_one(monkeypatch, at, handler)  # two handlers: AccessLog takes the stdlib path now
    assert direct.count("\n") == 1 and direct.endswith('127.0.0.1:5000 GET /a\\x0ab?x=1 HTTP/1.1 200 12\n')
    assert reference.getvalue() == direct
    assert stdout.getvalue() == direct * 2  # the default handler wrote the second line too, through logging


def test_an_added_handler_or_filter_gets_records(stdout: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("bascule.access")
    log_one(monkeypatch, 1765000000.5, Keep())
    assert [r.getMessage() for r in seen] == ['127.0.0.1:5000 GET /a\\x0ab?x=1 HTTP/1.1 200 12']

    def drop(record: Any) -> bool:
        return False

    ours = next(h for h in logger.handlers if getattr(h, "_bascule_default", False))
    ours.addFilter(drop)
    try:
        before = stdout.getvalue()
        log_one(monkeypatch, 1765000000.5)
        assert stdout.getvalue() == before  # the filter was honoured: the stdlib path
    finally:
        ours.removeFilter(drop)


@pytest.mark.parametrize("propagate", [0, 1])
def test_attributes_of_other_types_than_typeshed_says(stdout: io.StringIO, monkeypatch: pytest.MonkeyPatch,
                                                       propagate: int) -> None:
    """fileConfig sets ``propagate=0`` as an int: the compiled build checked it against ``bool`` and raised
    TypeError in every request's observer (found by the compiled CI run of --log-config with an INI file)."""
    logger = logging.getLogger("bascule.access")
    monkeypatch.setattr(logger, "propagate", propagate)
    log_one(monkeypatch, 1765000000.25)
    assert stdout.getvalue().endswith(" 200 12\n")

