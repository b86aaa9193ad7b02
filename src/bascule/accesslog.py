"""Access-log lines: one per request, every client-supplied field escaped.

A request target or User-Agent may carry CR, LF, ESC or other control bytes; written raw they would forge
extra log lines or colour a terminal. Every byte outside printable ASCII (and the backslash and double
quote) is written as ``\\xHH``, so one request is always exactly one line.

The log is one request observer (context.RequestObserver), registered with --access-log: a line per
exchange that got a response (complete or given up), none for one whose client went away first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import string
import time
from typing import Any, Protocol

DEFAULT_FORMAT = "%(asctime)s [%(process)d] %(message)s"
"""The line bascule's own access handler writes (bascule.logs, without --log-config)."""


class Logged(Protocol):
    """What a log line reads of a request (an Exchange has it all; a Protocol so any record will do)."""

    method: str
    raw_path: bytes
    query_string: bytes
    http_version: str
    status: int
    client: tuple[str, int] | None
    headers: list[tuple[bytes, bytes]]
    proxied: bool  # a trusted proxy named the client: ``peer`` is the connection's
    peer: tuple[str, int] | None


class Finished(Logged, Protocol):
    """What the observer reads of a finished exchange besides the logged fields."""

    start_time: float
    sent: int
    dropped: bool


class AccessLog:
    """The access log as a request observer: formats and writes one line when a request finishes."""

    def __init__(self, template: str, loop: asyncio.AbstractEventLoop, logger: logging.Logger,
                 error_log: logging.Logger) -> None:
        self.template = template
        self.loop = loop
        self.logger = logger
        self.error_log = error_log
        self.pid = os.getpid()
        self._second = -1  # the second _stamp was made for
        self._stamp = ""

    def request_started(self, ex: Finished) -> None:
        """Nothing to write yet: the line is written when the request finishes."""

    def request_finished(self, ex: Finished) -> None:
        if ex.dropped:
            return  # the client went away before a response: no line (as before the observers)
        try:
            line = format_access(self.template, ex, ex.sent, self.loop.time() - ex.start_time)
        except Exception:  # a broken template must never break a response
            self.error_log.exception("access_log_format could not be applied")
            return
        handler = _own_handler(self.logger)
        if handler is None:
            self.logger.info(line)
        else:
            self._write(handler, line)

    def _write(self, handler: Any, line: str) -> None:
        """What ``logger.info(line)`` writes through bascule's own handler, without the LogRecord, the
        Formatter and the handler chain: ~9 us of a request's CPU (more than a whole C gateway's over uwsgi),
        for the one line the default set-up always writes the same way. The line is byte for byte the
        Formatter's: the local time to the millisecond, as ``%(asctime)s``, and the process id."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        text = f"{self._stamp},{int((now - second) * 1000):03d} [{self.pid}] {line}\n"
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(text)
            stream.flush()
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": line, "name": self.logger.name}))
        finally:
            handler.release()


def _own_handler(logger: logging.Logger) -> Any:
    """bascule's default access handler when it is the only place a line goes (bascule.logs installed it, no
    --log-config, nothing added since, no filters, INFO enabled); None when the stdlib path must be taken.

    Read through ``Any``: configurations set these attributes to what they like (fileConfig's
    ``propagate=0`` is an int), and compiled code would check them against typeshed's ``bool``."""
    lg: Any = logger
    handlers = lg.handlers
    if len(handlers) != 1 or lg.filters or lg.propagate or lg.disabled:
        return None
    handler: Any = handlers[0]
    if (not getattr(handler, "_bascule_default", False) or handler.filters or handler.level > logging.INFO
            or not lg.isEnabledFor(logging.INFO)):
        return None
    formatter = handler.formatter
    if formatter is None or type(formatter) is not logging.Formatter or formatter._fmt != DEFAULT_FORMAT:
        return None
    return handler


_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _hex(match: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % match.group()[0]


def escape(value: bytes) -> str:
    """Printable-ASCII rendering of untrusted bytes, with everything else as \\xHH."""
    text = value.decode("latin-1")
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text  # the usual case, without the regex's substitution pass
    return _UNSAFE.sub(_hex, value).decode("ascii")


def _header(ex: Logged, name: bytes) -> str:
    for key, value in ex.headers:
        if key == name:
            return escape(value)
    return "-"


def _address(address: tuple[str, int] | None) -> str:
    if not address:
        return "-"
    host = address[0]
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


_FIELDS: dict[str, frozenset[str]] = {}


def _fields(template: str) -> frozenset[str]:
    """The fields ``template`` names (cached per template): only those are computed for a line."""
    names = _FIELDS.get(template)
    if names is None:
        names = frozenset(field.partition(".")[0].partition("[")[0]
                          for _, field, _, _ in string.Formatter().parse(template) if field)
        if len(_FIELDS) < 64:
            _FIELDS[template] = names
    return names


def format_access(template: str, ex: Logged, nbytes: int, duration: float) -> str:
    """Fill the access-log template for one finished request (the fields it does not name are not made)."""
    names = _fields(template)
    values: dict[str, object] = {"http_version": ex.http_version, "status": ex.status, "bytes": nbytes,
                                 "duration": duration, "duration_ms": duration * 1000.0}
    # {client}: the connection's peer, as gunicorn's %(h)s, even where a trusted proxy named another client
    # ({app_client}, what the app sees): a log line never depends on a header a client could have sent
    client = _address(ex.peer if ex.proxied else ex.client)
    values["client"] = client
    if "app_client" in names:
        values["app_client"] = _address(ex.client) if ex.proxied else client
    if "method" in names or "request_line" in names:
        values["method"] = escape(ex.method.encode("latin-1", "replace"))
    if "target" in names or "request_line" in names:
        values["target"] = escape(ex.raw_path + (b"?" + ex.query_string if ex.query_string else b""))
    if "path" in names:
        values["path"] = escape(ex.raw_path)
    if "query" in names:
        values["query"] = escape(ex.query_string)
    if "user_agent" in names:
        values["user_agent"] = _header(ex, b"user-agent")
    if "referer" in names:
        values["referer"] = _header(ex, b"referer")
    if "request_line" in names:
        values["request_line"] = f"{values['method']} {values['target']} HTTP/{ex.http_version}"
    return template.format_map(values)
