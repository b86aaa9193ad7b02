"""FastCGI 1.0 records, the Responder role, sans I/O: bytes in, events out; records for the answers.

FastCGI (Open Market's specification, 1996; what nginx's ``fastcgi_pass`` speaks) frames everything in
records: an 8-byte header (version 1, type, request id u16, content length u16, padding length u8, one
reserved byte), the content, then padding that the receiver skips. One connection may carry several
requests at once, told apart by request id (nginx always uses id 1, one request at a time; other web
servers multiplex). A request is:

- ``BEGIN_REQUEST`` (role and flags: ``FCGI_KEEP_CONN`` asks the application to leave the connection open
  after the response; without it the application closes it);
- the ``PARAMS`` stream: the CGI variables as name-value pairs (lengths of 1 byte below 128, else 4 bytes
  with the high bit set), cut into records anywhere, even inside a length; an empty record ends it;
- the ``STDIN`` stream: the request body, ended by an empty record. A body nginx cannot measure (chunked,
  with ``fastcgi_request_buffering off``) comes without ``CONTENT_LENGTH``: STDIN's end is the body's end.
- ``ABORT_REQUEST`` at any point: the client went away.

and the answer is the ``STDOUT`` stream (a CGI response: bascule.cgi.response_head, then the body) ended by
an empty record, then ``END_REQUEST`` (an application status and a protocol status). Records with request
id 0 are management records: ``GET_VALUES`` asks for the application's limits (answered here from the
values the caller gives); an unknown type is answered with ``UNKNOWN_TYPE``.

Model: websockets' sans-I/O protocols. :meth:`FastCGIConnection.receive_data` takes bytes and returns
events (:class:`RequestReady` once a request's params are complete, :class:`StdinData`, :class:`StdinEnd`,
:class:`RequestAborted`); :meth:`~FastCGIConnection.data_to_send` returns the answers the parser wrote on
its own (management answers and refusals); the module's encoders (:func:`stdout`, :func:`end_request`)
and the connection's :meth:`~FastCGIConnection.finish`/:meth:`~FastCGIConnection.refuse` write the
responses. Nothing here reads a socket, starts a timer or logs.

Refused without the app, answered on the wire: a role other than Responder (``UNKNOWN_ROLE``), a request
beyond ``max_requests`` on one connection (``CANT_MPX_CONN`` when that is 1, else ``OVERLOADED``); the
caller refuses with ``OVERLOADED`` at ``--limit-concurrency``. Refused with :class:`FastCGIError` (a
message for the log line; the caller closes the connection, the app is never called for an unfinished
request): a version other than 1, a ``BEGIN_REQUEST`` of the wrong size or for an active id, params over
``max_params_size`` or ``max_params``, a malformed pair, ``STDIN`` before the params end, a stream record
after its end, record types only applications send. Records for an inactive request id (one refused, or
finished) are ignored, as the specification says; so is padding. Buffered bytes are bounded: one record
(8 + 65535 + 255 bytes) plus each active request's params, at most ``max_params_size``.
"""

from __future__ import annotations

import struct

from bascule.errors import BasculeError

__all__ = ["ABORT_REQUEST", "BEGIN_REQUEST", "CANT_MPX_CONN", "DATA", "DEFAULT_MAX_PARAMS",
           "DEFAULT_MAX_PARAMS_SIZE", "END_REQUEST", "GET_VALUES", "GET_VALUES_RESULT", "KEEP_CONN",
           "MAX_CONTENT", "OVERLOADED", "PARAMS", "REQUEST_COMPLETE", "RESPONDER", "STDERR", "STDIN", "STDOUT",
           "UNKNOWN_ROLE", "UNKNOWN_TYPE", "Event", "FastCGIConnection", "FastCGIError", "RequestAborted",
           "RequestReady", "StdinData", "StdinEnd", "encode_pairs", "end_request", "parse_pairs", "record",
           "stderr", "stdout"]

VERSION = 1
HEADER_SIZE = 8
MAX_CONTENT = 65535
_CHUNK = 65528
"""Content per STDOUT record when a body is split: the largest multiple of 8 that fits, so full records
need no padding."""

BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA = 1, 2, 3, 4, 5, 6, 7, 8
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = 0, 1, 2, 3

DEFAULT_MAX_PARAMS_SIZE = 65536
"""Bound on one request's params stream (nginx sends them in one record, so at most 65535 bytes)."""
DEFAULT_MAX_PARAMS = 256
"""Pairs per request (see bascule.protocols.uwsgi_wire.DEFAULT_MAX_VARS)."""

