"""Training jobs end to end: a real Celery worker process on this session's
Redis and test database runs them on tiny models."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from django.core.exceptions import ValidationError

from models_admin.dataset_format import DatasetFormatError
from models_admin.models import Dataset, DatasetExample, ModelVersion, TrainingJob
from models_admin.services.datasets import dataset_demo_preferences_create, dataset_upload
from models_admin.services.training import training_job_cancel, training_job_create
from tests.conftest import wait_for
from tests.models_admin.conftest import CELERY_LEASE_S

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _job(job: TrainingJob) -> TrainingJob:
    job.refresh_from_db()
    return job


def _wait_finished(job: TrainingJob, timeout: float = 240) -> TrainingJob:
    wait_for(lambda: _job(job).finished, timeout=timeout)
    return job


def test_a_fine_tune_job_checkpoints_and_evaluates_candidate_versions(
    celery_worker, base_version, demo
):
    celery_worker()
    job = training_job_create(
        kind="finetune",
        dataset=demo,
        params={"steps": 6, "checkpoint_every": 3, "eval_every": 3, "learning_rate": 3e-3},
    )
    assert job.base_version == base_version and job.state == TrainingJob.State.QUEUED
    _wait_finished(job)
    assert job.state == TrainingJob.State.COMPLETED, job.error or job.log
    assert [p["step"] for p in job.curve] == [1, 2, 3, 4, 5, 6]
    assert job.progress["step"] == 6 and job.progress["eval_loss"] > 0
    assert job.curve[-1]["loss"] < job.curve[0]["loss"]
    versions = list(job.checkpoints.order_by("step"))
    assert [v.step for v in versions] == [3, 6]
    # Finished for good: no restart state is left beside the checkpoints.
    assert not list(job.folder.glob("trainer-state-*"))
    for version in versions:
        assert version.state == ModelVersion.State.CANDIDATE
        assert version.parent == base_version and version.dataset == demo
        assert version.kind == ModelVersion.Kind.FINETUNE
        assert version.path.is_relative_to(job.folder)
    # Each checkpoint, and the base on the same data, is evaluated by its own task.
    wait_for(
        lambda: all(
            v.evaluated_at
            for v in ModelVersion.objects.filter(
                pk__in=[*[v.pk for v in versions], base_version.pk]
            )
        ),
        timeout=180,
    )
    last = ModelVersion.objects.get(pk=versions[-1].pk)
    for key in ("eval_loss", "perplexity", "tokens_per_s", "parameters", "size_bytes"):
        assert last.metrics[key] > 0, key
    assert len(last.answers) == 8 and all("prompt" in a and "answer" in a for a in last.answers)
    base = ModelVersion.objects.get(pk=base_version.pk)
    assert last.metrics["eval_loss"] < base.metrics["eval_by_dataset"][demo.name]["eval_loss"]


def test_a_distill_job_trains_a_student_with_the_requested_layers(
    celery_worker, base_version, demo
):
    celery_worker()
    job = training_job_create(
        kind="distill",
        dataset=demo,
        # The loss is compared between two batches six steps apart: with
        # a random tiny teacher, a softer target (T 2) and more of the loss
        # from the labels (alpha 0.5) make it fall that quickly.
        params={
            "steps": 6, "checkpoint_every": 6, "student_layers": 1, "learning_rate": 3e-3,
            "temperature": 2.0, "alpha": 0.5,
        },
    )  # fmt: skip
    _wait_finished(job)
    assert job.state == TrainingJob.State.COMPLETED, job.error or job.log
    assert job.curve[-1]["loss"] < job.curve[0]["loss"]
    [student] = job.checkpoints.all()
    assert student.kind == ModelVersion.Kind.DISTILL
    import json

    assert json.loads((student.path / "config.json").read_text())["num_hidden_layers"] == 1


def test_cancel_stops_the_job_and_keeps_its_last_checkpoint(celery_worker, base_version, demo):
    celery_worker()
    job = training_job_create(
        kind="finetune", dataset=demo, params={"steps": 2000, "checkpoint_every": 2}
    )
    wait_for(lambda: _job(job).progress.get("step", 0) >= 3, timeout=120)
    training_job_cancel(job=job)
    _wait_finished(job)
    assert job.state == TrainingJob.State.CANCELLED
    assert job.progress["step"] < 2000
    assert job.checkpoints.exists()
    assert all(v.path.is_dir() for v in job.checkpoints.all())


def test_a_queued_job_cancelled_before_it_starts_never_runs(base_version, demo):
    job = training_job_create(kind="finetune", dataset=demo, params={"steps": 5})
    training_job_cancel(job=job)
    assert _job(job).state == TrainingJob.State.CANCELLED


@pytest.mark.parametrize("kind", ["finetune", "dpo"])
def test_a_killed_worker_s_job_resumes_from_its_checkpoint(
    celery_worker, base_version, demo, kind
):
    first = celery_worker()
    params = {"steps": 15, "checkpoint_every": 3, "eval_every": 15, "batch_size": 2}
    if kind == "dpo":
        params.update(eval_examples=4, learning_rate=1e-4)
    job = training_job_create(
        kind=kind,
        dataset=dataset_demo_preferences_create(count=40) if kind == "dpo" else demo,
        params=params,
    )
    wait_for(lambda: _job(job).checkpoints.filter(step__gte=3).exists(), timeout=120)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = _job(job).progress["step"]
    assert job.state == TrainingJob.State.RUNNING and killed_at < 15
    # A new worker finds the job's heartbeat stale and queues it again.
    time.sleep(CELERY_LEASE_S)
    celery_worker()
    _wait_finished(job)
    assert job.state == TrainingJob.State.COMPLETED, job.error or job.log
    assert job.attempts == 2
    # Step numbers continue from the checkpoint, not from zero: the steps
    # after the last checkpoint ran twice, the earlier ones once.
    resumed = int(re.search(r"Resuming from checkpoint (\d+)", job.log).group(1))
    assert 3 <= resumed <= killed_at
    # (A DPO job measures the base first, as step 0, once.)
    steps = [p["step"] for p in job.curve if p["step"]]
    assert steps == list(range(1, killed_at + 1)) + list(range(resumed + 1, 16))
    # Every checkpoint on disk is a version, including one written just
    # before the kill.
    assert resumed in set(job.checkpoints.values_list("step", flat=True))


def test_a_broken_upload_names_each_bad_line_and_stores_nothing(base_version):
    data = (
        b'{"messages": [{"role": "user", "content": "hi"}, '
        b'{"role": "assistant", "content": "hello"}]}\n'
        b"{not json\n"
        b'{"messages": [{"role": "bot", "content": "x"}]}\n'
    )
    with pytest.raises(DatasetFormatError) as caught:
        dataset_upload(name="broken", data=data)
    assert [error.line for error in caught.value.errors] == [2, 3]
    with pytest.raises(DatasetFormatError):
        dataset_upload(name="empty", data=b"")
    assert not Dataset.objects.exists() and not DatasetExample.objects.exists()


def test_job_parameters_are_validated_by_name(base_version, demo):
    with pytest.raises(ValidationError) as caught:
        training_job_create(
            kind="finetune",
            dataset=demo,
            params={"learning_rate": -1, "steps": "many", "temperature": 2.0, "lora": "yes"},
        )
    assert set(caught.value.message_dict) == {"learning_rate", "steps", "temperature", "lora"}
    job = training_job_create(kind="finetune", dataset=demo, params={"epochs": 2, "batch_size": 4})
    assert job.params["steps"] == round(2 * demo.stats["train"] / 4)
    training_job_cancel(job=job)


def test_a_job_held_by_a_live_worker_is_taken_over_only_after_its_lease(
    base_version, demo, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from models_admin.services.training import JobBusy, training_job_claim

    settings.TRAINING_LEASE_S = 60
    job = training_job_create(kind="finetune", dataset=demo, params={"steps": 5}, enqueue=False)
    assert training_job_claim(job_id=job.pk).attempts == 1
    with pytest.raises(JobBusy):
        training_job_claim(job_id=job.pk)
    TrainingJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=61)
    )
    assert training_job_claim(job_id=job.pk).attempts == 2
    training_job_cancel(job=job)
    assert training_job_claim(job_id=job.pk) is None
