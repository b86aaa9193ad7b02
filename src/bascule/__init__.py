"""bascule: one Python application server for WSGI and ASGI apps."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