_HEADER = struct.Struct("!BBHHBx")
_PADDING = tuple(bytes(n) for n in range(8))
_APP_TYPES = frozenset((END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE))
_TYPE_NAMES = {BEGIN_REQUEST: "BEGIN_REQUEST", ABORT_REQUEST: "ABORT_REQUEST", END_REQUEST: "END_REQUEST",
               PARAMS: "PARAMS", STDIN: "STDIN", STDOUT: "STDOUT", STDERR: "STDERR", DATA: "DATA",
               GET_VALUES: "GET_VALUES", GET_VALUES_RESULT: "GET_VALUES_RESULT", UNKNOWN_TYPE: "UNKNOWN_TYPE"}

Pairs = list[tuple[bytes, bytes]]


class FastCGIError(BasculeError):
    """The peer broke the FastCGI protocol or a limit. One log line's worth; the connection is closed."""


# -- events ------------------------------------------------------------------------------------------


class Event:
    """Something that happened to the request ``request_id``."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.request_id})"


class RequestReady(Event):
    """A request's params are complete: build it (bascule.cgi.request_from_vars) and start the app."""

    __slots__ = ("keep_conn", "params")

    def __init__(self, request_id: int, params: Pairs, keep_conn: bool) -> None:
        super().__init__(request_id)
        self.params = params
        self.keep_conn = keep_conn
        """FCGI_KEEP_CONN: the web server keeps the connection after this response (else: close it)."""


class StdinData(Event):
    """A piece of the request body (never empty)."""

    __slots__ = ("data",)

    def __init__(self, request_id: int, data: bytes) -> None:
        super().__init__(request_id)
        self.data = data


class StdinEnd(Event):
    """The request body is complete."""

    __slots__ = ()


class RequestAborted(Event):
    """The web server aborted the request (its client went away): ``http.disconnect``, cancel the run, and
    still end it (:meth:`FastCGIConnection.finish`), which the web server waits for."""

    __slots__ = ()


# -- encoders ----------------------------------------------------------------------------------------


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, padded to a multiple of 8 bytes (the specification's recommendation)."""
    size = len(content)
    if size > MAX_CONTENT:
        raise ValueError(f"FastCGI record content of {size} bytes is over {MAX_CONTENT}")
    padding = -size & 7
    return _HEADER.pack(VERSION, kind, request_id, size, padding) + content + _PADDING[padding]


def _stream(kind: int, request_id: int, data: bytes) -> bytes:
    size = len(data)
    if size <= _CHUNK:
        padding = -size & 7
        return _HEADER.pack(VERSION, kind, request_id, size, padding) + data + _PADDING[padding]
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, size, _CHUNK):
        piece = view[start:start + _CHUNK]
        padding = -len(piece) & 7
        parts.append(_HEADER.pack(VERSION, kind, request_id, len(piece), padding))
        parts.append(piece)
        parts.append(_PADDING[padding])
    return b"".join(parts)


def stdout(request_id: int, data: bytes) -> bytes:
    """``data`` as STDOUT records (split every 65528 bytes, padded). Empty ``data`` is the stream's end:
    use it once, then :func:`end_request` (or :meth:`FastCGIConnection.finish`, which writes both)."""
    return _stream(STDOUT, request_id, data)


def stderr(request_id: int, data: bytes) -> bytes:
    """``data`` as STDERR records: text the web server writes to its error log (nginx does)."""
    return _stream(STDERR, request_id, data)


def end_request(request_id: int, app_status: int = 0, protocol_status: int = REQUEST_COMPLETE) -> bytes:
    """An END_REQUEST record: ``app_status`` is the CGI exit status (0), ``protocol_status`` one of
    REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE."""
    return _HEADER.pack(VERSION, END_REQUEST, request_id, 8, 0) + struct.pack("!IB3x", app_status & 0xFFFFFFFF,
                                                                                 protocol_status)


def encode_pairs(pairs: Pairs) -> bytes:
    """Name-value pairs in FastCGI's encoding (1-byte lengths below 128, else 4 bytes with the high bit)."""
    out = bytearray()
    for name, value in pairs:
        for size in (len(name), len(value)):
            out += bytes((size,)) if size < 128 else (size | 0x80000000).to_bytes(4, "big")
        out += name
        out += value
    return bytes(out)


