"""Real-browser fixtures: Playwright driving Debian's Chromium."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from inference.connection import serving_epoch_key
from inference.worker.heartbeat import WorkerState
from models_admin.services import model_version_promote, model_version_register
from tests.conftest import REPO_ROOT, database_url_for_children, free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"

#: The password of the staff accounts the tests sign in with.
STAFF_PASSWORD = "a long passphrase for staff"

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
    """Stop the launcher and everything it started. The launcher runs each
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


def _stack_prefix(shared: bool) -> str:
    from django.conf import settings

    return settings.REDIS_KEY_PREFIX + ("stack:" if shared else "")


def _stack_start(
    folder: Path, model_dir: Path, *, shared: bool = False
) -> tuple[subprocess.Popen, str, Path]:
    """Start the launcher as ``make run`` does, on the test database and
    the session's Redis when it is external or the stack is shared (else
    the launcher's embedded one), with its var folder in folder; return the
    process, the base URL and the log once the web server answers.

    A shared stack keeps its Redis keys apart from the tests' own workers
    (its prefix) and, since many tests sign up and open widgets from
    127.0.0.1 within the hour, counts no per-address limits that a test
    could exhaust for the next."""
    from django.conf import settings

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEB_PORT")}
    if os.environ.get("REDIS_URL") or shared:
        env["REDIS_URL"] = settings.REDIS_URL
        env["REDIS_KEY_PREFIX"] = _stack_prefix(shared)
    if shared:
        env.update(
            SIGNUPS_PER_ADDRESS_PER_HOUR="100000",
            WIDGET_VISITORS_PER_HOUR_PER_ADDRESS="100000",
            WIDGET_MESSAGES_PER_MINUTE_PER_ADDRESS="100000",
        )
    env.update(
        VAR_DIR=str(folder / "var"),
        MODEL_DIR=str(model_dir.parent),
        DATABASE_URL=database_url_for_children(),
        WEB_PORT=str(port),
        INFERENCE_HEARTBEAT_INTERVAL="0.5",
        PYTHONUNBUFFERED="1",
    )
    log_path = folder / "stack.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "chatsite.launcher"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    status = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status, _body = get_json(f"{base}/healthz")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = 0
        if status == 200:
            break
        time.sleep(0.3)
    if status != 200:
        stack_stop(process)
        pytest.fail(f"stack not up: {status}\n{log_path.read_text()[-4000:]}")
    return process, base, log_path


def _stack_serving(base: str, process: subprocess.Popen, log_path: Path, version_id: int) -> None:
    """Wait until the stack is ready and every worker serves version_id."""
    deadline = time.monotonic() + 90
    status, body = 0, {}
    while time.monotonic() < deadline and process.poll() is None:
        status, body = get_json(f"{base}/readyz")
        workers = body.get("checks", {}).get("inference", {}).get("workers", [])
        if status == 200 and all(
            w["state"] == WorkerState.READY and w["model_version_id"] == version_id
            for w in workers
        ):
            return
        time.sleep(0.2)
    pytest.fail(f"stack not ready: {status} {body}\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="package")
def stack_shared(django_db_setup, django_db_blocker, tiny_model_dir, tmp_path_factory):
    """One launcher (Daphne, an inference worker, a Celery worker) for the
    browser tests (stopped when they end): starting one costs seconds of a small
    machine's two cores. Each test gets a fresh database (``stack``); the
    worker follows the production version each test promotes."""
    process, base, log_path = _stack_start(
        tmp_path_factory.mktemp("stack"), tiny_model_dir, shared=True
    )
    yield {"base": base, "process": process, "log": log_path}
    stack_stop(process)


@pytest.fixture
def stack(transactional_db, stack_shared, tiny_model_dir, settings):
    """The shared stack, serving the tiny model as production from this
    test's empty database. A test that stops or restarts the stack's
    processes takes ``stack_private`` instead."""
    process = stack_shared["process"]
    if process.poll() is not None:
        pytest.fail(f"the shared stack has stopped:\n{stack_shared['log'].read_text()[-4000:]}")
    settings.MODEL_DIR = tiny_model_dir.parent
    version = model_version_register(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    stack_serving_changed()
    _stack_serving(stack_shared["base"], process, stack_shared["log"], version.pk)
    yield stack_shared


def stack_serving_changed() -> None:
    """Tell the shared stack's worker that the versions in service changed,
    as a promotion tells the workers of its own Redis prefix: without it the
    worker notices only at its next poll, seconds later."""
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        epoch = serving_epoch_key().removeprefix(settings.REDIS_KEY_PREFIX)
        client.incr(_stack_prefix(True) + epoch)
    finally:
        client.close()


@pytest.fixture
def stack_private(transactional_db, tiny_model_dir, tmp_path, settings):
    """A launcher of this test's own, which the test may stop."""
    settings.MODEL_DIR = tiny_model_dir.parent
    version = model_version_register(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    process, base, log_path = _stack_start(tmp_path, tiny_model_dir)
    _stack_serving(base, process, log_path, version.pk)
    yield {"base": base, "process": process, "log": log_path}
    stack_stop(process)


def page_problems(page) -> list[str]:
    """Collect the page's script errors, console errors and policy
    violations as they happen; the test asserts the list stays empty."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" or "Content Security Policy" in msg.text
            else None
        ),
    )
    return problems


def signup(page, base: str, username: str) -> None:
    """Sign a new user up through the page; end on the chat page."""
    page.goto(base + "/accounts/signup/")
    page.get_by_test_id("signup-username").fill(username)
    page.get_by_test_id("signup-password1").fill("a long passphrase for tests")
    page.get_by_test_id("signup-password2").fill("a long passphrase for tests")
    page.get_by_test_id("signup-submit").click()
    page.wait_for_url(base + "/")


def staff_superuser_create(username: str):
    """A superuser who can sign in to the stack with STAFF_PASSWORD. The
    stack hashes with the production hashers, not the tests' fast one."""
    user = get_user_model().objects.create_superuser(username, f"{username}@example.com")
    user.password = PBKDF2PasswordHasher().encode(STAFF_PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])
    return user


def staff_login(page, base: str, username: str) -> None:
    """Sign in with STAFF_PASSWORD; end on the chat page."""
    page.goto(base + "/accounts/login/")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', STAFF_PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(base + "/")


@pytest.fixture
def host_pages(tmp_path, stack):
    """Serve one host page on two origins (two ports of 127.0.0.1); yield
    its folder and the two origins. The page embeds the widget with the
    key KEY, which host_page_set_key replaces."""
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><title>Fernhollow shop</title></head><body>"
        "<h1>Fernhollow shop</h1><p>Welcome to our shop.</p>"
        f'<script src="{stack["base"]}/static/widget/embed.js" data-site="KEY" async></script>'
        "</body></html>"
    )
    servers = []
    for _ in range(2):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield tmp_path, [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()


def host_page_set_key(folder: Path, key: str) -> None:
    """Make the host page in folder embed the widget of the site key."""
    page = folder / "index.html"
    page.write_text(page.read_text().replace('data-site="KEY"', f'data-site="{key}"'))


def last_answer_wait(page, timeout: int = 180_000) -> str:
    """Wait until the last answer on the chat page is no longer being
    written; return its status."""
    page.wait_for_function(
        """() => {
            const answers = document.querySelectorAll('[data-testid=assistant-message]');
            const last = answers[answers.length - 1];
            return last && last.dataset.status !== 'pending';
        }""",
        timeout=timeout,
    )
    return page.locator('[data-testid="assistant-message"]').last.get_attribute("data-status")
