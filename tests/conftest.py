"""Shared fixtures: a private Redis per test session, tiny models, factories.

With ``REDIS_URL`` set, the suite uses that server under a key prefix of
its own and removes its keys at the end; otherwise it starts an embedded
Redis in a temporary folder. ``DATABASE_URL`` chooses the database the
same way the settings do (pytest-django creates the test database).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from django.conf import settings
from django.utils import translation

from chatsite.embedded_redis import EmbeddedRedis
from chatsite.redis_url import celery_redis_url
from inference.connection import redis_client, worker_heartbeat_pattern, worker_keys
from inference.worker.heartbeat import WorkerState, heartbeats_read
from inference.worker.loop import InferenceWorker
from tests.tiny_models import tiny_llama_save

REPO_ROOT = Path(__file__).resolve().parent.parent


def _redis_settings_apply(url: str, prefix: str) -> None:
    from inference.connection import redis_client

    settings.REDIS_URL = url
    settings.REDIS_KEY_PREFIX = prefix
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chatsite.channel_layer.ResilientRedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url}], "prefix": f"{prefix}asgi"},
        }
    }
    settings.CELERY_BROKER_URL = celery_redis_url(url)
    settings.CELERY_RESULT_BACKEND = celery_redis_url(url)
    options = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "global_keyprefix": f"{prefix}celery:",
    }
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
    settings.CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": f"{prefix}celery:"}
    from chatsite.celery import app

    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        result_backend=settings.CELERY_RESULT_BACKEND,
        broker_transport_options=options,
        result_backend_transport_options=settings.CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS,
    )
    redis_client.cache_clear()


@pytest.fixture(autouse=True)
def _language_reset() -> Iterator[None]:
    """Start every test in the default language: LocaleMiddleware leaves the
    language of a request (a test's Accept-Language) active in the thread."""
    yield
    translation.deactivate()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the translation catalogues a fresh checkout lacks (make test
    does it too), before any test loads one; the processes a test starts
    read the same files."""
    from chat.languages import catalogues_compile

    catalogues_compile()


@pytest.fixture(scope="session", autouse=True)
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis this test session uses; its URL."""
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    external = os.environ.get("REDIS_URL")
    server = None
    if external:
        url = external
    else:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        url = server.start()
    _redis_settings_apply(url, prefix)
    yield url
    if server is not None:
        server.stop()
    else:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """Hash with MD5 in tests: the default PBKDF2 takes most of a second a
    hash on a small machine, and factories hash for every user. Processes
    a test starts keep the real hashers."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def redis_conn(redis_url: str):
    from inference.connection import redis_client

    return redis_client()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Give every test a channel layer of its own: each asyncio test runs
    its own event loop, and a layer that a finished test's sockets were
    still receiving on keeps state (a receive lock) bound to that loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _empty_request_queue(redis_url: str) -> None:
    """Start every test with no queued generation: requests that earlier
    tests left unanswered would otherwise reach this test's workers first."""
    from inference.connection import redis_client, requests_stream_key

    redis_client().delete(requests_stream_key())


@pytest.fixture(autouse=True)
def _no_signups_counted(redis_url: str) -> None:
    """Start every test with no signup counted against any address: the
    test client and browsers all sign up from 127.0.0.1."""
    from inference.connection import key, redis_client

    client = redis_client()
    for counter in client.scan_iter(match=key("signups", "*"), count=500):
        client.delete(counter)


@pytest.fixture(scope="session")
def default_model_dir() -> Path | None:
    """The converted default model, when set-up has fetched it."""
    path = Path(settings.DEFAULT_MODEL_DIR)
    return path if (path / "config.json").is_file() else None


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, default_model_dir) -> Path:
    return tiny_llama_save(
        tmp_path_factory.mktemp("models") / "tiny", default_model_dir=default_model_dir
    )


