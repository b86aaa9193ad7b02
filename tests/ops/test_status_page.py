"""The admin listener's status page (bascule.ops.status_page): shipped, self-contained, escaping, and
allowed by the Content-Security-Policy it comes with.

What the page does in a browser is tested in tests/integration/test_it_status_page.py (headless
Chromium); these tests read the file: no external assets, no HTML sinks, nothing a strict CSP would block,
and a policy whose hashes are those of the blocks actually served.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import importlib.util
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

from bascule.ops import status_page
from bascule.ops.status_page import content_security_policy, render_status_page, status_page_headers

ROOT = Path(__file__).resolve().parents[2]


class Page(HTMLParser):
    """Elements, ids, attributes and the text of the inline script and style blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.blocks: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self.blocks:
            self._open = tag
            self.blocks[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.blocks[self._open][-1] += data


def parsed() -> Page:
    page = Page()
    page.feed(render_status_page().decode("utf-8"))
    page.close()
    return page


def script() -> str:
    return parsed().blocks["script"][0]


def test_the_page_is_html_read_once() -> None:
    html = render_status_page()
    assert isinstance(html, bytes)
    assert html.startswith(b"<!doctype html>")
    assert b'<meta charset="utf-8">' in html
    html.decode("utf-8")
    assert render_status_page() is html  # cached: the file is read on the first call only


def test_the_page_is_small() -> None:
    assert len(render_status_page()) < 32 * 1024


def test_the_installed_package_has_the_page() -> None:
    """Where bascule is installed from a wheel (CI installs '.[test]'), the page must have come with it."""
    spec = importlib.util.find_spec("bascule.ops")
    assert spec is not None and spec.origin is not None
    assert (Path(spec.origin).parent / status_page.PAGE_NAME).is_file()


def test_every_data_file_is_declared_package_data() -> None:
    """setuptools ships only the non-Python files pyproject names: each one under src/bascule must match."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["bascule"]
    assert "ops/status.html" in patterns
    package = ROOT / "src" / "bascule"
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".so", ".pyd") and "__pycache__" not in p.parts]
    assert data, "the source tree has no data files?"
    for name in data:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_no_external_assets() -> None:
    page = parsed()
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "data", "srcset"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:"), (tag, name, value)
    text = render_status_page().decode()
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text, re.IGNORECASE)


def test_it_polls_status_json_by_a_relative_url() -> None:
    """Relative, so the page works where the admin listener sits behind a path prefix."""
    js = script()
    assert 'fetch("status.json"' in js
    assert "/status.json" not in js
    assert re.search(r"\bPOLL_MS = 1000\b", js)


def test_nothing_reaches_the_dom_as_html() -> None:
    js = script()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(",
                 "createContextualFragment", "DOMParser", "setAttribute"):
        assert sink not in js, sink
    assert "textContent" in js
    # timers get functions, never strings
    assert not re.search(r"set(Timeout|Interval)\(\s*[\"'`]", js)


def test_nothing_a_strict_csp_blocks() -> None:
    """No inline handlers, style attributes or javascript: URLs; one script and one style block, bare."""
    page = parsed()
    for tag, attrs in page.tags:
        assert not [name for name in attrs if name.startswith("on") or name == "style"], (tag, attrs)
        assert not any((value or "").lower().startswith("javascript:") for value in attrs.values())
    assert len(page.blocks["script"]) == 1 and len(page.blocks["style"]) == 1
    assert [attrs for tag, attrs in page.tags if tag in ("script", "style")] == [{}, {}]


def test_every_element_the_script_asks_for_exists() -> None:
    page = parsed()
    ids = {attrs["id"] for _, attrs in page.tags if attrs.get("id")}
    wanted = set(re.findall(r'\$\("([\w-]+)"\)', script()))
    assert wanted and wanted <= ids, wanted - ids


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_policy_allows_exactly_the_pages_blocks() -> None:
    policy = content_security_policy()
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    page = parsed()
    assert directives["script-src"] == sha256_source(page.blocks["script"][0])
    assert directives["style-src"] == sha256_source(page.blocks["style"][0])
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    policy.encode("ascii")


def test_headers() -> None:
    headers = status_page_headers()
    fields = dict(headers)
    assert fields[b"content-type"] == b"text/html; charset=utf-8"
    assert fields[b"content-security-policy"] == content_security_policy().encode()
    assert fields[b"x-content-type-options"] == b"nosniff"
    assert fields[b"cache-control"] == b"no-store"
    headers.append((b"x-extra", b"1"))
    assert (b"x-extra", b"1") not in status_page_headers()  # a fresh list each time
