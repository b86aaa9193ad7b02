"""Access-log lines: one per request, every client-supplied field escaped.

A request target or User-Agent may carry CR, LF, ESC or other control bytes; written raw they would forge
extra log lines or colour a terminal. Every byte outside printable ASCII (and the backslash and double
quote) is written as ``\\xHH``, so one request is always exactly one line.

The log is one request observer (context.RequestObserver), registered with --access-log: a line per
exchange that got a response (complete or given up), none for one whose client went away first.

``--access-log-format json`` writes one JSON object per line instead, with the fixed keys of
:data:`JSON_KEYS` (docs/logging.md); JSON's own escapes keep a hostile value on its line there. Whatever the
format, a line that goes through the logging machinery (a --log-config, a handler added) carries the same
fields as LogRecord attributes (``record.status``, ``record.request_id``...), for users' own formatters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import string
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol

DEFAULT_FORMAT = "%(asctime)s [%(process)d] %(message)s"
"""The line bascule's own access handler writes (bascule.logs, without --log-config)."""
JSON = "json"
"""The --access-log-format value that asks for JSON lines."""
JSON_FORMAT = "%(message)s"
"""bascule's own access handler's format for JSON lines: the object alone, so each line parses."""
JSON_KEYS = ("time", "client", "peer", "method", "path", "query", "protocol", "status", "bytes", "duration_ms",
             "ttfb_ms", "user_agent", "request_id", "traceparent", "worker")
"""The keys of a JSON line, in their order; also the LogRecord attributes every access record carries."""


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
    rid: str | None  # --request-id's id; None when off
    head_time: float  # perf_counter() when the response head went out; 0.0 if unknown
    perf_start: float  # perf_counter() when the server took the request on


class Finished(Logged, Protocol):
    """What the observer reads of a finished exchange besides the logged fields."""

    sent: int
    dropped: bool


class AccessLog:
    """The access log as a request observer: formats and writes one line when a request finishes."""

    def __init__(self, template: str, loop: asyncio.AbstractEventLoop, logger: logging.Logger,
                 error_log: logging.Logger) -> None:
        self.template = template
        self.json = template == JSON
        self.handler_format = JSON_FORMAT if self.json else DEFAULT_FORMAT  # what bascule.logs installs
        self.loop = loop
        self.clock: Callable[[], float] = time.perf_counter  # durations: sub-millisecond, unlike uvloop's loop.time()
        self.logger = logger
        self.error_log = error_log
        self.pid = os.getpid()
        self._second = -1  # the second _stamp was made for
        self._stamp = ""
        self._json_second = -1  # the second _json_stamp was made for
        self._json_stamp = ""

    def request_started(self, ex: Finished) -> None:
        """Nothing to write yet: the line is written when the request finishes."""

    def request_finished(self, ex: Finished) -> None:
        if ex.dropped:
            return  # the client went away before a response: no line (as before the observers)
        duration = self.clock() - ex.perf_start
        handler = _own_handler(self.logger, self.handler_format)
        values: tuple[Any, ...] = ()
        try:
            if self.json or handler is None:  # JSON lines, or a record's attributes
                values = json_values(ex, ex.sent, duration, self._json_time(time.time()), self.pid)
            line = json_line(values) if self.json else format_access(self.template, ex, ex.sent, duration)
        except Exception:  # a broken template must never break a response
            self.error_log.exception("access_log_format could not be applied")
            return
        if handler is None:
            self.logger.info(line, extra=dict(zip(JSON_KEYS, values, strict=True)))
        elif self.json:
            self._write_json(handler, line)
        else:
            self._write(handler, line)

    def _json_time(self, now: float) -> str:
        """``now`` as RFC 3339 UTC to the millisecond (2026-12-06T18:30:03.123Z), the date part made once a
        second."""
        second = int(now)
        if second != self._json_second:
            self._json_second = second
            self._json_stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._json_stamp}.{int((now - second) * 1000):03d}Z"

    def _write_json(self, handler: Any, line: str) -> None:
        """A JSON line through bascule's own handler (formatter ``%(message)s``): the line and a newline."""
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": line, "name": self.logger.name}))
        finally:
            handler.release()

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


def _own_handler(logger: logging.Logger, fmt: str = DEFAULT_FORMAT) -> Any:
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
    if formatter is None or type(formatter) is not logging.Formatter or formatter._fmt != fmt:
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


def json_values(ex: Logged, nbytes: int, duration: float, stamp: str, worker: int) -> tuple[Any, ...]:
    """The values of one JSON line, in :data:`JSON_KEYS` order (also the record's attributes).

    Request bytes are decoded as latin-1, byte for byte as WSGI decodes them, so nothing is lost and no
    value can be invalid Unicode; JSON's escapes do the rest. ``client`` is the client the app sees (a
    trusted proxy's word), ``peer`` the connection's; both are hosts without the port (an address for a
    log store's IP type), null on a Unix socket. ``ttfb_ms`` is null where no head was timed."""
    client = ex.client
    peer = ex.peer if ex.proxied else client
    head = ex.head_time
    user_agent: str | None = None
    traceparent: str | None = None
    for key, value in ex.headers:
        if key == b"user-agent":
            if user_agent is None:
                user_agent = value.decode("latin-1")
        elif key == b"traceparent" and traceparent is None:
            traceparent = value.decode("latin-1")
    return (stamp, client[0] if client else None, peer[0] if peer else None, ex.method,
            ex.raw_path.decode("latin-1"), ex.query_string.decode("latin-1"), "HTTP/" + ex.http_version,
            ex.status, nbytes, round(duration * 1000.0, 3),
            round((head - ex.perf_start) * 1000.0, 3) if head else None, user_agent, ex.rid, traceparent,
            worker)


def _json_str(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


_JSON_LINE = ('{"time":"%s","client":%s,"peer":%s,"method":%s,"path":%s,"query":%s,"protocol":%s,"status":%d,'
              '"bytes":%d,"duration_ms":%r,"ttfb_ms":%s,"user_agent":%s,"request_id":%s,"traceparent":%s,'
              '"worker":%d}')


def json_line(values: tuple[Any, ...]) -> str:
    """One JSON object from :func:`json_values`, exactly as ``json.dumps(dict(zip(JSON_KEYS, values)),
    separators=(",", ":"))`` writes it (ASCII only, so it is UTF-8 and Latin-1 alike), in a third of its time."""
    (stamp, client, peer, method, path, query, protocol, status, nbytes, duration_ms, ttfb_ms, user_agent,
     request_id, traceparent, worker) = values
    return _JSON_LINE % (stamp, _json_str(client), _json_str(peer), encode_basestring_ascii(method),
                         encode_basestring_ascii(path), encode_basestring_ascii(query),
                         encode_basestring_ascii(protocol), status, nbytes, duration_ms,
                         "null" if ttfb_ms is None else repr(ttfb_ms), _json_str(user_agent),
                         _json_str(request_id), _json_str(traceparent), worker)


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
    if "ttfb_ms" in names:  # the duration where no head was timed (a WebSocket handshake)
        head = ex.head_time
        values["ttfb_ms"] = (head - ex.perf_start) * 1000.0 if head else duration * 1000.0
    if "request_id" in names:
        values["request_id"] = ex.rid or "-"  # its characters need no escaping (ops/request_id.py)
    if "traceparent" in names:
        values["traceparent"] = _header(ex, b"traceparent")
    if "request_line" in names:
        values["request_line"] = f"{values['method']} {values['target']} HTTP/{ex.http_version}"
    return template.format_map(values)
