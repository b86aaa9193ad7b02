"""Configuration: the one declaration of every option, and its validation.

Each option is a field of :class:`Config`. The field's ``metadata`` (built with :func:`option`) carries
the help text, the choices and how the option is spelled on the command line; the CLI parser, the
config-file reader, the ``BASCULE_*`` environment reader and the docs table are all derived from these
fields, so an option is declared exactly once. Validation happens at construction and is loud: bad
values raise :class:`~bascule.errors.ConfigError` with a message that says what to do. No I/O here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from bascule.errors import ConfigError
from bascule.http3_options import check_http3
from bascule.ops.metrics import parse_buckets
from bascule.specs import (
    PROXY_PREFIX,
    Endpoint,
    bind_wire,
    is_loopback,
    parse_bind,
    parse_header,
    parse_listener,
    parse_mount,
    parse_static,
    parse_uds_mode,
    tcp_binds,
)
from bascule.trust import TrustedProxies

INTERFACES = ("auto", "asgi3", "asgi2", "wsgi")
LIFESPAN_MODES = ("auto", "on", "off")
WSGI_MODES = ("threads", "loop")
WSGI_THREAD_POLICIES = ("auto", "batch", "inherit")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
SSL_VERSIONS = ("TLSv1.2", "TLSv1.3")
PROXY_HEADERS_MODES = ("x-forwarded", "forwarded")  # bascule.trust.MODES
REQUEST_ID_MODES = ("auto", "on", "off")
FORWARDED_ALLOW_IPS = "127.0.0.1,::1,unix"
"""This host only: trust.py's loopback default plus Unix-socket peers, which are no more open than loopback
(gunicorn trusts them too; uvicorn needs them listed). nginx's proxy_pass or uwsgi_pass to a socket file then
works out of the box, as over loopback; nothing reached over the network is believed until listed."""
DEFAULT_ACCESS_LOG_FORMAT = '{client} - "{method} {target} HTTP/{http_version}" {status} {bytes} {duration_ms:.1f}ms'


def option(
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    positional: bool = False,
    cli_only: bool = False,
    metavar: str | None = None,
) -> dict[str, Any]:
    """Metadata for one Config field: everything the CLI, env, file readers and docs need."""
    return {
        "help": help,
        "choices": choices,
        "flag": flag,
        "positional": positional,
        "cli_only": cli_only,
        "metavar": metavar,
    }


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a bascule server. Build one with keyword arguments; bad values raise ConfigError."""

    app: str | None = field(
        default=None,
        metadata=option("The app to serve, as MODULE:ATTR (ATTR may be dotted).", positional=True,
                        metavar="MODULE:ATTR"),
    )
    factory: bool = field(default=False, metadata=option("Treat MODULE:ATTR as a factory: call it with no "
                                                         "arguments to get the app."))
    app_dir: str = field(default=".", metadata=option("Directory put first on sys.path before importing the "
                                                      "app.", metavar="DIR"))
    interface: str = field(default="auto", metadata=option("The app's interface; auto detects ASGI 3, ASGI 2 "
                                                           "or WSGI.", choices=INTERFACES))
    mount: tuple[str, ...] = field(default=(), metadata=option(
        "Mount another app at a path prefix, as /PREFIX=MODULE:ATTR. Repeatable; WSGI and ASGI apps mix "
        "freely; the longest matching prefix wins.", metavar="/PREFIX=MODULE:ATTR"))
    static: tuple[str, ...] = field(default=(), metadata=option(
        "Serve the files under DIR at a path prefix, as /PREFIX=DIR, from the server itself (no app): ETag, "
        "304, Range, index.html, no dotfiles, nothing outside DIR (docs/static.md). Repeatable; the longest "
        "matching prefix among these and the app mounts wins.", metavar="/PREFIX=DIR"))
    static_max_age: int = field(default=60, metadata=option(
        "Cache-Control max-age of static files, in seconds (clients revalidate with the ETag afterwards).",
        metavar="SECONDS"))
    static_fallback: str | None = field(default=None, metadata=option(
        "Single-page apps: a page request (Accept: text/html) for a path no file matches gets this file, "
        "relative to each --static directory (for example index.html), with 200; other requests still get 404.",
        metavar="FILE"))
    static_immutable: bool = field(default=True, metadata=option(
        "Send content-hashed static files (listed in a Django staticfiles.json or Vite manifest, else names "
        "such as app.3f2a9c1b7e4d.css) with Cache-Control: public, max-age=31536000, immutable."))
    static_follow_symlinks: bool = field(default=False, metadata=option(
        "Let symlinks inside a --static directory lead out of it (collectstatic --link); off, a file or "
        "directory a symlink places outside DIR is a 404. Request paths still never climb out (no .., no "
        "dotfiles, nor a link to one)."))
    host: str = field(default="127.0.0.1", metadata=option("Address to bind.", metavar="ADDRESS"))
    port: int = field(default=8000, metadata=option("Port to bind (0 picks a free one).", metavar="PORT"))
    uds: str | None = field(default=None, metadata=option("Bind a Unix domain socket at this path instead of "
                                                          "TCP.", metavar="PATH"))
    fd: int | None = field(default=None, metadata=option("Serve on an already bound socket passed as this file "
                                                         "descriptor.", metavar="FD"))
    bind: tuple[str, ...] = field(default=(), metadata=option(
        "Listen here; repeatable, replaces --host/--port/--uds/--fd. HOST:PORT, [IPV6]:PORT, :PORT (every "
        "address), unix:PATH or fd://N; uwsgi://, scgi:// and fastcgi:// before any of these serve nginx's "
        "uwsgi_pass, scgi_pass and fastcgi_pass (fastcgi://unix:/run/app.sock); a proxy+ prefix (proxy+HOST:PORT) "
        "requires a PROXY protocol header there.",
        metavar="ADDRESS"))
    uds_mode: str | None = field(default=None, metadata=option(
        "Permissions of the Unix sockets bound with --uds or --bind unix:PATH, in octal (for example 660); "
        "unset they are 666, as uvicorn's, so a proxy running as another user can connect.", metavar="MODE"))
    reuse_port: bool = field(default=False, metadata=option(
        "Set SO_REUSEPORT on TCP listeners, so another server (another bascule, for a blue/green switch) "
        "can bind the same port. Workers of one server share its sockets either way."))
    backlog: int = field(default=2048, metadata=option("Maximum number of pending connections.", metavar="N"))
    root_path: str = field(default="", metadata=option("Mount point of the whole server behind a proxy: set as "
                                                       "ASGI root_path / WSGI SCRIPT_NAME.", metavar="PATH"))
    lifespan: str = field(default="auto", metadata=option("ASGI lifespan: auto runs it and tolerates apps "
                                                          "without support, on requires it, off skips it.",
                                                          choices=LIFESPAN_MODES))
    log_level: str = field(default="info", metadata=option("Log level of the bascule.error logger.",
                                                           choices=LOG_LEVELS))
    log_config: str | None = field(default=None, metadata=option(
        "Logging configuration file: .json or .yaml (dictConfig) or .ini (fileConfig).", metavar="FILE"))
    access_log: bool = field(default=True, metadata=option("Log one line per request to bascule.access."))
    access_log_format: str = field(default=DEFAULT_ACCESS_LOG_FORMAT, metadata=option(
        "Access-log line as a str.format template. Fields: client (the connection's peer), app_client (the "
        "client a trusted proxy named, as the app sees it), method, target, path, query, http_version, status, "
        "bytes, duration (s), duration_ms, ttfb_ms (to the response head), user_agent, referer, request_line, "
        "request_id, traceparent. Or json: one JSON object per line with fixed keys (docs/logging.md).",
        metavar="TEMPLATE"))
    request_id: str = field(default="auto", metadata=option(
        "Give every request an id: a trusted proxy's (--request-id-header from a peer in --forwarded-allow-ips, "
        "if well formed), else a random one. Apps see it (the header, ASGI scope['extensions']"
        "['bascule.request_id']['id'], WSGI environ['bascule.request_id']), the response echoes it, the access "
        "log has it. auto: on with --access-log-format json.", choices=REQUEST_ID_MODES))
    request_id_header: str = field(default="X-Request-ID", metadata=option(
        "The request-id header: believed from trusted peers, set on the request the app sees, echoed in the "
        "response.", metavar="NAME"))
    timeout_keep_alive: float = field(default=5.0, metadata=option(
        "Close a keep-alive connection idle for this many seconds.", metavar="SECONDS"))
    timeout_graceful_shutdown: float = field(default=30.0, metadata=option(
        "On shutdown, wait this many seconds for in-flight requests before closing them.", metavar="SECONDS"))
    limit_concurrency: int | None = field(default=None, metadata=option(
        "Answer 503 to requests arriving while this many are in flight.", metavar="N"))
    limit_request_line: int = field(default=8192, metadata=option(
        "Longest request target accepted, in bytes; longer ones get 414.", metavar="BYTES"))
    limit_request_headers: int = field(default=100, metadata=option(
        "Most header fields accepted in a request head (and in a chunked body's trailer); more get 431.",
        metavar="N"))
    limit_request_header_size: int = field(default=65536, metadata=option(
        "Largest request head accepted, in bytes (request line and all fields); larger ones get 431.",
        metavar="BYTES"))
    limit_request_field_size: int = field(default=8190, metadata=option(
        "Longest single header (or trailer) field line accepted in an HTTP/1.1 request, in bytes, counted as "
        "gunicorn does (name, colon, space and value; its name and default too); a longer one gets 431. "
        "HTTP/2 bounds the whole decoded field list by --limit-request-header-size instead.", metavar="BYTES"))
    limit_request_body: int | None = field(default=104857600, metadata=option(
        "Largest request body accepted, in bytes (default 100 MiB), checked while it streams, chunked or "
        "not: a declared Content-Length above it gets 413 before the app runs; a chunked body that grows "
        "past it gets 413 if the app has not answered yet, and the app sees a disconnect. Unset: no limit.",
        metavar="BYTES"))
    limit_requests_per_connection: int | None = field(default=None, metadata=option(
        "Close a keep-alive connection after it has carried this many requests.", metavar="N"))
    limit_connections: int | None = field(default=None, metadata=option(
        "Most concurrent connections per worker; a connection beyond it gets 503 and is closed.",
        metavar="N"))
    timeout_request_head: float = field(default=10.0, metadata=option(
        "Close a connection (408) whose request head has not arrived completely this many seconds after its "
        "first bytes (slowloris).", metavar="SECONDS"))
    timeout_body_idle: float = field(default=30.0, metadata=option(
        "Close a connection (408 if nothing was answered) when no byte of the request body the app is "
        "waiting for arrives for this many seconds. HTTP/2 and HTTP/3 end only that stream (408, or a "
        "reset once the response started); the app sees a disconnect.", metavar="SECONDS"))
    timeout_request: float | None = field(default=None, metadata=option(
        "Give an app this many seconds per request: then 504 if it sent nothing yet, else the connection "
        "is closed; an ASGI app's task is cancelled, a WSGI app's result is discarded. Unset: no limit.",
        metavar="SECONDS"))
    server_header: bool = field(default=True, metadata=option("Send a 'server: bascule' header."))
    date_header: bool = field(default=True, metadata=option("Send a 'date' header."))
    header: tuple[str, ...] = field(default=(), metadata=option(
        "Add a default response header, as NAME:VALUE. Repeatable.", metavar="NAME:VALUE"))
    wsgi_threads: int = field(default=16, metadata=option(
        "Threads running WSGI apps, so the event loop keeps serving while they work.", metavar="N"))
    wsgi_mode: str = field(default="threads", metadata=option(
        "How WSGI apps run: 'threads' (a pool; the loop keeps serving while apps work or wait) or 'loop' "
        "(on the event-loop thread once the body has arrived: fastest for quick CPU-bound apps, but an app "
        "that waits stalls every connection).", choices=WSGI_MODES))
    wsgi_thread_policy: str = field(default="auto", metadata=option(
        "The scheduling policy of the WSGI pool's threads (Linux): 'batch' (SCHED_BATCH: the same CPU share and "
        "nice value, but waking a thread never preempts the event loop: ~7% more new connections per second in "
        "threads mode on a busy core, but on a core kept busy by the loop, as ASGI streams beside WSGI ones do, "
        "the WSGI threads get the CPU and the GIL late and their streams starve), 'inherit' (the process's own), "
        "or 'auto': batch when every app is WSGI, with no static directory, TLS or HTTP/3, and no more workers "
        "than CPUs (the loop then works only for the threads), else inherit. Threads and processes an app "
        "starts from a request inherit it; a process started under another policy than the default (chrt) "
        "keeps it (docs/performance.md).",
        choices=WSGI_THREAD_POLICIES))
    runtime_tuning: bool = field(default=True, metadata=option(
        "Tune each serving process for a server's allocation pattern: glibc malloc keeps 4 MiB of freed heap "
        "(and a 4 MiB mmap threshold) instead of returning it after every burst, and Python's garbage "
        "collector collects its young generation every 10,000 objects, not 700, and leaves out what was alive "
        "once the app had started (gc.freeze). glibc's MALLOC_*_ variables and thresholds the app set itself "
        "are kept (docs/performance.md)."))
    workers: int = field(default=1, metadata=option(
        "Worker processes. With more than one, a master process binds the listeners, forks the workers and "
        "supervises them (signals: docs/deployment.md). Default 1, or $WEB_CONCURRENCY when it is set.",
        metavar="N"))
    preload: bool = field(default=False, metadata=option(
        "Import the app in the master before forking the workers (shares memory, fails before any fork); "
        "SIGHUP then restarts workers on the code the master loaded."))
    timeout_worker_healthcheck: float = field(default=30.0, metadata=option(
        "With a master: kill and replace a worker whose event loop has not run for this many seconds, after "
        "logging the stacks of its threads. 0 turns the check off.", metavar="SECONDS"))
    max_requests: int | None = field(default=None, metadata=option(
        "Replace a worker after it has served this many requests (the replacement starts first, the old "
        "worker drains); needs a master, which this option starts even with --workers 1.", metavar="N"))
    max_requests_jitter: int = field(default=0, metadata=option(
        "Add a random 0..N to --max-requests for each worker, so workers do not all recycle at once.",
        metavar="N"))
    max_worker_memory: int | None = field(default=None, metadata=option(
        "Replace a worker whose resident memory (RSS) exceeds this many MiB, gracefully; Linux only; needs "
        "a master, which this option starts even with --workers 1.", metavar="MIB"))
    reload: bool = field(default=False, metadata=option(
        "Development: restart the workers when a watched file changes (needs watchfiles: pip install "
        "'bascule[reload]'). A broken edit is reported and the next change is awaited."))
    reload_dir: tuple[str, ...] = field(default=(), metadata=option(
        "Directory to watch with --reload; repeatable; default: --app-dir.", metavar="DIR"))
    reload_include: tuple[str, ...] = field(default=(), metadata=option(
        "Glob of more files that trigger --reload, besides *.py; repeatable.", metavar="GLOB"))
    reload_exclude: tuple[str, ...] = field(default=(), metadata=option(
        "Glob of files or directories that never trigger --reload; repeatable.", metavar="GLOB"))
    pid: str | None = field(default=None, metadata=option(
        "Write the server's process id (the master's, with workers) to this file; removed on exit.",
        metavar="FILE"))
    admin_bind: str | None = field(default=None, metadata=option(
        "Serve the admin routes (/livez, /readyz, /metrics, /status, /status.json) on this separate listener: "
        "a loopback HOST:PORT (127.0.0.1:9000, [::1]:9000) or unix:PATH; never on the app's listeners. With "
        "workers the master serves it. Off by default (docs/deployment.md).", metavar="ADDRESS"))
    readiness_check: str | None = field(default=None, metadata=option(
        "An app hook /readyz also asks, as MODULE:ATTR: a callable taking no arguments (sync or async) that "
        "returns something true when the app can take traffic; run at most once a second, an async one on the "
        "serving loop, a sync one in a thread; an exception, or no answer within 5 s, counts as not ready.",
        metavar="MODULE:ATTR"))
    shutdown_delay: float = field(default=0.0, metadata=option(
        "On SIGTERM, fail /readyz at once but keep accepting and serving for this many seconds (for a load "
        "balancer or Kubernetes to stop sending traffic), then stop gracefully. A second SIGTERM or SIGINT "
        "skips the rest of the delay.", metavar="SECONDS"))
    ws: bool = field(default=True, metadata=option(
        "Serve WebSocket upgrades to ASGI apps; with --no-ws an upgrade request reaches the app as a plain "
        "HTTP request (WSGI apps always get it that way)."))
    ws_max_size: int = field(default=16 * 1024 * 1024, metadata=option(
        "Largest WebSocket message accepted, in bytes (after decompression); a bigger one closes the "
        "connection with code 1009.", metavar="BYTES"))
    ws_max_queue: int = field(default=32, metadata=option(
        "WebSocket messages buffered for an app that has not received them yet; reading from the client "
        "pauses at this many, or sooner once they add up to --ws-max-size bytes.", metavar="N"))
    ws_ping_interval: float = field(default=20.0, metadata=option(
        "Send a WebSocket ping every this many seconds to detect dead peers; 0 turns pings off.",
        metavar="SECONDS"))
    ws_ping_timeout: float = field(default=20.0, metadata=option(
        "Close a WebSocket (code 1011) whose peer has not answered a ping within this many seconds.",
        metavar="SECONDS"))
    ws_per_message_deflate: bool = field(default=True, metadata=option(
        "Offer WebSocket compression (permessage-deflate) to clients that ask for it."))
    compress: bool = field(default=False, metadata=option(
        "Compress app responses (gzip; brotli and zstd too with the extras bascule[brotli], bascule[zstd]) for "
        "clients whose Accept-Encoding takes them: text types of at least --compress-min-size bytes, streamed "
        "ones included; never ranges, encoded bodies or no-transform (docs/compression.md)."))
    compress_min_size: int = field(default=512, metadata=option(
        "--compress: leave responses smaller than this many bytes (declared, or whole in one message) as they "
        "are.", metavar="BYTES"))
    compress_types: str = field(default="", metadata=option(
        "--compress: the media types to compress, comma-separated, 'text/*' style wildcards allowed; default: "
        "text/*, JSON, JavaScript, XML, SVG, wasm (docs/compression.md).", metavar="LIST"))
    metrics: bool | None = field(default=None, metadata=option(
        "Collect Prometheus metrics (docs/metrics.md), summed over the workers by the master and served at "
        "/metrics on the admin listener; default: on when --admin-bind is set."))
    metrics_buckets: str = field(default="", metadata=option(
        "The request duration histogram's bucket bounds in seconds, comma-separated and increasing; default: "
        "0.005,0.01,0.025,0.05,0.075,0.1,0.25,0.5,0.75,1,2.5,5,7.5,10.", metavar="LIST"))
    http2: bool = field(default=True, metadata=option(
        "Serve HTTP/2: offered first over TLS (ALPN h2), and in cleartext to clients that open with the "
        "HTTP/2 preface or ask for Upgrade: h2c."))
    h2_max_concurrent_streams: int = field(default=100, metadata=option(
        "HTTP/2: requests a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).",
        metavar="N"))
    h2_initial_window_size: int = field(default=256 * 1024, metadata=option(
        "HTTP/2: request body bytes a client may send on one stream before the app reads them "
        "(SETTINGS_INITIAL_WINDOW_SIZE); bounds the memory a stream holds.", metavar="BYTES"))
    http3: bool = field(default=False, metadata=option(
        "Serve HTTP/3 over QUIC (needs TLS and pip install 'bascule[http3]'): a UDP listener on the host and port "
        "of every TLS TCP listener, one SO_REUSEPORT socket per worker, announced by Alt-Svc (docs/http3.md)."))
    http3_alt_svc_max_age: int = field(default=86400, metadata=option(
        "HTTP/3: the ma= of the Alt-Svc header TCP responses carry to point clients at the UDP port, in seconds; "
        "0 sends no Alt-Svc.", metavar="SECONDS"))
    http3_retry: bool = field(default=False, metadata=option(
        "HTTP/3: validate each client's address with a QUIC Retry before keeping any state for it (costs a round "
        "trip; against spoofed-source floods)."))
    http3_0rtt: bool = field(default=False, metadata=option(
        "HTTP/3: accept 0-RTT early data from resumed clients (session tickets kept in memory, per worker). Early "
        "requests can be replayed by an attacker: only for apps whose GETs change nothing (docs/http3.md)."))
    ssl_certfile: str | None = field(default=None, metadata=option(
        "Serve HTTPS (and wss) with this PEM certificate chain (the server's certificate first). It may also "
        "hold the private key; otherwise pass --ssl-keyfile. SIGHUP reloads it (docs/deployment.md).",
        metavar="FILE"))
    ssl_keyfile: str | None = field(default=None, metadata=option(
        "PEM private key of --ssl-certfile.", metavar="FILE"))
    ssl_keyfile_password: str | None = field(default=None, metadata=option(
        "Password of an encrypted --ssl-keyfile (prefer BASCULE_SSL_KEYFILE_PASSWORD or the config file: "
        "a flag shows in ps).", metavar="PASSWORD"))
    ssl_ca_certs: str | None = field(default=None, metadata=option(
        "PEM file of the CA certificates that client certificates are verified against (mTLS).",
        metavar="FILE"))
    ssl_cert_reqs: int = field(default=0, metadata=option(
        "Client certificates (mTLS), as in uvicorn: 0 not asked for, 1 optional (verified when sent), 2 "
        "required (a client without one fails the handshake). 1 and 2 need --ssl-ca-certs.", metavar="0|1|2"))
    ssl_ciphers: str | None = field(default=None, metadata=option(
        "OpenSSL cipher list for TLS 1.2, such as uvicorn's TLSv1 (TLS 1.3 suites are OpenSSL's own). Unset: "
        "Python's default, forward-secret ECDHE/DHE suites with AES or ChaCha20 and no SHA-1.",
        metavar="CIPHERS"))
    ssl_min_version: str = field(default="TLSv1.2", metadata=option(
        "Oldest TLS version accepted.", choices=SSL_VERSIONS))
    forwarded_allow_ips: str = field(default=FORWARDED_ALLOW_IPS, metadata=option(
        "Proxies believed about the client: comma-separated IP addresses, CIDR ranges, 'unix' (Unix-socket "
        "peers) or '*' (any peer). Decides whom to believe for --proxy-headers, --proxy-protocol and uwsgi "
        "variables. Default this host (loopback and Unix-socket peers), or $FORWARDED_ALLOW_IPS when it is set "
        "(uvicorn's and gunicorn's variable).",
        metavar="LIST"))
    proxy_headers: bool = field(default=True, metadata=option(
        "Believe the client, scheme (and the opted-in host, port, prefix) that a proxy listed in "
        "--forwarded-allow-ips sends in its headers (the family --proxy-headers-mode names); the client is "
        "the rightmost hop that is not a listed proxy."))
    proxy_headers_mode: str = field(default="x-forwarded", metadata=option(
        "Which header family the proxy sets: X-Forwarded-For/-Proto (and -Host, -Port, -Prefix), or RFC 7239 "
        "Forwarded. Never both: a client could smuggle values through the family the proxy leaves alone.",
        choices=PROXY_HEADERS_MODES))
    forwarded_host: bool = field(default=False, metadata=option(
        "Also believe the host the proxy forwards (X-Forwarded-Host, or Forwarded host=): the app's Host "
        "header and server name. Only if the proxy overwrites it: apps put it in the links they mail."))
    forwarded_port: bool = field(default=False, metadata=option(
        "Also believe X-Forwarded-Port (x-forwarded mode): the server port, and the Host header's port."))
    forwarded_prefix: bool = field(default=False, metadata=option(
        "Also believe X-Forwarded-Prefix (x-forwarded mode): the path the proxy mounted the server under, as "
        "ASGI root_path / WSGI SCRIPT_NAME in place of --root-path."))
    proxy_protocol: bool = field(default=False, metadata=option(
        "Require a PROXY protocol v1/v2 header (HAProxy send-proxy, AWS NLB) first on every connection to a "
        "TCP listener, from a sender in --forwarded-allow-ips, within 3 seconds; its addresses become the "
        "connection's. For one listener only: --bind proxy+HOST:PORT."))
    config: str | None = field(default=None, metadata=option(
        "Read options from this TOML file (default: ./bascule.toml, else [tool.bascule] in ./pyproject.toml).",
        cli_only=True, metavar="FILE"))

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choice("interface", self.interface, INTERFACES)
        _check_choice("lifespan", self.lifespan, LIFESPAN_MODES)
        _check_choice("log_level", self.log_level, LOG_LEVELS)
        _check_choice("wsgi_mode", self.wsgi_mode, WSGI_MODES)
        _check_choice("wsgi_thread_policy", self.wsgi_thread_policy, WSGI_THREAD_POLICIES)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.backlog < 1:
            raise ConfigError(f"backlog must be at least 1, got {self.backlog}")
        if self.wsgi_threads < 1:
            raise ConfigError(f"wsgi_threads must be at least 1, got {self.wsgi_threads}")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            raise ConfigError(f"limit_concurrency must be at least 1, got {self.limit_concurrency}")
        for name in ("timeout_keep_alive", "timeout_graceful_shutdown"):
            if math.isnan(getattr(self, name)):
                raise ConfigError(f"{name} must be a number of seconds, got nan")
        if self.timeout_keep_alive <= 0:
            raise ConfigError(f"timeout_keep_alive must be positive, got {self.timeout_keep_alive}")
        if self.timeout_graceful_shutdown < 0:
            raise ConfigError(f"timeout_graceful_shutdown must be >= 0, got {self.timeout_graceful_shutdown}")
        _check_websocket(self)
        _check_limits(self)
        _check_tls(self)
        if self.fd is not None and self.fd < 0:
            raise ConfigError(f"fd must be a non-negative file descriptor, got {self.fd}")
        _check_process_model(self)
        _check_admin(self)
        _check_listeners(self)
        _check_admin_apart(self)
        check_http3(self)
        _check_proxies(self)
        _check_request_id(self)
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(f"root_path must start with '/' and not end with one, got {self.root_path!r}")
        for spec in self.mount:
            parse_mount(spec)
        for spec in self.static:
            parse_static(spec)
        if self.static_fallback is not None and not self.static:
            raise ConfigError("static_fallback applies to --static directories: add --static /PREFIX=DIR")
        if self.compress_min_size < 0:
            raise ConfigError(f"compress_min_size must be >= 0 bytes, got {self.compress_min_size}")
        for media in self.compress_types.split(","):
            if media.strip() and not _MEDIA_TYPE.fullmatch(media.strip()):
                raise ConfigError(f"compress_types must be media types like text/* or application/json, got "
                                  f"{media.strip()!r}")
        try:
            parse_buckets(self.metrics_buckets)
        except ValueError as exc:
            raise ConfigError(f"metrics_buckets: {exc}") from None
        if self.static_max_age < 0:
            raise ConfigError(f"static_max_age must be >= 0 seconds, got {self.static_max_age}")
        for spec in self.header:
            parse_header(spec)
        if self.app is None and not self.mount and not self.static:
            raise ConfigError("no app given: pass MODULE:ATTR (for example 'main:app'), --mount /PREFIX=MODULE:ATTR "
                              "or --static /PREFIX=DIR")
        try:
            self.access_log_format.format(**_SAMPLE_ACCESS_FIELDS)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            raise ConfigError(f"access_log_format is not a valid template ({exc!r}); fields are: "
                              f"{', '.join(sorted(_SAMPLE_ACCESS_FIELDS))}") from None

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, source: str) -> Config:
        """Build from a mapping whose keys may use '-' or '_'; unknown keys are errors with a suggestion."""
        known = {f.name for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key == "config":
                raise ConfigError(f"'config' cannot be set in {source}: pass --config on the command line")
            if key not in known:
                raise ConfigError(f"unknown option {raw_key!r} in {source}{did_you_mean(key, known)}")
            clean[key] = value
        return cls(**clean)

    @property
    def request_ids(self) -> bool:
        """Whether requests get ids (--request-id on, or auto with JSON access lines)."""
        return self.request_id == "on" or (self.request_id == "auto" and self.access_log
                                            and self.access_log_format == "json")

    @property
    def tls_enabled(self) -> bool:
        """Whether the listeners speak TLS (HTTPS, wss): an ssl_certfile is set."""
        return self.ssl_certfile is not None

    def replace(self, **changes: Any) -> Config:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)


