"""Real-browser fixtures: Playwright driving Debian's Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from models_admin.services import model_version_promote, model_version_register
from tests.conftest import REPO_ROOT, database_url_for_children, free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"

# Playwright's sync API keeps an event loop running in the test thread;
# the ORM calls these tests make are ordinary blocking ones.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not shutil.which(CHROMIUM):
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: run `make chromium` (Debian: apt-get install "
            "chromium) or set CHROMIUM_PATH."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots land here; CI keeps them as test artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http only)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def stack_stop(process: subprocess.Popen) -> None:
    """Stop the launcher and everything it started. honcho runs each
    process in a group of its own, so killing the launcher's group alone
    would leave the web server and the worker running."""
    if process.poll() is not None:
        return
    tree = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _gone, alive = psutil.wait_procs(tree, timeout=15)
    for leftover in alive:
        leftover.kill()


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
            status, body = get_json(f"{base}/readyz")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = 0
        if status == 200:
            break
        time.sleep(0.5)
    if status != 200:
        stack_stop(process)
        pytest.fail(f"stack not ready: {status} {body}\n{log_path.read_text()[-4000:]}")
    yield {"base": base, "process": process, "log": log_path}
    stack_stop(process)
    log.close()
