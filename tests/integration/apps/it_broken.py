"""An app module that fails at import time, for the error-message tests."""

from __future__ import annotations


def _configure():
    raise KeyError("DATABASE_URL")


_configure()

app = None