_SAMPLE_ACCESS_FIELDS: dict[str, Any] = {
    "client": "127.0.0.1:5000", "method": "GET", "target": "/", "path": "/", "query": "",
    "http_version": "1.1", "status": 200, "bytes": 13, "duration": 0.001, "duration_ms": 1.0,
    "user_agent": "-", "referer": "-", "request_line": "GET / HTTP/1.1", "app_client": "203.0.113.7:0",
    "ttfb_ms": 1.0, "request_id": "-", "traceparent": "-",
}
ACCESS_LOG_FIELDS = tuple(sorted(_SAMPLE_ACCESS_FIELDS))


@functools.cache
def _field_types() -> dict[str, tuple[type, ...]]:
    """Accepted runtime types per field, from the annotations (``X | None`` -> (X, NoneType))."""
    hints = typing.get_type_hints(Config)
    out: dict[str, tuple[type, ...]] = {}
    for name, hint in hints.items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        out[name] = tuple(typing.get_origin(a) or a for a in args)
    return out


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)", re.IGNORECASE)

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               tuple: "a list of strings", type(None): "unset"}


def _check_types(config: Config) -> None:
    """Reject values of the wrong type (Config(port="80")) with a message naming the option."""
    for name, accepted in _field_types().items():
        value = getattr(config, name)
        if isinstance(value, list) and tuple in accepted:
            value = tuple(value)
            object.__setattr__(config, name, value)
        kind = type(value)
        ok = kind in accepted or (kind is int and float in accepted)
        if ok and kind is tuple:
            ok = all(type(item) is str for item in value)
        if not ok:
            want = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in accepted)
            raise ConfigError(f"option {name} must be {want}, got {value!r}")