def wait_for(predicate, timeout: float = 30.0) -> None:
    """Poll predicate until it holds; fail the test after timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a process a test starts: this session's Redis,
    database and key prefix."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=settings.REDIS_URL,
        REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def database_url_for_children() -> str:
    """A DATABASE_URL naming the test database, for processes a test starts."""
    from django.db import connection

    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = config.get("USER") or ""
    password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = config.get("HOST") or "127.0.0.1"
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{config['NAME']}"


# --- inference workers ----------------------------------------------------
# Workers run in threads of the test process, on the session's Redis, with
# short intervals so tests see state changes quickly.


def worker_make(redis_conn, version_source, **options) -> InferenceWorker:
    defaults = {
        "device": "cpu",
        "slots": 4,
        "max_context": 512,
        "heartbeat_interval": 0.2,
        "heartbeat_ttl": 2.0,
        "poll_interval": 0.2,
        "claim_timeout": 2.0,
    }
    return InferenceWorker(
        redis_client=redis_conn,
        keys=worker_keys(),
        production_version=version_source,
        **{**defaults, **options},
    )


@pytest.fixture
def start_worker(redis_conn):
    """Start a worker thread; wait until it has settled on a state."""
    started: list[tuple[InferenceWorker, threading.Thread]] = []
    settled = (WorkerState.READY, WorkerState.ERROR, WorkerState.NO_MODEL)

    def start(version_source, **options) -> InferenceWorker:
        worker = worker_make(redis_conn, version_source, **options)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        wait_for(lambda: worker.state in settled)
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=30)


class WorkerProcess:
    """A ``run_inference_worker`` process a test started, and its log."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process = process
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def worker_process(tmp_path):
    """Start ``manage.py run_inference_worker`` processes on the test
    database and this session's Redis, each waited for until it serves its
    production version; stop them at the end. Call it with environment
    overrides (``MODEL_DIR`` for one); it returns a WorkerProcess."""
    started: list[tuple[WorkerProcess, IO[str]]] = []

    def start(**env: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_inference_worker"],
            cwd=REPO_ROOT,
            env=child_env(DATABASE_URL=database_url_for_children(), **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(process, log_path)
        started.append((worker, log))

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{worker.log_text()[-4000:]}")
            beats = heartbeats_read(redis_client(), worker_heartbeat_pattern())
            return any(b.pid == process.pid and b.state == WorkerState.READY for b in beats)

        try:
            wait_for(serving, timeout=120)
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{worker.log_text()[-4000:]}") from None
        return worker

    yield start
    for worker, log in started:
        process = worker.process
        if process.poll() is None:
            # A test may have paused it; a paused process ignores SIGTERM.
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def web_command(port: int) -> list[str]:
    """The Procfile's ``web`` command, as ``make run`` starts it, on
    127.0.0.1:port with this interpreter's Daphne."""
    from chatsite.supervisor import procfile_parse

    entry = next(e for e in procfile_parse(REPO_ROOT / "Procfile") if e.name == "web")
    words = shlex.split(entry.command.replace("$WEB_HOST", "127.0.0.1"))
    words = [str(port) if word == "$WEB_PORT" else word for word in words]
    assert words[0] == "daphne", entry.command
    return [sys.executable, "-m", "daphne", *words[1:]]


@pytest.fixture
def web_process(tmp_path):
    """Start Daphne (the Procfile's command) serving the project on the
    test database and this session's Redis, each waited for until
    ``/healthz`` answers; kill any still running at the end. Call it with the port and environment
    overrides; it returns the process (its log is ``web-N.log`` in the
    test's tmp_path)."""
    started: list[tuple[subprocess.Popen, IO[str]]] = []

    def start(port: int, **env: str) -> subprocess.Popen:
        log_path = tmp_path / f"web-{len(started)}.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            web_command(port),
            cwd=REPO_ROOT,
            env=child_env(DATABASE_URL=database_url_for_children(), **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append((process, log))

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the web server exited:\n{log_path.read_text()[-4000:]}")
            try:
                url = f"http://127.0.0.1:{port}/healthz"
                with urllib.request.urlopen(url, timeout=2):
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_for(up, timeout=90)
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the real-browser tests last: Playwright's sync API keeps an event
    loop running in the test thread until the session ends, and asyncio
    tests after it could not start their own."""
    browser = [item for item in items if item.get_closest_marker("e2e")]
    if browser:
        others = [item for item in items if not item.get_closest_marker("e2e")]
        items[:] = [*others, *browser]


# --- a Redis a test may kill -----------------------------------------------


class RestartableRedis:
    """A redis-server of the test's own, killed and started again at will
    (append-only file on, like the embedded default)."""

    def __init__(self, directory: Path) -> None:
        self.redis = EmbeddedRedis(directory, directory / "r.sock")
        self.directory = directory

    def start(self) -> None:
        self.redis.start()

    def kill(self, *, lose_data: bool) -> None:
        """kill -9 the server; with lose_data, its files go too, so it
        comes back empty."""
        process = self.redis.process
        assert process is not None
        process.kill()
        process.wait()
        self.redis.process = None
        if lose_data:
            for leftover in self.directory.glob("appendonly*"):
                if leftover.is_dir():
                    for part in leftover.iterdir():
                        part.unlink()
                    leftover.rmdir()
                else:
                    leftover.unlink()


@pytest.fixture
def restartable_redis(tmp_path):
    """Point the settings (streams, channel layer, Celery) at a private
    RestartableRedis for one test."""
    from channels.layers import channel_layers

    session_url, prefix = settings.REDIS_URL, settings.REDIS_KEY_PREFIX
    instance = RestartableRedis(tmp_path / "redis")
    instance.start()
    _redis_settings_apply(instance.redis.url, prefix)
    channel_layers.backends.clear()
    yield instance
    instance.redis.stop()
    _redis_settings_apply(session_url, prefix)
    channel_layers.backends.clear()
