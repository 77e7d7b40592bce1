"""The whole stack as ``make run`` starts it: the launcher, Daphne, the
inference worker, the speech worker, the Celery workers, Celery beat and
Redis; a real
browser on the page."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.e2e.conftest import get_json

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_make_run_stack_is_ready_serves_the_page_and_stops_cleanly(
    stack_private, page, artifacts_dir
):
    stack = stack_private
    base, process = stack["base"], stack["process"]
    status, body = get_json(f"{base}/readyz")
    assert status == 200
    assert body["checks"]["inference"]["workers"][0]["model_version"] == "tiny"

    page.goto(base + "/status/")
    page.wait_for_selector('[data-check="inference"].ok', timeout=15_000)
    assert page.locator('[data-testid="production-model"]').inner_text() == "tiny"
    for name in ("database", "redis", "inference"):
        assert "ok" in (page.locator(f'[data-check="{name}"]').get_attribute("class") or "")
    # The speech worker came up with the embedded recogniser.
    page.wait_for_selector('[data-check="speech_recognition"].ok', timeout=60_000)
    detail = page.locator('[data-check="speech_recognition"] .detail').inner_text()
    assert "pocketsphinx" in detail
    page.wait_for_selector('[data-check="speech_synthesis"].ok', timeout=15_000)
    page.screenshot(path=str(artifacts_dir / "status-page.png"), full_page=True)
    static = page.request.get(base + "/static/css/app.css")
    assert static.status == 200

    # The Celery worker came up on the same Redis.
    deadline = time.monotonic() + 60
    while "ready." not in stack["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "ready." in stack["log"].read_text(), stack["log"].read_text()[-3000:]
    # Celery beat, which schedules the daily retention run, runs beside them.
    while "beat: Starting..." not in stack["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "beat: Starting..." in stack["log"].read_text(), stack["log"].read_text()[-3000:]
    beats = [
        p for p in psutil.Process(process.pid).children(recursive=True) if "beat" in p.cmdline()
    ]
    assert beats and all(p.is_running() for p in beats)

    tree = psutil.Process(process.pid).children(recursive=True)
    assert len(tree) >= 4
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert process.wait(timeout=60) is not None
    _gone, alive = psutil.wait_procs(tree, timeout=20)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    assert "All processes stopped." in stack["log"].read_text()
