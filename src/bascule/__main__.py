"""``python -m bascule``: the same command as the ``bascule`` console script."""

from __future__ import annotations

from bascule.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
