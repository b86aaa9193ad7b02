"""The wire side's import rules (issue 13, acceptance 2), read from the source with ``ast``.

Each protocol package (a directory under src/bascule/protocols: h1, h2, websocket, and any added later) may
import its own modules, the shared modules beside the packages (protocols/exchange.py, fields.py, pipe.py,
upgrades.py, ...) and the rest of bascule, but never another protocol package, nor the front door (listen/),
which imports them. Every import counts: at the top, inside a function, or under ``TYPE_CHECKING``. The
shared modules import no protocol package either. Switching protocols goes through the upgrade registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bascule

SRC = Path(bascule.__file__).resolve().parent
PROTOCOLS = SRC / "protocols"
PACKAGES = sorted(p.name for p in PROTOCOLS.iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement of ``module``'s source, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[:len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from bascule.protocols import h2" imports the package h2: the names count as modules too
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def protocol_package_of(module: str) -> str | None:
    prefix = "bascule.protocols."
    if not module.startswith(prefix):
        return None
    head = module[len(prefix):].split(".")[0]
    return head if head in PACKAGES else None


def violations(source: str, module: str, own: str | None, *, is_package: bool = False) -> list[str]:
    """The imports of another protocol package (than ``own``) or of the front door."""
    bad = []
    for line, imported in imports(source, module, is_package=is_package):
        target = protocol_package_of(imported)
        if (target is not None and target != own) or imported == "bascule.listen" \
                or imported.startswith("bascule.listen."):
            bad.append(f"{module}:{line} imports {imported}")
    return bad


def file_violations(path: Path, own: str | None) -> list[str]:
    return violations(path.read_text(), module_name(path), own, is_package=path.name == "__init__.py")


def test_the_protocol_packages_are_found() -> None:
    assert {"h1", "h2", "h3", "websocket"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_protocol_package_imports_no_other_protocol_package(package: str) -> None:
    bad = [v for path in sorted((PROTOCOLS / package).rglob("*.py")) for v in file_violations(path, package)]
    assert not bad, "\n".join(bad)


def test_the_shared_protocol_modules_import_no_protocol_package() -> None:
    bad = [v for path in sorted(PROTOCOLS.glob("*.py")) for v in file_violations(path, None)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source", [
    "from bascule.protocols.h2.connection import H2Connection\n",
    "import bascule.protocols.websocket.connection\n",
    "from bascule.protocols import h2\n",
    "from ..h2 import frames\n",
    "from ..websocket.engine import Engine\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bascule.protocols.h2.stream import H2Stream\n",
    "def f():\n    from bascule.protocols.websocket import engine\n",
    "from bascule.listen.accept import FrontDoor\n",
])
def test_the_checker_catches_every_way_of_importing(source: str) -> None:
    """Each way of importing another protocol package is caught, so the rule cannot pass vacuously."""
    assert violations(source, "bascule.protocols.h1.x", "h1")


def test_the_checker_lets_through_what_is_allowed() -> None:
    source = ("from bascule.protocols.exchange import Exchange\nfrom bascule.protocols.h1 import checks\n"
              "from . import checks\nfrom .exchange import H1Exchange\nfrom bascule.context import ServerContext\n")
    assert violations(source, "bascule.protocols.h1.x", "h1") == []
