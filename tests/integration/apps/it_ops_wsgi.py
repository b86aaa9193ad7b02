"""A plain WSGI app for the operations tests.

GET /hello -> "hello"; GET /sleep?s=SECONDS -> sleeps, then "slept"; GET /environ -> JSON of SCRIPT_NAME and
PATH_INFO; GET /raise -> raises out of the app; POST /echo -> JSON of the body's length and sha256.
"""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    content_type = "text/plain"
    if path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
        body = b"slept"
    elif path == "/environ":
        body = json.dumps({"SCRIPT_NAME": environ["SCRIPT_NAME"], "PATH_INFO": path}).encode()
        content_type = "application/json"
    elif path == "/raise":
        raise RuntimeError("the app failed on purpose")
    elif path == "/echo":
        digest, size, stream = hashlib.sha256(), 0, environ["wsgi.input"]
        while chunk := stream.read(65536):
            digest.update(chunk)
            size += len(chunk)
        body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
        content_type = "application/json"
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