def did_you_mean(word: str, candidates: Any) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}{did_you_mean(value, choices)}")


def _check_process_model(config: Config) -> None:
    if config.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {config.workers}")
    if math.isnan(config.timeout_worker_healthcheck) or config.timeout_worker_healthcheck < 0:
        raise ConfigError(f"timeout_worker_healthcheck must be a number of seconds >= 0 (0 turns it off), got "
                          f"{config.timeout_worker_healthcheck}")
    if config.max_requests is not None and config.max_requests < 1:
        raise ConfigError(f"max_requests must be at least 1 (leave it unset to never recycle), got "
                          f"{config.max_requests}")
    if config.max_requests_jitter < 0:
        raise ConfigError(f"max_requests_jitter must be >= 0, got {config.max_requests_jitter}")
    if config.max_requests_jitter and config.max_requests is None:
        raise ConfigError("max_requests_jitter needs max_requests: set --max-requests too")
    if config.max_worker_memory is not None and config.max_worker_memory < 1:
        raise ConfigError(f"max_worker_memory must be at least 1 MiB, got {config.max_worker_memory}")
    if not config.reload:
        for name in ("reload_dir", "reload_include", "reload_exclude"):
            if getattr(config, name):
                raise ConfigError(f"{name} only applies with reload: add --reload, or drop --{name.replace('_', '-')}")
    elif config.preload:
        raise ConfigError("reload and preload exclude each other: --reload restarts workers to load new code, "
                          "--preload loads it once in the master")
    if config.pid is not None and not config.pid:
        raise ConfigError("pid must be a file path")


