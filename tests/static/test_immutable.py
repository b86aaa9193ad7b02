"""Which static files get the year-long immutable Cache-Control: manifests first, else hashed-looking names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from conftest import serve_in_thread

from bascule.static.immutable import IMMUTABLE, ImmutablePolicy, looks_hashed, manifest_names


@pytest.mark.parametrize(("name", "hashed"), [
    ("app.3f2a9c1b7e4d.css", True),  # Django's ManifestStaticFilesStorage
    ("main-5d41402abc4b.js", True),
    ("chunk.0123456789abcdef0123456789abcdef.js", True),
    ("app.css", False),
    ("report-20231114.pdf", False),  # digits only: a date
    ("cafe.deadbeef.js", False),  # letters only: a word
    ("app.3f2a9c1.css", False),  # too short
    ("app.3F2A9C1B7E4D.css", False),  # hashes are lower case
    ("3f2a9c1b7e4d", False),  # no extension
])
def test_looks_hashed(name: str, hashed: bool) -> None:
    assert looks_hashed(name) is hashed


def test_django_manifest(tmp_path: Path) -> None:
    (tmp_path / "staticfiles.json").write_text(json.dumps({
        "version": "1.1", "paths": {"admin/css/base.css": "admin/css/base.6b517d0d5813.css"}}))
    policy = ImmutablePolicy(str(tmp_path))
    assert policy(str(tmp_path / "admin" / "css" / "base.6b517d0d5813.css"))
    assert not policy(str(tmp_path / "admin" / "css" / "base.css"))
    assert not policy(str(tmp_path / "other.0123456789ab.css"))  # the manifest is the whole list
    # a file reached through a symlink out of the directory (--static-follow-symlinks) is none of its names,
    # even where its path outside happens to end like one
    assert not policy(str(tmp_path) + "-elsewhere/admin/css/base.6b517d0d5813.css")


def test_vite_manifest(tmp_path: Path) -> None:
    (tmp_path / ".vite").mkdir()
    (tmp_path / ".vite" / "manifest.json").write_text(json.dumps({
        "index.html": {"file": "assets/index-BQk3x1_z.js", "css": ["assets/index-Dm7Qp2aA.css"],
                       "assets": ["assets/logo-C1pZ9iJb.svg"], "isEntry": True}}))
    assert manifest_names(str(tmp_path)) == frozenset(
        {"assets/index-BQk3x1_z.js", "assets/index-Dm7Qp2aA.css", "assets/logo-C1pZ9iJb.svg"})


def test_web_app_manifest_is_not_vite(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "App", "icons": [{"src": "i.png"}]}))
    assert manifest_names(str(tmp_path)) is None


def test_broken_manifest_falls_back_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "staticfiles.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="bascule.error"):
        policy = ImmutablePolicy(str(tmp_path))
    assert policy.names is None and "staticfiles.json" in caplog.text
    assert policy(str(tmp_path / "app.3f2a9c1b7e4d.css"))


def test_served_with_immutable_cache_control(tmp_path: Path) -> None:
    (tmp_path / "app.3f2a9c1b7e4d.css").write_text("a{}")
    (tmp_path / "app.css").write_text("a{}")

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached")

    with serve_in_thread(app, static=(f"/s={tmp_path}",)) as srv:
        assert httpx.get(srv.url + "/s/app.3f2a9c1b7e4d.css").headers["cache-control"] == IMMUTABLE.decode()
        assert httpx.get(srv.url + "/s/app.css").headers["cache-control"] == "public, max-age=60"
    with serve_in_thread(app, static=(f"/s={tmp_path}",), static_immutable=False) as srv:
        assert httpx.get(srv.url + "/s/app.3f2a9c1b7e4d.css").headers["cache-control"] == "public, max-age=60"
