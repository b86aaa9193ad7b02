"""A WSGI app that answers with the CGI keys of its environ, for test_it_wsgi_environ (bascule vs gunicorn)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

KEYS = ("SERVER_SOFTWARE", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "SCRIPT_NAME",
        "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "wsgi.url_scheme")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({key: environ.get(key) for key in KEYS}).encode()]
