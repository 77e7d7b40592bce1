"""Inference workers run in threads of the test process, on the session's
Redis, with short intervals so tests see state changes quickly."""

from __future__ import annotations

import threading

import pytest

from inference.connection import worker_keys
from inference.worker import InferenceWorker, WorkerState
from tests.conftest import wait_for


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
