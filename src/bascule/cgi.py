"""CGI meta-variables both ways: a request from uwsgi/FastCGI/SCGI variables, and CGI response heads.

nginx's ``uwsgi_pass``, ``fastcgi_pass`` and ``scgi_pass`` do not forward the HTTP request: they describe
it in CGI/1.1 meta-variables (RFC 3875) - ``REQUEST_METHOD``, ``REQUEST_URI``, ``SERVER_PROTOCOL``, one
``HTTP_*`` variable per header, ``CONTENT_LENGTH`` - in each protocol's own encoding. The wire parsers
(``protocols/uwsgi_wire.py``, ``scgi_wire.py``, ``fastcgi_wire.py``) turn bytes into a list of (name,
value) pairs; :func:`request_from_vars` turns that list into what bascule's Exchange carries, the same
fields an HTTP/1.1 request line and header block give. Nothing here does I/O or logs; errors are
:class:`CGIError`, whose message is one log line's worth.

Two kinds of facts come out, kept apart on purpose:

- the request itself (method, path, query, version, headers, body length): what any peer may say, as a
  client may say it over HTTP;
- what the proxy saw of the connection (:attr:`CGIRequest.scheme`, ``client``, ``server``,
  ``script_name``, ``path_info`` and the ``extra`` variables): believed only from a peer that
  ``TrustedProxies.trusts_peer`` accepts (``--forwarded-allow-ips``). Any process that can connect to a
  uwsgi socket can write ``REMOTE_ADDR=10.0.0.1`` and ``HTTPS=on``; for an untrusted peer the caller keeps
  the socket's own endpoints and scheme, exactly as for an HTTP peer's X-Forwarded-* headers. A malformed
  fact is dropped (None), never an error: it must not fail a request whose facts are then ignored anyway.

The path comes from ``REQUEST_URI``, the request target as the client sent it, still percent-encoded: it is
never decoded and re-encoded, so ``/a%2Fb`` stays distinct from ``/a/b`` (gunicorn's uwsgi worker rebuilds it
from the decoded ``PATH_INFO`` and loses that). Only without ``REQUEST_URI`` is the path rebuilt from
``SCRIPT_NAME`` + ``PATH_INFO`` (decoded by definition) and quoted once. The query follows the path: both
from ``REQUEST_URI`` when it is there (one request target, never half of a rewrite), else ``QUERY_STRING``.

Going back, the response: over FastCGI and SCGI the server writes a CGI response (RFC 3875 6.3), a
``Status:`` header line, the headers and a blank line, which nginx turns into the HTTP status line; uwsgi
takes an HTTP/1.x status line instead (the shared HTTP/1.1 writer's). :func:`status_header` and
:func:`response_head` write the CGI form.
"""

from __future__ import annotations

import http
import re
from urllib.parse import quote_from_bytes

from bascule.errors import BasculeError

__all__ = ["CGIError", "CGIRequest", "FixedLengthBody", "request_from_vars", "response_head", "status_header"]

Headers = list[tuple[bytes, bytes]]


class CGIError(BasculeError):
    """The variables do not describe a request (a missing method, a malformed length, a bad name). The
    message says what, for the log line; the connection is closed and no app is called."""


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
"""RFC 9110 5.6.2 token: a method, and a header name once ``HTTP_`` is stripped."""
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
"""What a header value must never hold: it would split a header block rebuilt from it."""
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f#]")
"""What a request target or query must never hold (RFC 9112 3.2: no whitespace or controls; no fragment)."""
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[^/?]*")
_ADDRESS = re.compile(rb"[0-9A-Fa-f:.]{2,45}\Z")
"""An IPv4 or IPv6 literal's alphabet (a cheap shape check: the value comes from a trusted proxy)."""
_NAME = re.compile(rb"[\x21-\x7e]{1,255}\Z")
PATH_SAFE = b"/!$&'()*+,;=:@-._~"
"""RFC 3986 pchar plus ``/``, left as they are when a decoded path is quoted again."""

_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0", b"HTTP/2.0": "2", b"HTTP/2": "2", b"HTTP/3.0": "3",
             b"HTTP/3": "3"}
"""``SERVER_PROTOCOL`` -> the ``http_version`` the gateways expect (nginx sends ``HTTP/2.0`` for HTTP/2)."""