def _check_admin(config: Config) -> None:
    """--admin-bind on loopback or a Unix socket only: its routes tell anyone who reaches them how the server
    is doing (and /metrics what it serves), so they are not put on the network by a typo."""
    if math.isnan(config.shutdown_delay) or config.shutdown_delay < 0:
        raise ConfigError(f"shutdown_delay must be a number of seconds >= 0, got {config.shutdown_delay}")
    if config.readiness_check is not None:
        module, sep, attr = config.readiness_check.partition(":")
        if not sep or not module or not attr:
            raise ConfigError(f"readiness_check {config.readiness_check!r} must look like MODULE:ATTR, for example "
                              f"main:ready")
    spec = config.admin_bind
    if spec is None:
        return
    if spec.startswith(PROXY_PREFIX) or bind_wire(spec)[0] != "http" or spec.startswith("fd://"):
        raise ConfigError(f"admin_bind {spec!r} must be a loopback HOST:PORT or unix:PATH (no proxy+, uwsgi://, "
                          f"scgi://, fastcgi:// or fd://)")
    try:
        endpoint = parse_bind(spec)
    except ConfigError as exc:  # the parser's words are --bind's: name this option, and no fd://N
        raise ConfigError(str(exc).replace("bind ", "admin_bind ", 1).replace(", unix:PATH or fd://N",
                                                                              " or unix:PATH")) from None
    if endpoint.kind == "tcp" and isinstance(endpoint.address, tuple) and not is_loopback(endpoint.address[0]):
        raise ConfigError(f"admin_bind {spec!r} is not a loopback address: the admin routes are for this host only; "
                          f"use 127.0.0.1:PORT, [::1]:PORT or unix:PATH (and a proxy in front if they must be reached "
                          f"from elsewhere)")


