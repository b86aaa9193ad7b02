"""The one exception tree of bascule. Each error knows how it reaches the user.

User-facing errors (config, import, startup) are printed as one line by the CLI and end the process with
their ``exit_code``; protocol errors carry the HTTP status the client gets.
"""

from __future__ import annotations


class BasculeError(Exception):
    """Base of every error bascule raises on purpose."""

    exit_code = 1


class ConfigError(BasculeError):
    """An option has a bad value, an unknown name, or a config file cannot be read."""

    exit_code = 2


class AppLoadError(BasculeError):
    """The app cannot be imported, found, called or classified."""

    exit_code = 3


class StartupError(BasculeError):
    """The server could not start: a socket cannot be bound, or the app's lifespan startup failed."""

    exit_code = 4


class ProtocolError(BasculeError):
    """The client sent something we refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class AppProtocolError(BasculeError):
    """The app broke its interface's rules (ASGI message order, WSGI start_response misuse)."""


class ClientDisconnected(OSError):
    """Raised to an app that sends on a connection the client has closed (ASGI spec 2.4 asks for OSError).

    Defined here, not beside the Exchange seam, because that module is compiled (see setup.py) and a
    compiled class cannot derive from OSError.
    """
