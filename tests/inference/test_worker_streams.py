"""The worker end to end with real Redis: streams with sequence numbers,
resume, cancel, bad requests, a killed worker and a model swap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from inference.client import generation_cancel, generation_events_sync, generation_submit
from inference.connection import requests_stream_key
from inference.llamacpp.export import gguf_folder_build
from inference.worker.heartbeat import WorkerState
from inference.worker.versions import VersionSpec
from models_admin.services import model_version_promote, model_version_register
from tests.conftest import REPO_ROOT, child_env, database_url_for_children, wait_for
from tests.tiny_models import tiny_llama_save

GREEDY = {"temperature": 0, "max_new_tokens": 24}


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory, default_model_dir):
    return tiny_llama_save(
        tmp_path_factory.mktemp("models") / "tiny-b", default_model_dir=default_model_dir, seed=7
    )


def _ask(content: str = "Hello there") -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def test_a_generation_streams_numbered_events_ending_with_usage(
    start_worker, tiny_model_dir, redis_conn
):
    start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir))
    generation_id = generation_submit(messages=_ask(), params=GREEDY)
    events = list(generation_events_sync(generation_id, timeout_s=30))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "start" and events[0].data["model_version"] == "tiny"
    assert events[-1].type == "done"
    final = events[-1].data
    assert final["finish_reason"] in ("stop", "length")
    assert final["usage"]["completion_tokens"] >= 1
    assert final["usage"]["prompt_tokens"] > 5
    assert final["timings"]["ttft_s"] is not None
    assert final["timings"]["claim_wait_s"] >= 0  # in the requests stream before a slot
    assert "".join(e.text for e in events)
    # The finished request is gone from the requests stream.
    wait_for(lambda: redis_conn.xlen(requests_stream_key()) == 0)


def test_a_gguf_version_streams_through_llama_cpp_like_any_other(
    start_worker, tiny_model_dir, tmp_path
):
    folder = gguf_folder_build(tiny_model_dir, tmp_path / "tiny-gguf", quantization="f16")
    worker = start_worker(lambda: VersionSpec(2, "tiny-gguf", folder))
    generation_id = generation_submit(messages=_ask(), params=GREEDY)
    events = list(generation_events_sync(generation_id, timeout_s=30))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].data["model_version"] == "tiny-gguf"
    assert events[-1].type == "done", events[-1].data
    assert events[-1].data["usage"]["completion_tokens"] >= 1
    assert "".join(e.text for e in events)
    assert worker.versions.engines[2].backend == "llama.cpp"
    assert worker.heartbeat_build().dtype == "F16"


def test_a_reader_resumes_after_its_last_sequence_number(start_worker, tiny_model_dir):
    start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir))
    generation_id = generation_submit(messages=_ask(), params=GREEDY)
    everything = list(generation_events_sync(generation_id, timeout_s=30))
    cut = len(everything) // 2
    resumed = list(generation_events_sync(generation_id, after_seq=everything[cut - 1].seq))
    assert resumed == everything[cut:]


def test_cancel_ends_the_stream_and_frees_the_slot(start_worker, tiny_model_dir):
    worker = start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir))
    generation_id = generation_submit(
        messages=_ask(), params={"temperature": 0, "max_new_tokens": 400}
    )
    seen = []
    for event in generation_events_sync(generation_id, timeout_s=30):
        seen.append(event)
        if event.type == "text" and len(seen) == 4:
            generation_cancel(generation_id)
    assert seen[-1].type == "done"
    assert seen[-1].data["finish_reason"] == "cancelled"
    assert seen[-1].data["usage"]["completion_tokens"] < 400
    wait_for(lambda: worker.engines[1].running == 0)


def test_bad_requests_end_with_an_error_event_and_the_worker_stays_up(
    start_worker, tiny_model_dir, redis_conn
):
    start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir))
    stream = requests_stream_key()
    cases = {
        "bad-params": {"params": {"temperature": -3}, "messages": _ask()},
        "empty": {"params": {}, "messages": []},
        "unknown-version": {"params": {}, "messages": _ask(), "model_version_id": 999},
    }
    for generation_id, body in cases.items():
        redis_conn.xadd(stream, {"payload": json.dumps({"id": generation_id, **body})})
    redis_conn.xadd(stream, {"payload": "{not json"})
    errors = {}
    for generation_id in cases:
        (event,) = list(generation_events_sync(generation_id, timeout_s=30))
        assert event.type == "error"
        errors[generation_id] = event.data["error"]
    assert "temperature" in errors["bad-params"]
    assert "non-empty" in errors["empty"]
    assert "unknown model version 999" in errors["unknown-version"]
    # Still serving.
    good = generation_submit(messages=_ask(), params=GREEDY)
    assert list(generation_events_sync(good, timeout_s=30))[-1].type == "done"
    # Nothing, not even the malformed entry, is left to be claimed again.
    wait_for(lambda: redis_conn.xlen(stream) == 0)


def test_promotion_swaps_models_while_streams_run(start_worker, tiny_model_dir, second_model_dir):
    first, second = (
        VersionSpec(1, "first", tiny_model_dir),
        VersionSpec(2, "second", second_model_dir),
    )
    current = {"spec": first}
    worker = start_worker(lambda: current["spec"])
    long = {"temperature": 0, "max_new_tokens": 300}
    running = [generation_submit(messages=_ask(f"q{i}"), params=long) for i in range(3)]
    for generation_id in running:
        next(e for e in generation_events_sync(generation_id, timeout_s=30) if e.type == "text")
    current["spec"] = second
    wait_for(lambda: worker.version == second)
    newer = generation_submit(messages=_ask(), params=GREEDY)
    finals = {g: list(generation_events_sync(g, timeout_s=60))[-1] for g in [*running, newer]}
    assert all(e.type == "done" for e in finals.values())
    assert [finals[g].data["model_version"] for g in running] == ["first"] * 3
    assert finals[newer].data["model_version"] == "second"
    wait_for(lambda: list(worker.engines) == [2])  # the old model is freed


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_s_generation_is_continued_by_another(
    start_worker, tiny_model_dir, settings, redis_conn
):
    settings.MODEL_DIR = tiny_model_dir.parent
    version = model_version_register(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    env = child_env(
        DATABASE_URL=database_url_for_children(),
        MODEL_DIR=str(tiny_model_dir.parent),
        INFERENCE_SLOTS="2",
        INFERENCE_CLAIM_TIMEOUT="2",
        INFERENCE_HEARTBEAT_INTERVAL="0.3",
        INFERENCE_HEARTBEAT_TTL="1.5",
    )
    doomed = subprocess.Popen(
        [sys.executable, "manage.py", "run_inference_worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        generation_id = generation_submit(
            messages=_ask(), params={"temperature": 0, "max_new_tokens": 3000}
        )
        before = []
        for event in generation_events_sync(generation_id, timeout_s=120):
            before.append(event)
            if sum(1 for e in before if e.type == "text") >= 20:
                break
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
    finally:
        if doomed.poll() is None:
            doomed.kill()
    spec = VersionSpec(version.pk, "tiny", tiny_model_dir)
    # A claim timeout longer than the test: the takeover comes from the
    # dead worker's expired heartbeat.
    start_worker(lambda: spec, claim_timeout=3600.0)
    events = list(generation_events_sync(generation_id, timeout_s=120))
    assert events[-1].type in ("done", "error")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    if events[-1].type == "done":
        starts = [e for e in events if e.type == "start"]
        assert len(starts) == 2, "a second worker took over"


def test_metrics_of_every_worker_are_exposed_at_metrics(start_worker, tiny_model_dir, client):
    worker = start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir))
    generation_id = generation_submit(messages=_ask(), params=GREEDY)
    final = list(generation_events_sync(generation_id, timeout_s=30))[-1]
    tokens = final.data["usage"]["completion_tokens"]
    wait_for(lambda: f'worker="{worker.worker_id}"' in client.get("/metrics").content.decode())
    wait_for(
        lambda: (
            "inference_generated_tokens_total" in client.get("/metrics").content.decode()
            and f"{float(tokens)}" in client.get("/metrics").content.decode()
        )
    )
    # A worker killed by an earlier test keeps its heartbeat until it expires.
    wait_for(lambda: "inference_workers 1.0" in client.get("/metrics").content.decode())
    body = client.get("/metrics").content.decode()
    assert "inference_time_to_first_token_seconds_bucket" in body
    assert "inference_inter_token_seconds_count" in body
    assert 'finish_reason="' in body


def test_a_stopping_worker_finishes_what_it_runs(start_worker, tiny_model_dir):
    worker = start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir), drain_timeout=60.0)
    generation_id = generation_submit(
        messages=_ask(), params={"temperature": 0, "max_new_tokens": 150, "ignore_eos": True}
    )
    events = generation_events_sync(generation_id, timeout_s=30)
    seen = [next(events)]
    worker.stop()  # what SIGTERM does
    seen += list(events)
    assert seen[-1].type == "done"
    assert seen[-1].data["usage"]["completion_tokens"] == 150


def test_work_left_by_a_stopped_worker_is_continued_by_another(start_worker, tiny_model_dir):
    spec = VersionSpec(1, "tiny", tiny_model_dir)
    first = start_worker(lambda: spec, drain_timeout=0.0)
    generation_id = generation_submit(
        messages=_ask(), params={"temperature": 0, "max_new_tokens": 400, "ignore_eos": True}
    )
    events = generation_events_sync(generation_id, timeout_s=60)
    head = [next(events) for _ in range(5)]
    first.stop()
    wait_for(lambda: first.state == WorkerState.STOPPING)
    start_worker(lambda: spec, claim_timeout=1.0)
    rest = list(events)
    everything = head + rest
    assert everything[-1].type == "done"
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    assert sum(1 for e in everything if e.type == "start") == 2
