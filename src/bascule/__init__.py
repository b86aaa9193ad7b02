"""bascule: one Python application server for WSGI and ASGI apps.

Public API: :func:`run` serves in this process until a signal (like the ``bascule`` command);
:func:`serve` is the awaitable for embedding in a running event loop (no signal handlers taken over);
:class:`Config` holds every option.
"""

from __future__ import annotations

import sys
from typing import Any

from bascule.config import Config
from bascule.errors import BasculeError

__version__ = "0.1.0"
__all__ = ["Config", "__version__", "run", "serve"]


def _config(app: Any, options: dict[str, Any]) -> tuple[Config, Any]:
    if isinstance(app, str):
        return Config(app=app, **options), None
    return Config(app=getattr(app, "__name__", "app"), **options), app


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an object or a 'module:attr' string) with ``options`` until SIGINT/SIGTERM.

    Errors that stop the server (bad options, import failures, a port in use) print one line and exit
    with the error's exit code, as the command line does.
    """
    from bascule.run import run_config

    try:
        config, obj = _config(app, options)
        code = run_config(config, obj)
    except BasculeError as exc:
        print(f"bascule: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    if code:
        raise SystemExit(code)


async def serve(app: Any, **options: Any) -> None:
    """Serve ``app`` on the running event loop until cancelled; logging and signals are left to you."""
    from bascule.server import Server

    config, obj = _config(app, options)
    await Server(config, obj).serve()
