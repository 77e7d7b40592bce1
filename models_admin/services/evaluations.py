"""Evaluations: measuring a version on a dataset (eval loss, perplexity,
decode speed, size, answers to the fixed prompts). Each is a row queued on
the evaluation queue, apart from training, so a job never waits behind the
measurement of its own base; the row carries the progress pages show."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from models_admin.models import Dataset, Evaluation, ModelVersion, TrainingJob
from models_admin.services.events import dashboard_notify_on_commit

logger = logging.getLogger(__name__)

#: Eval examples an evaluation reads at most.
EVAL_LIMIT = 200
#: Progress is written at most this often (seconds), and at each new phase.
PROGRESS_INTERVAL_S = 1.0

Progress = Callable[[str, int, int], None]


def _notify(evaluation: Evaluation) -> None:
    payload = {
        "type": "evaluation.changed",
        "evaluation": evaluation.pk,
        "version": evaluation.version_id,
        "state": evaluation.state,
    }
    if evaluation.job_id is not None:
        dashboard_notify_on_commit(topic=f"job.{evaluation.job_id}", payload=payload)
    dashboard_notify_on_commit(topic=f"version.{evaluation.version_id}", payload=payload)


def evaluation_queue(
    *,
    version: ModelVersion,
    dataset: Dataset | None = None,
    job: TrainingJob | None = None,
    enqueue: bool = True,
) -> Evaluation:
    """Queue a measurement of version on dataset (the version's own when
    None); one not yet finished for the same pair is reused. With
    ``enqueue=False`` the row is made for the caller to run
    (``evaluation_run``) in its own process."""
    existing = Evaluation.objects.filter(
        version=version,
        dataset=dataset,
        state__in=[Evaluation.State.QUEUED, Evaluation.State.RUNNING],
    ).first()
    if existing is not None:
        return existing
    evaluation = Evaluation(version=version, dataset=dataset, job=job)
    evaluation.full_clean()
    with transaction.atomic():
        evaluation.save()
        _notify(evaluation)
        if enqueue:
            transaction.on_commit(lambda: _send(evaluation.pk))
    return evaluation


def _send(evaluation_id: int) -> None:
    from models_admin.tasks import model_version_evaluate_task

    model_version_evaluate_task.delay(evaluation_id)


def _claim(evaluation_id: int) -> Evaluation | None:
    """Mark it running; None when it is gone or already finished. A
    running one is taken again: its worker died (the task is acknowledged
    late, so only then does it come back)."""
    with transaction.atomic():
        evaluation = (
            Evaluation.objects.select_for_update(of=("self",))
            .select_related("version", "dataset")
            .filter(pk=evaluation_id)
            .first()
        )
        if evaluation is None or evaluation.finished:
            return None
        evaluation.state = Evaluation.State.RUNNING
        evaluation.started_at = timezone.now()
        evaluation.phase, evaluation.done, evaluation.total = "loading", 0, 0
        evaluation.save(update_fields=["state", "started_at", "phase", "done", "total"])
        _notify(evaluation)
    return evaluation


def _progress_writer(evaluation: Evaluation) -> Progress:
    last_phase = [evaluation.phase]
    last_at = [0.0]

    def report(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase == last_phase[0] and now - last_at[0] < PROGRESS_INTERVAL_S and done < total:
            return
        last_phase[0], last_at[0] = phase, now
        with transaction.atomic():
            Evaluation.objects.filter(pk=evaluation.pk).update(phase=phase, done=done, total=total)
            evaluation.phase, evaluation.done, evaluation.total = phase, done, total
            _notify(evaluation)

    return report


def evaluation_run(*, evaluation_id: int) -> Evaluation | None:
    """Run a queued evaluation to its end in this process. A failure is
    recorded on the row with its reason."""
    evaluation = _claim(evaluation_id)
    if evaluation is None:
        return None
    try:
        model_version_evaluate(
            version=evaluation.version,
            dataset=evaluation.dataset,
            progress=_progress_writer(evaluation),
        )
    except Exception as exc:
        logger.exception("Evaluation %s of %s failed", evaluation.pk, evaluation.version.name)
        return _finish(evaluation, Evaluation.State.FAILED, error=str(exc))
    return _finish(evaluation, Evaluation.State.COMPLETED)


def _finish(evaluation: Evaluation, state: str, error: str = "") -> Evaluation:
    evaluation.state = state
    evaluation.error = error[:5000]
    evaluation.finished_at = timezone.now()
    with transaction.atomic():
        evaluation.save(update_fields=["state", "error", "finished_at"])
        _notify(evaluation)
    return evaluation


def model_version_evaluation_store(
    *, version: ModelVersion, metrics: dict[str, Any], answers: list[dict[str, str]]
) -> ModelVersion:
    version.metrics = {**version.metrics, **metrics}
    version.answers = answers
    version.evaluated_at = timezone.now()
    version.save(update_fields=["metrics", "answers", "evaluated_at"])
    return version


def model_version_evaluate(
    *,
    version: ModelVersion,
    dataset: Dataset | None = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Measure a version on a dataset's eval split (its own by default):
    eval loss, perplexity, decode speed, size, and answers to the fixed
    prompts, reporting each phase's progress to ``progress``."""
    from models_admin.demo_data import DEMO_SYSTEM_PROMPT, demo_prompts
    from models_admin.models import DatasetExample
    from models_admin.training.evaluate import evaluate

    dataset = dataset or version.dataset
    conversations = []
    if dataset is not None:
        rows = DatasetExample.objects.filter(
            dataset=dataset, split=DatasetExample.Split.EVAL
        ).order_by("index")[:EVAL_LIMIT]
        conversations = [row.messages for row in rows if row.messages]
    system = DEMO_SYSTEM_PROMPT if dataset and dataset.source == Dataset.Source.DEMO else ""
    training = TrainingJob.objects.filter(state=TrainingJob.State.RUNNING)
    busy = training.exists()
    metrics, answers = evaluate(
        version.path,
        eval_conversations=conversations,
        prompts=demo_prompts(),
        system_prompt=system,
        progress=progress,
    )
    # A training job on the same machine slows decoding: say so beside the
    # speed, so it is not compared with one measured alone.
    metrics["speed_under_load"] = busy or training.exists()
    if dataset is not None:
        metrics["eval_dataset"] = dataset.name
        by_dataset = dict(version.metrics.get("eval_by_dataset", {}))
        by_dataset[dataset.name] = {
            k: metrics[k] for k in ("eval_loss", "perplexity") if k in metrics
        }
        metrics["eval_by_dataset"] = by_dataset
    return model_version_evaluation_store(version=version, metrics=metrics, answers=answers)