WILDCARD_HOSTS = ("", "::")
"""Hosts whose listener takes a port on every address (IPv4 too: a dual-stack socket)."""


def _check_admin_apart(config: Config) -> None:
    """--admin-bind must not name one of the app's own listeners: a Unix socket path would be taken over (binding
    one replaces a socket file already there, so the second listener silently takes the first one's place), and a
    TCP port would fail the start with an "address in use" that reads like another process holding it."""
    spec = config.admin_bind
    if spec is None:
        return
    admin = parse_bind(spec)
    if config.bind:
        apps = [parse_listener(bind)[0] for bind in tcp_binds(config.bind)]
    elif config.fd is not None:
        apps = []
    elif config.uds:
        apps = [Endpoint("unix", config.uds)]
    else:
        apps = [Endpoint("tcp", (config.host, config.port))]
    for app in apps:
        if app.kind != admin.kind:
            continue
        if isinstance(app.address, str) and isinstance(admin.address, str):
            clash = os.path.normpath(app.address) == os.path.normpath(admin.address)
        elif isinstance(app.address, tuple) and isinstance(admin.address, tuple):
            (app_host, app_port), (admin_host, admin_port) = app.address, admin.address
            every = app_host in WILDCARD_HOSTS or (app_host == "0.0.0.0" and ":" not in admin_host)
            clash = app_port == admin_port != 0 and (app_host == admin_host or every)
        else:
            clash = False
        if clash:
            raise ConfigError(f"admin_bind {spec!r} is also where the app listens: give the admin routes an address of "
                              f"their own")


