"""Write docs/options.md from the Config fields, so the options table cannot drift from the code.

Usage: python scripts/gen_options_doc.py [--check]. With --check, exit 1 if the file is out of date
(tests/test_cli.py makes the same check).
"""

from __future__ import annotations

import sys
from pathlib import Path

from bascule.cli import options_markdown

TARGET = Path(__file__).resolve().parent.parent / "docs" / "options.md"


def main(argv: list[str]) -> int:
    text = options_markdown()
    if argv == ["--check"]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python scripts/gen_options_doc.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python scripts/gen_options_doc.py [--check]", file=sys.stderr)
        return 2
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
