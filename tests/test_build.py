"""The compiled build (setup.py): which modules mypyc compiles, and the rules their source must keep.

mypyc compiles the same source with stricter runtime semantics than CPython: every declared type is
checked when a value crosses it. The rules below are the ones that broke tests when the build was first
compiled; they are checked here on the source, so plain-Python runs (editable installs) catch them too.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def compiled_modules() -> list[str]:
    """setup.py's COMPILED list, as file paths relative to the repository."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            assert isinstance(node.value, ast.List)
            return [ast.literal_eval(elt) for elt in node.value.elts]
    raise AssertionError("setup.py has no COMPILED list")


def module_name(path: str) -> str:
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")


def test_the_compiled_list_names_real_modules() -> None:
    paths = compiled_modules()
    assert len(paths) == len(set(paths))
    for path in paths:
        assert (ROOT / path).is_file(), path
    # the request path itself must be in the list, or the build would be compiled in name only
    for hot in ("src/bascule/protocols/h1/connection.py", "src/bascule/protocols/h1/exchange.py",
                "src/bascule/gateways/asgi.py", "src/bascule/gateways/wsgi.py",
                "src/bascule/protocols/h2/connection.py"):
        assert hot in paths


@pytest.mark.parametrize("path", compiled_modules())
def test_one_type_per_exception_name(path: str) -> None:
    """Compiled code gives a local one type: ``except A as exc`` and ``except B as exc`` in one function
    makes the second handler fail with a TypeError instead of handling B. Each handler gets its own name."""
    tree = ast.parse((ROOT / path).read_text())
    clashes = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kinds: dict[str, set[str]] = {}
            for node in ast.walk(fn):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    kinds.setdefault(node.name, set()).add(ast.unparse(node.type))
            clashes += [f"{fn.name}(): {name} {sorted(types)}" for name, types in kinds.items() if len(types) > 1]
    assert not clashes


@pytest.mark.skipif(os.environ.get("BASCULE_EXPECT_COMPILED") != "1",
                    reason="set BASCULE_EXPECT_COMPILED=1 where the installed build must be the compiled one (CI)")
def test_installed_build_is_compiled() -> None:
    """CI runs the suite against the compiled build; this fails if the build silently fell back to Python."""
    for path in compiled_modules():
        module = importlib.import_module(module_name(path))
        assert module.__file__ is not None and not module.__file__.endswith(".py"), module.__file__