def _check_websocket(config: Config) -> None:
    if config.ws_max_size < 1:
        raise ConfigError(f"ws_max_size must be at least 1 byte, got {config.ws_max_size}")
    if config.h2_max_concurrent_streams < 1:
        raise ConfigError(f"h2_max_concurrent_streams must be at least 1, got {config.h2_max_concurrent_streams}")
    if not 1024 <= config.h2_initial_window_size <= 2**31 - 1:
        raise ConfigError(f"h2_initial_window_size must be between 1024 and 2147483647, "
                          f"got {config.h2_initial_window_size}")
    if config.ws_max_queue < 1:
        raise ConfigError(f"ws_max_queue must be at least 1, got {config.ws_max_queue}")
    if math.isnan(config.ws_ping_interval) or config.ws_ping_interval < 0:
        raise ConfigError(f"ws_ping_interval must be a number of seconds >= 0 (0 turns pings off), got "
                          f"{config.ws_ping_interval}")
    if math.isnan(config.ws_ping_timeout) or config.ws_ping_timeout <= 0:
        raise ConfigError(f"ws_ping_timeout must be a positive number of seconds, got {config.ws_ping_timeout}")


def _check_tls(config: Config) -> None:
    """The TLS options that depend on each other; the files themselves are read by bascule.tls at startup."""
    _check_choice("ssl_min_version", config.ssl_min_version, SSL_VERSIONS)
    if config.ssl_cert_reqs not in (0, 1, 2):
        raise ConfigError(f"ssl_cert_reqs must be 0 (no client certificate), 1 (optional) or 2 (required), "
                          f"got {config.ssl_cert_reqs}")
    if config.ssl_certfile is None:
        if config.ssl_keyfile is not None:
            raise ConfigError("ssl_keyfile needs ssl_certfile: add --ssl-certfile with the certificate of that key")
        for name in ("ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers"):
            if getattr(config, name) is not None:
                raise ConfigError(f"{name} only applies with TLS: add --ssl-certfile (and --ssl-keyfile)")
        if config.ssl_cert_reqs or config.ssl_min_version != "TLSv1.2":
            name = "ssl_cert_reqs" if config.ssl_cert_reqs else "ssl_min_version"
            raise ConfigError(f"{name} only applies with TLS: add --ssl-certfile (and --ssl-keyfile)")
    elif not config.ssl_certfile:
        raise ConfigError("ssl_certfile must be a file path")
    if config.ssl_cert_reqs and config.ssl_ca_certs is None:
        raise ConfigError(f"ssl_cert_reqs {config.ssl_cert_reqs} asks for client certificates, which cannot be "
                          f"verified without ssl_ca_certs: add --ssl-ca-certs with the CA that issued them")


