"""Build script: compiles the per-request modules with mypyc, and falls back to pure Python if it cannot.

Why: the HTTP/1.1 -> ASGI path is ~25 Python calls per request. Compiled by mypyc from the same typed
source, it runs ~45% fewer instructions per request (callgrind, see docs/performance.md), which is what
puts bascule ahead of granian's Rust core on one CPU. Nothing changes in behaviour: the same modules run
as plain Python when compiling is off or impossible.

- ``BASCULE_COMPILE=0`` builds the pure-Python package (no compiler needed).
- Editable installs (``pip install -e``) are never compiled, so an edited ``.py`` file is always the code
  that runs (a stale compiled module beside it would shadow it).
- Without a C compiler or Python headers, the build warns and installs the pure-Python package.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules every request passes through. Cold code (CLI, config, loader, supervisor) stays Python, and so
# does gateways/eager_steps.py, on the hot path on purpose (its docstring says why).
COMPILED = [
    "src/bascule/context.py",
    "src/bascule/uvloop_map.py",
    "src/bascule/mounts.py",
    "src/bascule/trust.py",
    "src/bascule/compress.py",
    "src/bascule/cgi.py",
    "src/bascule/accesslog.py",
    "src/bascule/ops/metrics.py",
    "src/bascule/protocols/exchange.py",
    "src/bascule/protocols/sendfile.py",
    "src/bascule/protocols/thread_writer.py",
    "src/bascule/protocols/fields.py",
    "src/bascule/protocols/request_head.py",
    "src/bascule/protocols/http1x.py",
    "src/bascule/protocols/outbox.py",
    "src/bascule/protocols/stream_pipe.py",
    "src/bascule/protocols/semantics.py",
    "src/bascule/protocols/prefix.py",
    "src/bascule/protocols/uwsgi_wire.py",
    "src/bascule/protocols/scgi_wire.py",
    "src/bascule/protocols/fastcgi_wire.py",
    "src/bascule/protocols/cgi_exchange.py",
    "src/bascule/protocols/stream_exchange.py",
    "src/bascule/protocols/stream_table.py",
    "src/bascule/protocols/oneshot/connection.py",
    "src/bascule/protocols/oneshot/exchange.py",
    "src/bascule/protocols/fastcgi/connection.py",
    "src/bascule/protocols/fastcgi/exchange.py",
    "src/bascule/protocols/h1/checks.py",
    "src/bascule/protocols/h1/phases.py",
    "src/bascule/protocols/h1/connection.py",
    "src/bascule/protocols/h1/exchange.py",
    "src/bascule/protocols/h1/switching.py",
    "src/bascule/protocols/websocket/engine.py",
    "src/bascule/protocols/websocket/connection.py",
    "src/bascule/protocols/websocket/extended_connect.py",
    "src/bascule/protocols/h2/frames.py",
    "src/bascule/protocols/h2/headers.py",
    "src/bascule/protocols/h2/control.py",
    "src/bascule/protocols/h2/states.py",
    "src/bascule/protocols/h2/output.py",
    "src/bascule/protocols/h2/connection.py",
    "src/bascule/protocols/h2/stream.py",
    "src/bascule/protocols/h2/websocket.py",
    "src/bascule/listen/accept.py",
    "src/bascule/listen/accept_batch.py",
    "src/bascule/gateways/asgi.py",
    "src/bascule/gateways/asgi_ws.py",
    "src/bascule/gateways/eager.py",
    "src/bascule/gateways/threads.py",
    "src/bascule/gateways/wsgi.py",
    "src/bascule/gateways/wsgi_io.py",
    "src/bascule/ops/request_id.py",
    "src/bascule/static/conditional.py",
    "src/bascule/static/content_types.py",
    "src/bascule/static/encodings.py",
    "src/bascule/static/filecache.py",
    "src/bascule/static/immutable.py",
    "src/bascule/static/resolve.py",
    "src/bascule/static/handler.py",
]


def _building() -> bool:
    """True for the commands that build modules (not metadata queries, and not editable installs, which
    go through setuptools' editable_wheel command)."""
    return any(arg in ("bdist_wheel", "build", "build_ext", "install") for arg in sys.argv[1:])


class OptionalBuildExt(build_ext):
    """Build the compiled modules if possible; on any compiler error, leave the pure-Python package."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, a mypyc failure: Python it is
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        for path in self.get_outputs():
            if os.path.exists(path):
                os.remove(path)  # a partial build would leave modules importing a missing shared library
        self.extensions = []
        sys.stderr.write(f"bascule: building the compiled modules failed ({str(exc)[:200]}); installing pure Python "
                         f"(slower, same behaviour). Set BASCULE_COMPILE=0 to skip the attempt.\n")


def _purge_compiled() -> None:
    """A pure build must not pick up compiled modules a previous build left in build/lib."""
    for path in glob.glob("build/lib*/**/*.so", recursive=True):
        os.remove(path)


def _extensions() -> list[Any]:
    if not _building():
        return []
    if os.environ.get("BASCULE_COMPILE", "1") == "0":
        _purge_compiled()
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built outside pip's isolated environment without mypy installed
        sys.stderr.write("bascule: mypy (mypyc) is not installed; installing pure Python.\n")
        _purge_compiled()
        return []
    try:
        return list(mypycify(COMPILED, opt_level="3", strip_asserts=False))
    except (Exception, SystemExit) as exc:  # mypyc itself failed (its type check exits): Python it is
        sys.stderr.write(f"bascule: mypyc could not compile the hot modules ({exc}); installing pure Python.\n")
        _purge_compiled()
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