# The variables read here, by slot in the list request_from_vars fills (a repeat of one up to _TYPE is an
# error: a second REQUEST_URI or CONTENT_LENGTH would be two answers to one question; of the others, the
# last counts).
_METHOD, _URI, _QUERY, _PROTOCOL, _LENGTH, _TYPE, _SCRIPT, _PATH_INFO = 0, 1, 2, 3, 4, 5, 6, 7
_HTTPS, _UWSGI_SCHEME, _REQUEST_SCHEME, _REMOTE_ADDR, _REMOTE_PORT, _SERVER_NAME, _SERVER_ADDR, _SERVER_PORT = (
    8, 9, 10, 11, 12, 13, 14, 15)
_SLOTS = {b"REQUEST_METHOD": _METHOD, b"REQUEST_URI": _URI, b"QUERY_STRING": _QUERY, b"SERVER_PROTOCOL": _PROTOCOL,
          b"CONTENT_LENGTH": _LENGTH, b"CONTENT_TYPE": _TYPE, b"SCRIPT_NAME": _SCRIPT, b"PATH_INFO": _PATH_INFO,
          b"HTTPS": _HTTPS, b"UWSGI_SCHEME": _UWSGI_SCHEME, b"REQUEST_SCHEME": _REQUEST_SCHEME,
          b"REMOTE_ADDR": _REMOTE_ADDR, b"REMOTE_PORT": _REMOTE_PORT, b"SERVER_NAME": _SERVER_NAME,
          b"SERVER_ADDR": _SERVER_ADDR, b"SERVER_PORT": _SERVER_PORT}
_FIELDS: dict[bytes, bytes] = {}
"""``HTTP_USER_AGENT`` -> ``user-agent``, for the names already checked: a web server sends the same few on
every request (bounded, as the WSGI gateway's environ key cache)."""
_SCHEMES = {b"http": "http", b"https": "https", b"HTTP": "http", b"HTTPS": "https"}
_HTTPS_ON = frozenset((b"on", b"ON", b"On", b"1"))


class CGIRequest:
    """One request described by CGI variables. The first group is the request; the second, what the proxy
    says about the connection, is for trusted peers only (see the module docstring)."""

    __slots__ = ("client", "content_length", "extra", "headers", "http_version", "method", "path_info",
                 "query_string", "raw_path", "scheme", "script_name", "server")

    def __init__(self, method: str, raw_path: bytes, query_string: bytes, http_version: str, headers: Headers,
                 content_length: int | None, scheme: str | None, client: tuple[str, int] | None,
                 server: tuple[str, int] | None, script_name: bytes | None, path_info: bytes | None,
                 extra: Headers) -> None:
        self.method = method
        self.raw_path = raw_path
        """The path as the client sent it (percent-encoded), or ``*``; without the query."""
        self.query_string = query_string
        self.http_version = http_version
        """"1.0", "1.1", "2" or "3": the client's protocol with the proxy, not the proxy's with us."""
        self.headers = headers
        """(lower-case name, value) pairs: the ``HTTP_*`` variables (``HTTP_X_API_KEY`` -> ``x-api-key``;
        CGI cannot tell ``_`` from ``-`` in a name, and nginx drops names with ``_`` by default), then
        content-type and content-length from ``CONTENT_TYPE`` and ``CONTENT_LENGTH``."""
        self.content_length = content_length
        """``CONTENT_LENGTH``; None when absent or empty (no body was declared: uwsgi and SCGI read 0 bytes,
        FastCGI reads STDIN to its end, which is how nginx streams a chunked body with buffering off)."""
        self.scheme = scheme
        """"http" or "https" as the proxy says (``UWSGI_SCHEME``, else ``HTTPS`` on/1, else
        ``REQUEST_SCHEME``); None when it says nothing usable. Trusted peers only."""
        self.client = client
        """(``REMOTE_ADDR``, ``REMOTE_PORT``; 0 when absent); None without an address (or nginx's ``unix:``
        for a client on a Unix socket). Trusted peers only."""
        self.server = server
        """(``SERVER_NAME``, else ``SERVER_ADDR``, ``SERVER_PORT``); None without both. Trusted peers only."""
        self.script_name = script_name
        """``SCRIPT_NAME`` as sent (decoded by CGI's definition), for a root_path. Trusted peers only, and with
        care: nginx's stock fastcgi_params set it to the whole path (``$fastcgi_script_name``, for PHP)."""
        self.path_info = path_info
        """``PATH_INFO`` as sent (decoded). Informative; the path is ``raw_path``."""
        self.extra = extra
        """The variables not read above (``DOCUMENT_ROOT``, ``GATEWAY_INTERFACE``, a deployment's own
        ``uwsgi_param APP_ENV prod``), in order, for a WSGI environ. Trusted peers only."""


