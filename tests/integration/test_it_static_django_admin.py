"""Django admin behind ``--static /static=STATIC_ROOT`` renders styled in headless Chromium (issue 15).

Without a static file server in front, Django's admin has no CSS in production (DEBUG off): that is the
gap ``--static`` closes. The project (tests/integration/apps/djadmin) collects its static files with the
manifest storage (hashed names, staticfiles.json) into a temporary STATIC_ROOT; bascule serves the WSGI app
at / and that directory at /static. Chromium loads /admin/login/ over the DevTools protocol, and the test
checks what the user would see: every stylesheet answered 200 and parsed, and rules from base.css (the
header's background) and login.css (the login box's 100px top margin) applied to the rendered elements.
Skipped when Django or chromium is missing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from it_h2 import Cdp
from it_support import APPS, clean_env, spawn, tcp_ready
from test_it_http2 import chromium, chromium_binary

pytest.importorskip("django")
pytest.importorskip("websockets")

STYLES = """
(() => {
  const header = document.getElementById("header");
  const box = document.querySelector(".login #container");
  return {
    sheets: [...document.styleSheets].map(s => [s.href, s.cssRules.length]),
    header_bg: header ? getComputedStyle(header).backgroundColor : null,
    box_margin_top: box ? getComputedStyle(box).marginTop : null,
    has_form: !!document.getElementById("login-form"),
  };
})()
"""


async def look(devtools: str, url: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    async with connect(devtools, max_size=None, open_timeout=10) as ws:
        cdp = Cdp(ws)
        try:
            await cdp.open_page()
            await cdp.call("Network.enable")
            await cdp.call("Page.enable")
            await cdp.call("Runtime.enable")
            await cdp.navigate(url, timeout=20)
            facts: dict[str, Any] = await cdp.evaluate(STYLES)
            facts["responses"] = {r["response"]["url"]: r["response"]["status"]
                                  for r in cdp.seen("Network.responseReceived")}
            return facts
        finally:
            cdp.reader.cancel()


def collectstatic(root: Path, log: Path) -> None:
    env = clean_env(DJANGO_SETTINGS_MODULE="djadmin.settings", DJADMIN_STATIC_ROOT=str(root),
                    PYTHONPATH=str(APPS))
    done = subprocess.run([sys.executable, "-m", "django", "collectstatic", "--noinput"], cwd=APPS, env=env,
                          capture_output=True, text=True, timeout=120)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"collectstatic failed: {log.read_text()[-1000:]}"


def test_django_admin_login_is_styled_in_chromium(tmp_path: Path) -> None:
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    root = tmp_path / "static_root"
    collectstatic(root, tmp_path / "collectstatic.log")
    assert (root / "staticfiles.json").exists() and (root / "admin" / "css" / "base.css").exists()
    port = free_port()
    env = clean_env(DJANGO_SETTINGS_MODULE="djadmin.settings", DJADMIN_STATIC_ROOT=str(root))
    with spawn(["djadmin.wsgi:application", "--interface", "wsgi", "--port", str(port), "--static",
                f"/static={root}"], env=env, log=tmp_path / "server.log", ready=tcp_ready(port)) as proc:
        origin = f"http://127.0.0.1:{port}"
        page = httpx.get(f"{origin}/admin/login/", timeout=10)
        assert page.status_code == 200, (page.status_code, (tmp_path / "server.log").read_text()[-2000:])
        css = [line.split('href="')[1].split('"')[0] for line in page.text.splitlines()
               if 'rel="stylesheet"' in line]
        assert css and all(href.startswith("/static/admin/css/") for href in css), css
        base = httpx.get(origin + next(h for h in css if "/base." in h), timeout=10)
        assert base.status_code == 200 and base.headers["content-type"].startswith("text/css")
        assert "immutable" in base.headers["cache-control"]  # a hashed name from staticfiles.json
        with tempfile.TemporaryDirectory(prefix="bascule-chromium-") as tmp, \
                chromium(Path(tmp) / "profile") as devtools:
            facts = asyncio.run(asyncio.wait_for(look(devtools, f"{origin}/admin/login/"), 60))
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
    print(f"chromium saw: {facts}")
    assert facts["has_form"], facts
    statics = {url: status for url, status in facts["responses"].items() if "/static/" in url}
    assert len(statics) >= len(css) and set(statics.values()) == {200}, facts["responses"]
    sheets = dict(facts["sheets"])
    assert all(sheets.get(origin + href) for href in css), sheets  # every stylesheet loaded, rules parsed
    assert facts["header_bg"] not in (None, "rgba(0, 0, 0, 0)", "transparent"), facts  # base.css #header
    assert facts["box_margin_top"] == "100px", facts  # login.css .login #container