def parse_pairs(stream: bytes | bytearray, max_pairs: int = DEFAULT_MAX_PARAMS) -> Pairs:
    """The name-value pairs that fill ``stream`` exactly (a pair cut short is an error, not "more later": the
    caller passes a whole stream)."""
    data: bytes = stream if isinstance(stream, bytes) else bytes(stream)
    pairs: Pairs = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise FastCGIError("FastCGI name-value pair ends inside its lengths")
        name_length = data[pos]
        if name_length & 0x80:
            if pos + 5 > end:
                raise FastCGIError("FastCGI name-value pair ends inside a 4-byte length")
            name_length = _long_length(data, pos)
            pos += 4
        else:
            pos += 1
        value_length = data[pos]
        if value_length & 0x80:
            if pos + 4 > end:
                raise FastCGIError("FastCGI name-value pair ends inside a 4-byte length")
            value_length = _long_length(data, pos)
            pos += 4
        else:
            pos += 1
        name_end = pos + name_length
        value_end = name_end + value_length
        if value_end > end:
            raise FastCGIError(f"FastCGI name-value pair of {name_length} + {value_length} bytes runs "
                               f"{value_end - end} bytes past its stream")
        if not name_length:
            raise FastCGIError("FastCGI name-value pair with an empty name")
        if len(pairs) >= max_pairs:
            raise FastCGIError(f"FastCGI params hold more than {max_pairs} pairs")
        pairs.append((data[pos:name_end], data[name_end:value_end]))
        pos = value_end
    return pairs


def _long_length(data: bytes, pos: int) -> int:
    return ((data[pos] & 0x7F) << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]


# -- the connection ----------------------------------------------------------------------------------


class _Request:
    """What the parser keeps per active request id."""

    __slots__ = ("aborted", "keep_conn", "params", "ready", "stdin_done")

    def __init__(self, keep_conn: bool) -> None:
        self.keep_conn = keep_conn
        self.params: bytearray | None = bytearray()  # None once the params stream has ended
        self.ready = False  # RequestReady was emitted: from then on the caller ends the request
        self.stdin_done = False
        self.aborted = False