def request_from_vars(pairs: Headers) -> CGIRequest:
    """The request that ``pairs`` (name, value) describe, in the order a wire parser found them.

    Raises CGIError when they do not describe one: no ``REQUEST_METHOD`` or a malformed one, no usable
    path, an unknown ``SERVER_PROTOCOL``, a ``CONTENT_LENGTH`` that is not a decimal number, a header
    name that is not a token or a value with CR, LF or NUL, an empty name, or one of the variables that
    describe the request itself (method, URI, query, protocol, length, type) given twice: two answers to
    one question. The others may repeat and the last one counts, as PHP-FPM and uWSGI take it: that is
    how ``fastcgi_param SCRIPT_NAME /shop;`` after ``include fastcgi_params;`` overrides the stock value.
    """
    found: list[bytes | None] = [None] * 16
    headers: Headers = []
    extra: Headers = []
    header_type: bytes | None = None
    slots = _SLOTS
    fields = _FIELDS
    for name, value in pairs:
        if name.startswith(b"HTTP_"):
            if 13 in value or 10 in value or 0 in value:  # _BAD_VALUE, a third of the regex's cost per value
                raise CGIError(f"CGI variable {name[:64].decode('latin-1')} has a CR, LF or NUL in its value")
            lower = fields.get(name)
            if lower is None:
                field = name[5:]
                if _TOKEN.match(field) is None:
                    raise CGIError(f"CGI variable {name[:64]!r} does not name a header (not a token after HTTP_)")
                lower = field.lower().replace(b"_", b"-")
                if len(fields) < 1024:
                    fields[name] = lower
            if lower == b"content-length" or lower == b"transfer-encoding":
                # nginx passes the client's framing on (a chunked body it streams, or had measured): the
                # body's framing is CONTENT_LENGTH's, or the wire's own end (FastCGI's STDIN), never these
                continue
            if lower == b"content-type":
                header_type = value  # used when CONTENT_TYPE itself is absent
                continue
            headers.append((lower, value))
            continue
        slot = slots.get(name, -1)
        if slot < 0:
            if not name:
                raise CGIError("a CGI variable has an empty name")
            extra.append((name, value))
        elif found[slot] is not None and slot <= _TYPE:
            raise CGIError(f"CGI variable {name.decode('latin-1')} is given twice")
        else:
            found[slot] = value
    raw_method = found[_METHOD]
    if raw_method is None or _TOKEN.match(raw_method) is None:
        shown = "missing" if raw_method is None else repr(raw_method[:32])
        raise CGIError(f"REQUEST_METHOD is {shown}, not an HTTP method token")
    method = raw_method.decode("ascii")
    raw_path, query = _target(found[_URI], found[_SCRIPT], found[_PATH_INFO], found[_QUERY])
    protocol = found[_PROTOCOL]
    if protocol is None or not protocol:
        http_version = "1.1"
    else:
        known = _VERSIONS.get(protocol)
        if known is None:
            raise CGIError(f"SERVER_PROTOCOL {protocol[:32]!r} is not HTTP/1.0, 1.1, 2 or 3")
        http_version = known
    content_type = found[_TYPE]
    if content_type is None:
        content_type = header_type
    elif _BAD_VALUE.search(content_type) is not None:
        raise CGIError("CONTENT_TYPE has a CR, LF or NUL in it")
    if content_type:
        headers.append((b"content-type", content_type))
    raw_length = found[_LENGTH]
    content_length: int | None = None
    if raw_length:
        if not raw_length.isdigit() or len(raw_length) > 18:
            raise CGIError(f"CONTENT_LENGTH {raw_length[:32]!r} is not a decimal number of bytes")
        content_length = int(raw_length)
        headers.append((b"content-length", raw_length))
    return CGIRequest(method, raw_path, query, http_version, headers, content_length, _scheme(found),
                      _client(found[_REMOTE_ADDR], found[_REMOTE_PORT]),
                      _server(found[_SERVER_NAME], found[_SERVER_ADDR], found[_SERVER_PORT]),
                      found[_SCRIPT], found[_PATH_INFO], extra)