def _check_limits(config: Config) -> None:
    """Limits and timeouts: positive numbers (a limit of 0 would refuse everything; unset means none)."""
    for name in ("limit_request_line", "limit_request_headers", "limit_request_header_size",
                 "limit_request_field_size", "limit_request_body", "limit_requests_per_connection",
                 "limit_connections"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    for name in ("timeout_request_head", "timeout_body_idle", "timeout_request"):
        value = getattr(config, name)
        if value is not None and (math.isnan(value) or value <= 0):
            raise ConfigError(f"{name} must be a positive number of seconds, got {value}")


def _check_listeners(config: Config) -> None:
    binds = [parse_listener(spec)[0] for spec in tcp_binds(config.bind)]
    if config.bind:
        if config.uds is not None or config.fd is not None:
            raise ConfigError("bind replaces uds and fd: write --bind unix:PATH or --bind fd://N instead")
        if config.host != "127.0.0.1" or config.port != 8000:
            raise ConfigError("bind replaces host and port: write --bind HOST:PORT instead")
    if config.uds_mode is not None:
        parse_uds_mode(config.uds_mode)
        admin_unix = config.admin_bind is not None and config.admin_bind.startswith("unix:")
        if config.uds is None and not any(bind.kind == "unix" for bind in binds) and not admin_unix:
            raise ConfigError("uds_mode applies to Unix sockets only: add --uds PATH or --bind unix:PATH")


_NOT_REQUEST_ID = frozenset(("host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
                             "trailer", "keep-alive", "cookie", "set-cookie", "authorization",
                             # the server's own response fields, and what the proxy-header logic reads
                             "date", "server", "content-type", "content-encoding", "forwarded",
                             "x-real-ip", "x-scheme"))
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _check_request_id(config: Config) -> None:
    _check_choice("request_id", config.request_id, REQUEST_ID_MODES)
    name = config.request_id_header
    lowered = name.lower()
    if (not _TOKEN.fullmatch(name) or "_" in name or lowered in _NOT_REQUEST_ID
            or lowered.startswith(("x-forwarded-", "proxy-", "sec-"))):
        raise ConfigError(f"request_id_header must be a header name such as X-Request-ID (letters, digits, '-'; "
                          f"not one the server owns), got {name!r}")


def _check_proxies(config: Config) -> None:
    _check_choice("proxy_headers_mode", config.proxy_headers_mode, PROXY_HEADERS_MODES)
    TrustedProxies(config.forwarded_allow_ips)  # a bad entry: ConfigError naming it
    if config.proxy_headers_mode == "forwarded":
        for name in ("forwarded_port", "forwarded_prefix"):
            if getattr(config, name):
                raise ConfigError(f"{name} applies to proxy_headers_mode x-forwarded only (RFC 7239 Forwarded has no "
                                  f"port or prefix parameter): drop --{name.replace('_', '-')} or switch the mode")


def needs_master(config: Config) -> bool:
    """Whether serving ``config`` takes a master process: several workers, recycling, or --reload."""
    return (config.workers > 1 or config.reload or config.max_requests is not None
            or config.max_worker_memory is not None)