class FastCGIConnection:
    """One FastCGI connection's parser and state, for the Responder role.

    ``max_requests`` bounds the requests active at once on this connection (1: no multiplexing, the
    web server is told so by GET_VALUES and refused with CANT_MPX_CONN if it tries); ``max_conns`` and
    ``max_reqs`` are only reported to GET_VALUES (FCGI_MAX_CONNS, FCGI_MAX_REQS: the server's limits).
    A request stays active, its id taken, until the caller ends it with :meth:`finish` or :meth:`refuse`.
    """

    __slots__ = ("_buffer", "_out", "_requests", "max_conns", "max_params", "max_params_size", "max_reqs",
                 "max_requests")

    def __init__(self, max_requests: int = 1, max_params_size: int = DEFAULT_MAX_PARAMS_SIZE,
                 max_params: int = DEFAULT_MAX_PARAMS, max_conns: int = 1024, max_reqs: int = 1024) -> None:
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.max_requests = max_requests
        self.max_params_size = max_params_size
        self.max_params = max_params
        self.max_conns = max_conns
        self.max_reqs = max_reqs
        self._buffer = bytearray()
        self._out = bytearray()
        self._requests: dict[int, _Request] = {}

    @property
    def active(self) -> int:
        """Requests begun and not yet ended by the caller."""
        return len(self._requests)

    def data_to_send(self) -> bytes:
        """The records the parser wrote itself since the last call (GET_VALUES_RESULT, UNKNOWN_TYPE,
        END_REQUEST for refused or early-aborted requests); write them before anything else."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse ``data`` (any split of the stream); returns the events it completes, in order."""
        events: list[Event] = []
        buffer = self._buffer
        view: bytes | bytearray
        if buffer:
            buffer += data
            view = buffer
        else:
            view = data
        pos = 0
        size = len(view)
        while size - pos >= HEADER_SIZE:
            version, kind, request_id, length, padding = _HEADER.unpack_from(view, pos)
            if version != VERSION:
                if pos == 0 and 0x41 <= version <= 0x5A:
                    raise FastCGIError(f"not FastCGI (the connection starts with {bytes(view[:8])!r}): an HTTP "
                                       f"client on a FastCGI listener? (nginx: fastcgi_pass, not proxy_pass)")
                raise FastCGIError(f"FastCGI record has version {version} (only 1 exists)")
            start = pos + HEADER_SIZE
            end = start + length
            if size < end + padding:
                break
            if request_id == 0:
                self._management(kind, view, start, end)
            else:
                self._request_record(kind, request_id, view, start, end, events)
            pos = end + padding
        if buffer:
            del buffer[:pos]
        elif pos < size:
            buffer += view[pos:]
        return events

    def finish(self, request_id: int, app_status: int = 0) -> bytes:
        """End a request the app answered: the empty STDOUT record and END_REQUEST (REQUEST_COMPLETE), to
        write after the response. Frees the id (its late STDIN records are then ignored). Close the
        connection after writing unless the request had ``keep_conn``."""
        self._requests.pop(request_id, None)
        return stdout(request_id, b"") + end_request(request_id, app_status, REQUEST_COMPLETE)

    def refuse(self, request_id: int, protocol_status: int = OVERLOADED) -> bytes:
        """End a request without running it (OVERLOADED at --limit-concurrency): END_REQUEST alone."""
        self._requests.pop(request_id, None)
        return end_request(request_id, 0, protocol_status)

    # -- records -------------------------------------------------------------------------------------

    def _management(self, kind: int, view: bytes | bytearray, start: int, end: int) -> None:
        if kind == GET_VALUES:
            known = {b"FCGI_MAX_CONNS": str(self.max_conns).encode(), b"FCGI_MAX_REQS": str(self.max_reqs).encode(),
                     b"FCGI_MPXS_CONNS": b"1" if self.max_requests > 1 else b"0"}
            asked = parse_pairs(view[start:end], 64)
            answer = [(name, known[name]) for name, _ in asked if name in known]
            self._out += record(GET_VALUES_RESULT, 0, encode_pairs(answer))
        else:
            self._out += record(UNKNOWN_TYPE, 0, bytes((kind,)) + bytes(7))

    def _request_record(self, kind: int, request_id: int, view: bytes | bytearray, start: int, end: int,
                        events: list[Event]) -> None:
        request = self._requests.get(request_id)
        if kind == STDIN:
            if request is None:
                return  # an inactive request (refused, finished): ignored (spec 3.3)
            if request.params is not None:
                raise FastCGIError(f"FastCGI request {request_id} sent STDIN before the end of its PARAMS")
            if request.stdin_done:
                raise FastCGIError(f"FastCGI request {request_id} sent STDIN after the end of its STDIN")
            if end > start:
                events.append(StdinData(request_id, bytes(view[start:end])))
            else:
                request.stdin_done = True
                events.append(StdinEnd(request_id))
        elif kind == PARAMS:
            if request is None:
                return
            params = request.params
            if params is None:
                raise FastCGIError(f"FastCGI request {request_id} sent PARAMS after the end of its PARAMS")
            if end > start:
                if len(params) + end - start > self.max_params_size:
                    raise FastCGIError(f"FastCGI request {request_id} params are over the limit of "
                                       f"{self.max_params_size} bytes")
                params += view[start:end]
            else:
                request.params = None
                pairs = parse_pairs(params, self.max_params)
                request.ready = True
                events.append(RequestReady(request_id, pairs, request.keep_conn))
        elif kind == BEGIN_REQUEST:
            self._begin(request_id, request, view, start, end)
        elif kind == ABORT_REQUEST:
            if request is None or request.aborted:
                return
            request.aborted = True
            if request.ready:
                events.append(RequestAborted(request_id))
            else:  # the caller never saw it: end it here
                del self._requests[request_id]
                self._out += end_request(request_id, 0, REQUEST_COMPLETE)
        elif kind in _APP_TYPES or kind == GET_VALUES:
            raise FastCGIError(f"FastCGI record {_TYPE_NAMES[kind]} on request {request_id}: a type web servers "
                               f"do not send (or only on request id 0)")
        elif kind == DATA:
            if request is not None:
                raise FastCGIError(f"FastCGI request {request_id} sent DATA, which only the Filter role reads")
        else:
            self._out += record(UNKNOWN_TYPE, 0, bytes((kind,)) + bytes(7))

    def _begin(self, request_id: int, request: _Request | None, view: bytes | bytearray, start: int,
               end: int) -> None:
        if end - start != 8:
            raise FastCGIError(f"FastCGI BEGIN_REQUEST has {end - start} bytes of content, not 8")
        if request is not None:
            raise FastCGIError(f"FastCGI BEGIN_REQUEST for request {request_id}, which is already active")
        role = (view[start] << 8) | view[start + 1]
        if role != RESPONDER:
            self._out += end_request(request_id, 0, UNKNOWN_ROLE)
        elif len(self._requests) >= self.max_requests:
            self._out += end_request(request_id, 0, CANT_MPX_CONN if self.max_requests == 1 else OVERLOADED)
        else:
            self._requests[request_id] = _Request(bool(view[start + 2] & KEEP_CONN))
