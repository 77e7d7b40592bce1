"""The web processes never import torch or transformers.

Only the inference worker and the training worker need them; a web
process that imports them pays seconds of start-up and hundreds of MB
for nothing. The check runs in a fresh interpreter, because the test
session itself has long since imported both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "transformers")

# Record who imports a heavy package first, then load everything a web
# process loads: the ASGI application with its socket routes, the URL
# configuration and every view module behind it.
_WEB_LOAD = """
import importlib
import json
import sys
import traceback

HEAVY = %r
first_importers = {}


class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name in HEAVY and name not in first_importers:
            first_importers[name] = [
                f"{frame.filename}:{frame.lineno}"
                for frame in traceback.extract_stack()[:-1]
                if "importlib" not in frame.filename
            ][-12:]
        return None


sys.meta_path.insert(0, _Watch())

import django

django.setup()

import chatsite.asgi
import chatsite.urls
from django.urls import URLResolver, get_resolver

views = set()


def walk(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            walk(pattern.url_patterns)
        else:
            views.add(pattern.callback.__module__)


walk(get_resolver().url_patterns)
for module in sorted(views):
    importlib.import_module(module)

print(json.dumps({
    "views": sorted(views),
    "loaded": [name for name in HEAVY if name in sys.modules],
    "first_importers": first_importers,
}))
"""


def test_the_web_app_loads_without_torch_or_transformers(tmp_path):
    """Loading the ASGI application, the URLs and every view module they
    route to leaves torch and transformers unimported."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "VAR_DIR": str(tmp_path / "var"),
    }
    result = subprocess.run(
        [sys.executable, "-c", _WEB_LOAD % (HEAVY,)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for app in ("chat.views", "models_admin.dashboard.views"):
        assert any(module.startswith(app) for module in report["views"]), report["views"]
    assert report["loaded"] == [], json.dumps(report["first_importers"], indent=2)