def _target(uri: bytes | None, script: bytes | None, path_info: bytes | None,
            query_var: bytes | None) -> tuple[bytes, bytes]:
    """(raw path, query): from REQUEST_URI as sent, else rebuilt from the decoded SCRIPT_NAME + PATH_INFO."""
    if uri:
        if _BAD_TARGET.search(uri) is not None:
            raise CGIError(f"REQUEST_URI {uri[:64]!r} has whitespace, a control character or a fragment")
        if uri[0] == 0x2F:  # "/": origin-form, what nginx sends
            path, _, query = uri.partition(b"?")
            return path, query
        if uri == b"*":
            return uri, b""
        match = _ABSOLUTE.match(uri)
        if match is None:
            raise CGIError(f"REQUEST_URI {uri[:64]!r} is not a path, * or an absolute URL")
        path, _, query = uri[match.end():].partition(b"?")
        return path or b"/", query
    if script is None and path_info is None:
        raise CGIError("no REQUEST_URI, SCRIPT_NAME or PATH_INFO: the request has no path")
    decoded = (script or b"") + (path_info or b"")
    path = quote_from_bytes(decoded, PATH_SAFE).encode("ascii") or b"/"
    if path[0] != 0x2F:
        path = b"/" + path
    query = query_var or b""
    if _BAD_TARGET.search(query) is not None:
        raise CGIError(f"QUERY_STRING {query[:64]!r} has whitespace, a control character or a fragment")
    return path, query


def _scheme(found: list[bytes | None]) -> str | None:
    value = found[_UWSGI_SCHEME]
    if value is not None:
        return _SCHEMES.get(value)
    https = found[_HTTPS]
    if https is not None and https in _HTTPS_ON:
        return "https"
    value = found[_REQUEST_SCHEME]
    if value is not None:
        return _SCHEMES.get(value)
    return None


def _port(value: bytes | None) -> int:
    """A port variable: its number, or -1 when absent or not a decimal 0-65535."""
    if value is None or not value.isdigit() or len(value) > 5:
        return -1
    port = int(value)
    return port if port <= 65535 else -1


def _client(addr: bytes | None, port: bytes | None) -> tuple[str, int] | None:
    if addr is None or _ADDRESS.match(addr) is None:
        return None  # absent, "unix:" (nginx, for a client on a Unix socket) or not an address's shape
    number = _port(port)
    return addr.decode("ascii"), number if number >= 0 else 0


def _server(name: bytes | None, addr: bytes | None, port: bytes | None) -> tuple[str, int] | None:
    number = _port(port)
    if number < 0:
        return None
    if name and b":" in name:  # HAProxy's fcgi-app sends the Host header as is: "example.com:8080"
        head, _, tail = name.rpartition(b":")
        if tail.isdigit() and (head.endswith(b"]") or b":" not in head):
            name = head
    host = name if name and _NAME.match(name) is not None else addr
    if not host or _NAME.match(host) is None:
        return None
    return host.decode("ascii"), number


class FixedLengthBody:
    """The request body after a uwsgi or SCGI head: exactly ``length`` bytes, raw on the stream.

    ``feed`` returns the part of ``data`` that belongs to the body. Neither nginx nor any uwsgi/SCGI client
    sends anything after it (one request per connection), so a byte past the end is a CGIError, not the
    start of a next request.
    """

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def feed(self, data: bytes) -> bytes:
        size = len(data)
        if size > self.remaining:
            raise CGIError(f"{size - self.remaining} bytes arrived after the request body (CONTENT_LENGTH); "
                           f"this protocol carries one request per connection")
        self.remaining -= size
        return data


# -- responses ---------------------------------------------------------------------------------------


_STATUS_HEADERS: dict[int, bytes] = {}


def status_header(status: int) -> bytes:
    """``Status: 200 OK\\r\\n``, cached per code. A code http.HTTPStatus does not know gets an empty reason
    (RFC 3875 6.3.3 allows any reason; nginx keeps the number)."""
    line = _STATUS_HEADERS.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"HTTP status {status} is not three digits")
        try:
            phrase = http.HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        line = b"Status: %d %s\r\n" % (status, phrase)
        if len(_STATUS_HEADERS) < 1000:
            _STATUS_HEADERS[status] = line
    return line


def response_head(status: int, header_block: bytes = b"") -> bytes:
    """A CGI response head: the Status line, ``header_block`` (lines already checked and joined by the
    shared writer, each ending in CRLF) and the blank line. The body follows as is: no chunked coding,
    the proxy frames the response for its client."""
    return status_header(status) + header_block + b"\r\n"
