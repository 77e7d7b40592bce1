"""The whole stack as ``make run`` starts it: the launcher, Daphne, the
inference worker, a Celery worker and Redis; a real browser on the page."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from models_admin.services import model_version_promote, model_version_register
from tests.conftest import REPO_ROOT, database_url_for_children, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http only)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def stack(transactional_db, tiny_model_dir, tmp_path, settings):
    settings.MODEL_DIR = tiny_model_dir.parent
    version = model_version_register(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEB_PORT")}
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = settings.REDIS_URL
        env["REDIS_KEY_PREFIX"] = settings.REDIS_KEY_PREFIX
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        MODEL_DIR=str(tiny_model_dir.parent),
        DATABASE_URL=database_url_for_children(),
        WEB_PORT=str(port),
        INFERENCE_HEARTBEAT_INTERVAL="0.5",
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "stack.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "chatsite.launcher"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    status, body = 0, {}
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status, body = _get_json(f"{base}/readyz")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = 0
        if status == 200:
            break
        time.sleep(0.5)
    if status != 200:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"stack not ready: {status} {body}\n{log_path.read_text()[-4000:]}")
    yield {"base": base, "process": process, "log": log_path}
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log.close()


def test_make_run_stack_is_ready_serves_the_page_and_stops_cleanly(stack, page, artifacts_dir):
    base, process = stack["base"], stack["process"]
    status, body = _get_json(f"{base}/readyz")
    assert status == 200
    assert body["checks"]["inference"]["workers"][0]["model_version"] == "tiny"

    page.goto(base + "/")
    page.wait_for_selector('[data-check="inference"].ok', timeout=15_000)
    assert page.locator('[data-testid="production-model"]').inner_text() == "tiny"
    for name in ("database", "redis", "inference"):
        assert "ok" in (page.locator(f'[data-check="{name}"]').get_attribute("class") or "")
    page.screenshot(path=str(artifacts_dir / "status-page.png"), full_page=True)
    static = page.request.get(base + "/static/css/app.css")
    assert static.status == 200

    # The Celery worker came up on the same Redis.
    deadline = time.monotonic() + 60
    while "ready." not in stack["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "ready." in stack["log"].read_text(), stack["log"].read_text()[-3000:]

    tree = psutil.Process(process.pid).children(recursive=True)
    assert len(tree) >= 4
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert process.wait(timeout=60) is not None
    _gone, alive = psutil.wait_procs(tree, timeout=20)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    assert "All processes stopped." in stack["log"].read_text()
