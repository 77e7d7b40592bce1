"""The worker's heartbeat drives /readyz; a broken model folder keeps the
web up and the worker reporting the error."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from inference.connection import worker_heartbeat_key
from inference.worker.heartbeat import WorkerState
from inference.worker.versions import VersionSpec
from tests.conftest import wait_for, worker_make

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_checking_anything(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_fails_while_no_worker_runs(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["inference"] == {
        "ok": False,
        "workers": [],
        "error": "no inference worker is running",
    }


def test_readyz_is_green_once_a_worker_has_loaded_the_model(client, start_worker, tiny_model_dir):
    spec = VersionSpec(id=1, name="tiny", path=tiny_model_dir)
    worker = start_worker(lambda: spec)
    wait_for(lambda: worker.state == WorkerState.READY)
    # The worker takes a state just before it writes the heartbeat saying so.
    wait_for(lambda: client.get("/readyz").status_code == 200)
    response = client.get("/readyz")
    (entry,) = response.json()["checks"]["inference"]["workers"]
    assert entry["state"] == "ready"
    assert entry["model_version"] == "tiny"
    assert entry["device"] == "cpu"
    assert entry["heartbeat_age_s"] < 2


def test_a_corrupt_model_folder_is_reported_and_the_web_stays_up(
    client, start_worker, tmp_path: Path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    worker = start_worker(lambda: VersionSpec(id=7, name="broken", path=broken))
    wait_for(lambda: worker.state == WorkerState.ERROR)
    response = client.get("/readyz")
    assert response.status_code == 503
    (entry,) = response.json()["checks"]["inference"]["workers"]
    assert entry["state"] == "error"
    assert "config.json is not valid JSON" in entry["error"]
    assert client.get("/healthz").status_code == 200


def test_weights_that_do_not_load_are_reported(start_worker, tiny_model_dir, tmp_path):
    broken = tmp_path / "bad-weights"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    worker = start_worker(lambda: VersionSpec(id=8, name="bad", path=broken))
    wait_for(lambda: worker.state == WorkerState.ERROR)
    assert "cannot load model folder" in worker.error


def test_the_worker_loads_a_newly_promoted_version(start_worker, tiny_model_dir, tmp_path):
    missing = VersionSpec(id=1, name="missing", path=tmp_path / "nowhere")
    good = VersionSpec(id=2, name="tiny", path=tiny_model_dir)
    current = {"spec": missing}
    worker = start_worker(lambda: current["spec"])
    wait_for(lambda: worker.state == WorkerState.ERROR)
    assert "does not exist" in worker.error
    current["spec"] = good
    wait_for(lambda: worker.state == WorkerState.READY)
    assert worker.version == good


def test_no_production_version_is_reported(start_worker):
    worker = start_worker(lambda: None)
    wait_for(lambda: worker.state == WorkerState.NO_MODEL)


def test_a_stopped_worker_removes_its_heartbeat(redis_conn, tiny_model_dir):
    worker = worker_make(redis_conn, lambda: VersionSpec(id=1, name="tiny", path=tiny_model_dir))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: worker.state == WorkerState.READY)
    assert redis_conn.exists(worker_heartbeat_key(worker.worker_id))
    worker.stop()
    thread.join(timeout=10)
    assert not redis_conn.exists(worker_heartbeat_key(worker.worker_id))
