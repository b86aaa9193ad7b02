"""--access-log-format json: one parseable object per line, hostile bytes kept on it, the direct write equal to
the stdlib path's, and the same fields as LogRecord attributes for users' own formatters (--log-config)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bascule.accesslog import JSON_KEYS, AccessLog, format_access, json_line, json_values
from bascule.config import Config
from bascule.logs import configure_logging

HOSTILE_PATH = b'/a\nb\r\x1b[31m"\\\x00\x7f\x85\xe2\x80\xa8\xff'
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HOSTILE_AGENT = b'evil"\n{"status":200}\x1b]0;title\x07\\u0000\xc3\xa9'


class Done:
    """A finished exchange as the access log reads it."""

    method = "GET"
    raw_path = b"/a\nb"
    query_string = b"x=1"
    http_version = "1.1"
    status = 200
    client: tuple[str, int] | None = ("127.0.0.1", 5000)
    headers = [(b"user-agent", b"curl")]
    proxied = False
    peer: tuple[str, int] | None = None
    start_time = 10.0
    perf_start = 10.0
    head_time = 0.0
    rid: str | None = None
    sent = 12
    dropped = False


def values_of(ex: Any, nbytes: int = 12, duration: float = 0.0042) -> tuple[Any, ...]:
    return json_values(ex, nbytes, duration, "2025-12-06T05:46:40.123Z", 4242)


def test_the_line_is_json_dumps_own_output_and_round_trips() -> None:
    ex = Done()
    ex.raw_path = HOSTILE_PATH
    ex.query_string = b'q="\n"&r=\\'
    ex.headers = [(b"user-agent", HOSTILE_AGENT), (b"traceparent", TRACEPARENT.encode()), (b"user-agent", b"second")]
    ex.head_time = 10.0015
    ex.rid = "4bf92f3577b34da6a3ce929d0e0e4736"
    values = values_of(ex)
    line = json_line(values)
    assert line == json.dumps(dict(zip(JSON_KEYS, values, strict=True)), separators=(",", ":"))
    assert line.isascii() and line.isprintable()  # no CR, LF, ESC, NEL, LS: one line, no terminal games
    record = json.loads(line)
    assert list(record) == list(JSON_KEYS)
    assert record == {
        "time": "2025-12-06T05:46:40.123Z", "client": "127.0.0.1", "peer": "127.0.0.1", "method": "GET",
        "path": HOSTILE_PATH.decode("latin-1"), "query": 'q="\n"&r=\\', "protocol": "HTTP/1.1", "status": 200,
        "bytes": 12, "duration_ms": 4.2, "ttfb_ms": 1.5, "user_agent": HOSTILE_AGENT.decode("latin-1"),
        "request_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "traceparent": TRACEPARENT, "worker": 4242}
    assert record["path"].encode("latin-1") == HOSTILE_PATH  # byte for byte, as WSGI decodes


def test_absent_values_are_null_and_the_peer_is_the_connections() -> None:
    ex = Done()
    ex.headers = []
    record = json.loads(json_line(values_of(ex)))
    assert (record["user_agent"], record["traceparent"], record["request_id"], record["ttfb_ms"]) == (None,) * 4
    ex.client = None  # a Unix socket
    assert json.loads(json_line(values_of(ex)))["client"] is None
    ex.client, ex.proxied, ex.peer = ("203.0.113.7", 0), True, ("::1", 41000)  # a trusted proxy named the client
    record = json.loads(json_line(values_of(ex)))
    assert (record["client"], record["peer"]) == ("203.0.113.7", "::1")


def test_protocol_and_numbers() -> None:
    ex = Done()
    ex.http_version = "2"
    ex.status = 404
    record = json.loads(json_line(values_of(ex, nbytes=0, duration=1.23456789)))
    assert (record["protocol"], record["status"], record["bytes"]) == ("HTTP/2", 404, 0)
    assert record["duration_ms"] == 1234.568


def test_text_templates_get_the_new_fields() -> None:
    ex = Done()
    ex.rid = "abc"
    ex.head_time = 10.002
    ex.headers = [(b"traceparent", b"00-x\n")]
    line = format_access("{request_id} {ttfb_ms:.1f} {duration_ms:.1f} {traceparent}", ex, 0, 0.005)
    assert line == "abc 2.0 5.0 00-x\\x0a"
    ex.rid, ex.head_time = None, 0.0  # no id; no head timed: the duration stands in
    assert format_access("{request_id} {ttfb_ms:.1f}", ex, 0, 0.005) == "- 5.0"


def test_the_stamp_is_rfc3339_utc_to_the_millisecond() -> None:
    loop = asyncio.new_event_loop()
    try:
        access = AccessLog("json", loop, logging.getLogger("bascule.access"), logging.getLogger("bascule.error"))
        assert access._json_time(1765000000.1239) == "2025-12-06T05:46:40.123Z"
        assert access._json_time(1765000000.0) == "2025-12-06T05:46:40.000Z"
        assert access._json_time(1765000061.9999) == "2025-12-06T05:47:41.999Z"
    finally:
        loop.close()


# -- through the logger ------------------------------------------------------------------------------


@pytest.fixture
def restore_access_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("bascule.access")
    root = logging.getLogger()
    saved = (list(logger.handlers), logger.propagate, logger.level, list(root.handlers), root.level)
    yield logger
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()  # a --log-config's file handler
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])
    root.handlers[:] = saved[3]  # fileConfig replaces the root logger's handlers
    root.setLevel(saved[4])


def log_one(monkeypatch: pytest.MonkeyPatch, template: str, at: float, *extra: logging.Handler,
            ex: Any = None, configured: bool = False) -> None:
    """One line at wall time ``at``, bascule's own handlers plus ``extra`` (pytest's capture handlers set aside),
    or (``configured``) the handlers a --log-config installed, as they are."""
    logger = logging.getLogger("bascule.access")
    if not configured:
        ours = [h for h in logger.handlers if getattr(h, "_bascule_default", False)]
        monkeypatch.setattr(logger, "handlers", [*ours, *extra])
    monkeypatch.setattr(time, "time", lambda: at)
    loop = asyncio.new_event_loop()
    try:
        done = ex if ex is not None else Done()
        done.start_time = done.perf_start = 1000.0 - 0.0042
        access = AccessLog(template, loop, logger, logging.getLogger("bascule.error"))
        access.clock = lambda: 1000.0  # the clock, still: durations repeat
        access.request_finished(done)
    finally:
        loop.close()


@pytest.mark.parametrize("at", [1765000000.123, 1765000000.9999])
def test_the_direct_json_line_is_the_formatters(restore_access_logger: logging.Logger,
                                                 monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    configure_logging(Config(app="x:y", access_log_format="json"))

    def no_record(*args: object, **kwargs: object) -> None:
        raise AssertionError("the direct path makes no LogRecord")

    ex = Done()
    ex.raw_path = HOSTILE_PATH
    ex.head_time = 1000.0 - 0.003
    ex.rid = "4bf92f3577b34da6a3ce929d0e0e4736"
    with monkeypatch.context() as patch:
        patch.setattr(restore_access_logger, "info", no_record)
        log_one(patch, "json", at, ex=ex)
    direct = out.getvalue()
    assert direct.count("\n") == 1 and direct.endswith("}\n")
    record = json.loads(direct)
    assert record["path"] == HOSTILE_PATH.decode("latin-1") and record["worker"] == os.getpid()
    assert (record["duration_ms"], record["ttfb_ms"]) == (4.2, 1.2)
    reference = io.StringIO()  # the stdlib path: the same handler settings, the same clocks
    handler = logging.StreamHandler(reference)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log_one(monkeypatch, "json", at, handler, ex=ex)
    assert reference.getvalue() == direct
    assert out.getvalue() == direct * 2  # the default handler wrote the second line too, through logging


@pytest.mark.parametrize("template", ["json", "{client} {status}"])
def test_every_record_carries_the_fields(restore_access_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
                                         template: str) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    configure_logging(Config(app="x:y", access_log_format=template))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    ex = Done()
    ex.rid = "rid-1"
    log_one(monkeypatch, template, 1765000000.5, Keep(), ex=ex)
    (record,) = seen
    fields = {key: getattr(record, key) for key in JSON_KEYS}
    assert fields["request_id"] == "rid-1" and fields["status"] == 200 and fields["bytes"] == 12
    assert fields["time"] == "2025-12-06T05:46:40.500Z" and fields["path"] == "/a\nb" and fields["user_agent"] == "curl"
    if template == "json":
        assert json.loads(record.getMessage()) == fields
    else:
        assert record.getMessage() == "127.0.0.1:5000 200"


def test_a_user_formatter_from_log_config_reads_the_fields(restore_access_logger: logging.Logger,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The reason for the record attributes: a dictConfig formatter naming them, as users write them."""
    out = tmp_path / "access.log"
    config = {
        "version": 1,
        "formatters": {"mine": {"format": "rid=%(request_id)s status=%(status)d path=%(path)r ua=%(user_agent)s "
                                          "worker=%(worker)d ttfb=%(ttfb_ms)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out), "formatter": "mine"}},
        "loggers": {"bascule.access": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    configure_logging(Config(app="x:y", log_config=str(path)))
    ex = Done()
    ex.rid = "7f3a"
    log_one(monkeypatch, "{client} {status}", 1765000000.5, ex=ex, configured=True)
    for handler in restore_access_logger.handlers:
        handler.flush()
    assert out.read_text() == f"rid=7f3a status=200 path='/a\\nb' ua=curl worker={os.getpid()} ttfb=None\n"


def test_an_ini_log_config_reads_them_too(restore_access_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """fileConfig: propagate=0 as an int (the compiled build's old trap), a format naming the fields."""
    out = tmp_path / "access.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(f"""[loggers]
keys=root,access

[handlers]
keys=file

[formatters]
keys=mine

[logger_root]
handlers=

[logger_access]
qualname=bascule.access
handlers=file
level=INFO
propagate=0

[handler_file]
class=FileHandler
args=({str(out)!r},)
formatter=mine

[formatter_mine]
format=%(method)s %(protocol)s %(status)s %(request_id)s
""")
    configure_logging(Config(app="x:y", log_config=str(ini), access_log_format="json"))
    ex = Done()
    ex.rid = "ini-id"
    log_one(monkeypatch, "json", 1765000000.5, ex=ex, configured=True)
    for handler in restore_access_logger.handlers:
        handler.flush()
    assert out.read_text() == "GET HTTP/1.1 200 ini-id\n"
