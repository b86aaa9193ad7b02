"""Which static files never change under their name, so browsers may keep them a year without asking again
(``Cache-Control: public, max-age=31536000, immutable``): the content-hashed names build tools write.

Where the directory holds a build manifest, its hashed names are the list, exactly: Django's
``staticfiles.json`` (ManifestStaticFilesStorage, its ``paths`` values) or Vite's ``.vite/manifest.json``
(``manifest.json`` before Vite 5: each chunk's ``file``, ``css`` and ``assets``). Manifests are read once,
when the server starts, as Django reads its own. Without one, a name is taken as hashed when its last part
before the extension is 8 to 64 hex digits with at least one digit and one letter (``app.3f2a9c1b7e4d.css``,
``main-5d41402abc4b.js``): a date (``report-20231114.pdf``) or a word (``deadbeef``) is not taken.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Final

IMMUTABLE: Final = b"public, max-age=31536000, immutable"
_HASHED: Final = re.compile(r"[.-](?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,64}\.[A-Za-z0-9]+$")
_log = logging.getLogger("bascule.error")


def looks_hashed(name: str) -> bool:
    """Whether a file name carries a content hash (the heuristic used without a manifest)."""
    return _HASHED.search(name) is not None


def _vite_names(data: Any) -> set[str]:
    names: set[str] = set()
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for chunk in data.values():
        if not isinstance(chunk, dict):
            continue
        for key in ("file",):
            if isinstance(chunk.get(key), str):
                names.add(chunk[key])
        for key in ("css", "assets"):
            for item in chunk.get(key) or ():
                if isinstance(item, str):
                    names.add(item)
    return names


def manifest_names(root: str) -> frozenset[str] | None:
    """The hashed names (paths relative to ``root``, with ``/``) a build manifest in ``root`` lists; None if
    there is no manifest, or it cannot be read (then a warning, and the heuristic applies)."""
    candidates = (("staticfiles.json", "django"), (os.path.join(".vite", "manifest.json"), "vite"),
                  ("manifest.json", "vite"))
    for name, kind in candidates:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            if kind == "django":
                paths = data["paths"]
                if not isinstance(paths, dict):
                    raise ValueError("'paths' is not an object")
                return frozenset(value for value in paths.values() if isinstance(value, str))
            if name == "manifest.json" and not any(isinstance(v, dict) and "file" in v for v in data.values()):
                continue  # a web app manifest (icons, name), not Vite's
            return frozenset(_vite_names(data))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            _log.warning("static: cannot read the manifest %s (%s); hashed names are guessed instead", path, exc)
            return None
    return None


class ImmutablePolicy:
    """Answers "is this file immutable?" for files under one directory (given as its realpath)."""

    def __init__(self, root: str) -> None:
        self.root_prefix = root.rstrip(os.sep) + os.sep
        self.names = manifest_names(root)

    def __call__(self, real_path: str) -> bool:
        names = self.names
        if names is None:
            return looks_hashed(os.path.basename(real_path))
        if not real_path.startswith(self.root_prefix):
            return False  # reached by a symlink out (--static-follow-symlinks): no name of the manifest's
        rel = real_path[len(self.root_prefix):]
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        return rel in names
