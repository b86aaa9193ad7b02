"""``mypyc_attr`` for the modules setup.py compiles: mypy_extensions' own where it is installed (mypyc reads the
decorator at build time, and follows this import to it), else one that does nothing, since bascule runs without
mypy_extensions."""

from __future__ import annotations

from collections.abc import Callable

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # only mypyc reads it

    def mypyc_attr(*_args: object, **_kwargs: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls

__all__ = ["mypyc_attr"]
