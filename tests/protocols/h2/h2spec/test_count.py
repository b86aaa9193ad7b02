"""The suite covers h2spec's case list exactly: one test per case id, none missing, none extra.

``CASES`` is h2spec's list (generic, http2 and hpack, 147 cases); each id ``group/section/n`` maps to a test
named ``test_<group>_<section with dots as underscores>_<n>`` whose docstring starts with the id.
"""

from __future__ import annotations

import importlib
import inspect

MODULES = ("test_generic", "test_http2_connection", "test_http2_frames", "test_http2_semantics", "test_hpack")

# (group, section, number of cases) in h2spec's order
SECTIONS = [
    ("generic", "1", 1), ("generic", "2", 5), ("generic", "3.1", 3), ("generic", "3.2", 3),
    ("generic", "3.3", 5), ("generic", "3.4", 1), ("generic", "3.5", 1), ("generic", "3.7", 1),
    ("generic", "3.8", 1), ("generic", "3.9", 2), ("generic", "3.10", 2), ("generic", "4", 4),
    ("generic", "5", 15),
    ("http2", "3.5", 2), ("http2", "4.1", 3), ("http2", "4.2", 3), ("http2", "4.3", 3), ("http2", "5.1", 13),
    ("http2", "5.1.1", 2), ("http2", "5.1.2", 1), ("http2", "5.3.1", 2), ("http2", "5.4.1", 2),
    ("http2", "5.5", 2), ("http2", "6.1", 3), ("http2", "6.2", 4), ("http2", "6.3", 2), ("http2", "6.4", 3),
    ("http2", "6.5", 3), ("http2", "6.5.2", 5), ("http2", "6.5.3", 2), ("http2", "6.7", 4), ("http2", "6.8", 1),
    ("http2", "6.9", 3), ("http2", "6.9.1", 3), ("http2", "6.9.2", 3), ("http2", "6.10", 6), ("http2", "7", 2),
    ("http2", "8.1", 1), ("http2", "8.1.2", 1), ("http2", "8.1.2.1", 4), ("http2", "8.1.2.2", 2),
    ("http2", "8.1.2.3", 7), ("http2", "8.1.2.6", 2), ("http2", "8.2", 1),
    ("hpack", "2.3.3", 2), ("hpack", "4.2", 1), ("hpack", "5.2", 3), ("hpack", "6.1", 1), ("hpack", "6.3", 1),
]
CASES = [f"{group}/{section}/{n}" for group, section, count in SECTIONS for n in range(1, count + 1)]


def _tests() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        for attr, obj in vars(module).items():
            if attr.startswith("test_") and inspect.isfunction(obj):
                assert attr not in found, f"{attr} defined twice"
                found[attr] = inspect.getdoc(obj) or ""
    return found


def test_h2spec_case_list_is_complete() -> None:
    """Every h2spec case has exactly one test, named after its id, whose docstring starts with the id."""
    assert len(CASES) == 147
    tests = _tests()
    expected = {"test_" + case.replace("/", "_").replace(".", "_"): case for case in CASES}
    assert sorted(set(expected) - set(tests)) == [], "h2spec cases without a test"
    assert sorted(set(tests) - set(expected)) == [], "tests that are not h2spec cases"
    wrong = [name for name, case in expected.items() if not tests[name].startswith(case + ":")]
    assert wrong == [], "docstrings that do not start with the h2spec id"
