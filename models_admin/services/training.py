"""Training jobs: creation with validated hyperparameters, the state
changes the Celery task reports, and checkpoints as candidate versions
(measured by ``evaluations``)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext

from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.selectors import model_version_get_production
from models_admin.services.datasets import dataset_pairs
from models_admin.services.evaluations import evaluation_queue
from models_admin.services.events import dashboard_notify_on_commit
from models_admin.services.model_versions import model_version_create, model_version_trainable

logger = logging.getLogger(__name__)

#: name: (type, default, minimum, maximum, which kinds)
ALL = ("finetune", "distill", "dpo")
PARAMS: dict[str, tuple[type, Any, float, float, tuple[str, ...]]] = {
    "learning_rate": (float, 1e-4, 1e-7, 1.0, ALL),
    "steps": (int, 60, 1, 1_000_000, ALL),
    "epochs": (float, 0.0, 0.0, 1000.0, ALL),
    "batch_size": (int, 4, 1, 512, ALL),
    "grad_accum": (int, 1, 1, 256, ALL),
    "max_length": (int, 256, 16, 32_768, ALL),
    "warmup_steps": (int, 5, 0, 100_000, ALL),
    "weight_decay": (float, 0.0, 0.0, 1.0, ALL),
    "seed": (int, 0, 0, 2**31 - 1, ALL),
    "checkpoint_every": (int, 20, 1, 1_000_000, ALL),
    "eval_every": (int, 20, 1, 1_000_000, ALL),
    "eval_examples": (int, 64, 1, 100_000, ALL),
    "lora": (bool, False, 0, 1, ("finetune", "dpo")),
    "lora_r": (int, 8, 1, 256, ("finetune", "dpo")),
    "lora_alpha": (int, 16, 1, 1024, ("finetune", "dpo")),
    "student_layers": (int, 10, 1, 1000, ("distill",)),
    # Measured in train-bench at equal wall time (see README): T = 1 with
    # most of the loss from the teacher beat T = 2, alpha 0.5.
    "temperature": (float, 1.0, 0.1, 20.0, ("distill",)),
    "alpha": (float, 0.9, 0.0, 1.0, ("distill",)),
    "beta": (float, 0.1, 0.001, 10.0, ("dpo",)),
}
#: Defaults that differ by kind: preference tuning moves a trained model a
#: little, at a smaller step, and its pairs are two sequences each.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "dpo": {
        "learning_rate": 5e-6,
        "steps": 30,
        "batch_size": 4,
        "checkpoint_every": 10,
        "eval_every": 10,
    },
}


def param_default(kind: str, name: str) -> Any:
    """The value a job of kind takes for name when none is given."""
    return KIND_DEFAULTS.get(kind, {}).get(name, PARAMS[name][1])


def training_params_validate(*, kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Fill defaults and check every value; raise ValidationError keyed by
    the parameter's name."""
    if kind not in TrainingJob.Kind.values:
        raise ValidationError(
            {
                "kind": [
                    gettext("Unknown job kind %(kind)r: finetune, distill or dpo.")
                    % {"kind": kind}
                ]
            }
        )
    given = dict(params or {})
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for name in given:
        if name not in PARAMS or kind not in PARAMS[name][4]:
            errors[name] = [f"Not a {kind} parameter."]
    for name, (kind_type, _default, low, high, kinds) in PARAMS.items():
        if kind not in kinds:
            continue
        value = given.get(name, param_default(kind, name))
        if kind_type is bool:
            if not isinstance(value, bool):
                errors[name] = ["Must be true or false."]
                continue
        elif kind_type is int:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value != int(value)
            ):
                errors[name] = ["Must be a whole number."]
                continue
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors[name] = ["Must be a number."]
                continue
            value = float(value)
        if kind_type is not bool and not low <= value <= high:
            errors[name] = [f"Must be between {low:g} and {high:g}."]
            continue
        clean[name] = value
    if errors:
        raise ValidationError(errors)
    return clean


def _steps(params: dict[str, Any], dataset: Dataset) -> int:
    """``epochs`` (when above zero) decides the number of steps."""
    if params.get("epochs"):
        per_step = params["batch_size"] * params["grad_accum"]
        train = max(int(dataset.stats.get("train") or 1), 1)
        return max(round(params["epochs"] * train / per_step), 1)
    return int(params["steps"])


def _notify(job: TrainingJob, event_type: str, data: dict[str, Any]) -> None:
    """Broadcast a job change to dashboards after the commit: on the topic
    of all jobs and on the job's own."""
    payload = {"type": event_type, "job": job.pk, **data}
    dashboard_notify_on_commit(topic="jobs", payload=payload)
    dashboard_notify_on_commit(topic=f"job.{job.pk}", payload=payload)


def training_job_create(
    *,
    kind: str,
    dataset: Dataset,
    base_version: ModelVersion | None = None,
    student_version: ModelVersion | None = None,
    params: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    enqueue: bool = True,
) -> TrainingJob:
    """Queue a fine-tune, distill or DPO job on the training queue (or
    leave it for the caller to run, ``enqueue=False``). The base (the model
    trained, or the teacher) defaults to production. A DPO job needs a
    preference dataset with ``TRAINING_DPO_MIN_PAIRS`` training pairs; the
    other kinds need conversations."""
    clean = training_params_validate(kind=kind, params=params)
    base_version = base_version or model_version_get_production()
    if base_version is None:
        raise ValidationError(
            {"base_version": [gettext("No model version is in production to start from.")]}
        )
    # A GGUF version trains as the transformers version it was made from.
    base_version = _trainable(base_version, "base_version")
    if student_version is not None:
        student_version = _trainable(student_version, "student_version")
    if student_version is not None and kind != TrainingJob.Kind.DISTILL:
        raise ValidationError({"student_version": [gettext("Only a distill job has a student.")]})
    _dataset_check(kind, dataset)
    clean["steps"] = _steps(clean, dataset)
    job = TrainingJob(
        kind=kind,
        dataset=dataset,
        base_version=base_version,
        student_version=student_version,
        params=clean,
        progress={"step": 0, "total_steps": clean["steps"]},
        created_by_id=user.pk if user is not None else None,
    )
    job.full_clean()
    with transaction.atomic():
        job.save()
        _notify(job, "training.job", {"state": job.state})
        if dataset.name not in base_version.metrics.get("eval_by_dataset", {}):
            # The base measured on the same data is what the job is judged
            # by; measured on the evaluation queue while the job trains.
            evaluation_queue(version=base_version, dataset=dataset, job=job)
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _dataset_check(kind: str, dataset: Dataset) -> None:
    pairs = dataset.kind == Dataset.Kind.PREFERENCES
    if kind == TrainingJob.Kind.DPO and not pairs:
        raise ValidationError(
            {"dataset": [gettext("Preference tuning needs a dataset of preference pairs.")]}
        )
    if kind != TrainingJob.Kind.DPO and pairs:
        raise ValidationError(
            {
                "dataset": [
                    gettext("A preference dataset trains only a preference-tuning (DPO) job.")
                ]
            }
        )
    train = int(dataset.stats.get("train") or 0)
    if not train:
        raise ValidationError({"dataset": [gettext("The dataset has no training examples.")]})
    least = settings.TRAINING_DPO_MIN_PAIRS
    if pairs and train < least:
        raise ValidationError(
            {
                "dataset": [
                    gettext(
                        "The dataset has %(train)s training pairs; preference tuning "
                        "needs at least %(least)s (TRAINING_DPO_MIN_PAIRS)."
                    )
                    % {"train": train, "least": least}
                ]
            }
        )


def _trainable(version: ModelVersion, field: str) -> ModelVersion:
    try:
        return model_version_trainable(version)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from None


def _enqueue(job_id: int) -> None:
    from models_admin.tasks import training_job_run_task

    training_job_run_task.delay(job_id)


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Stop the job at its next step; a queued job ends at once. The last
    checkpoint stays."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.finished:
            return job
        job.cancel_requested = True
        fields = ["cancel_requested"]
        if job.state == TrainingJob.State.QUEUED:
            job.state = TrainingJob.State.CANCELLED
            job.finished_at = timezone.now()
            fields += ["state", "finished_at"]
        job.save(update_fields=fields)
        _notify(job, "training.job", {"state": job.state})
    return job


class JobBusy(Exception):
    """Another worker holds the job and its heartbeat is fresh."""


def training_job_claim(*, job_id: int) -> TrainingJob | None:
    """Take the job for this worker, or return None when there is nothing
    left to do (it finished or was cancelled). Raise JobBusy when another
    live worker runs it (its heartbeat is fresher than the lease)."""
    lease = timedelta(seconds=settings.TRAINING_LEASE_S)
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.finished:
            return None
        now = timezone.now()
        if job.cancel_requested:
            job.state = TrainingJob.State.CANCELLED
            job.finished_at = now
            job.save(update_fields=["state", "finished_at"])
            return None
        if (
            job.state == TrainingJob.State.RUNNING
            and job.heartbeat_at is not None
            and now - job.heartbeat_at < lease
        ):
            raise JobBusy(f"job {job_id} is running elsewhere")
        job.state = TrainingJob.State.RUNNING
        job.attempts += 1
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        job.save(update_fields=["state", "attempts", "heartbeat_at", "started_at"])
        _notify(job, "training.job", {"state": job.state})
    return job


def training_job_heartbeat(*, job_id: int) -> bool:
    """Renew the lease; return True when cancellation was asked for."""
    TrainingJob.objects.filter(pk=job_id).update(heartbeat_at=timezone.now())
    return bool(
        TrainingJob.objects.filter(pk=job_id).values_list("cancel_requested", flat=True).first()
    )


#: What a step's report adds to the curves: the loss, and for DPO the
#: preference accuracy and reward margin, on training and held-out pairs.
CURVE_KEYS = (
    "step", "loss", "lr", "eval_loss", "accuracy", "margin", "eval_accuracy",
    "eval_margin", "eval_dpo_loss", "eval_logp_accuracy",
)  # fmt: skip


def training_job_progress(*, job_id: int, report: dict[str, Any]) -> None:
    """Store one step's report and add it to the curves."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        job.progress = {**job.progress, **report}
        point = {k: report[k] for k in CURVE_KEYS if k in report}
        job.curve = [*job.curve, point]
        job.heartbeat_at = timezone.now()
        job.save(update_fields=["progress", "curve", "heartbeat_at"])
        _notify(job, "training.progress", {"progress": job.progress})


LOG_KEEP_CHARS = 50_000


def training_job_log(*, job_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        job.log = (job.log + f"{stamp} {line}\n")[-LOG_KEEP_CHARS:]
        job.save(update_fields=["log"])


def training_job_finish(*, job_id: int, state: str, error: str = "") -> TrainingJob:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        job.state = state
        job.error = error[:5000]
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "error", "finished_at"])
        _notify(job, "training.job", {"state": job.state})
    return job


def training_checkpoint_register(
    *, job: TrainingJob, step: int, folder: Path, metrics: dict[str, Any]
) -> ModelVersion:
    """Make a checkpoint a candidate version (once per folder) and queue
    its evaluation."""
    existing = ModelVersion.objects.filter(job=job, step=step).first()
    if existing is not None:
        return existing
    kinds: dict[str, str] = {
        TrainingJob.Kind.DISTILL: ModelVersion.Kind.DISTILL,
        TrainingJob.Kind.DPO: ModelVersion.Kind.PREFERENCE,
    }
    kind = kinds.get(job.kind, ModelVersion.Kind.FINETUNE)
    with transaction.atomic():
        version = model_version_create(
            name=f"{job.base_version.name}-{job.kind}-{job.pk}-step{step}",
            folder=folder,
            kind=kind,
            parent=job.base_version,
            metrics={"training": metrics},
            job=job,
            step=step,
            dataset=job.dataset,
        )
        _notify(job, "training.checkpoint", {"version": version.pk, "step": step})
        evaluation_queue(version=version, job=job)
    return version


def training_jobs_recover() -> list[int]:
    """Queue again the jobs whose worker stopped heartbeating (a worker
    that died mid-job); each resumes from its last checkpoint."""
    stale = timezone.now() - timedelta(seconds=settings.TRAINING_LEASE_S)
    ids = list(
        TrainingJob.objects.filter(
            state=TrainingJob.State.RUNNING, heartbeat_at__lt=stale
        ).values_list("pk", flat=True)
    )
    for job_id in ids:
        _enqueue(job_id)
    return ids


def _split(dataset: Dataset, split: str, limit: int | None = None) -> list[list[dict[str, str]]]:
    from models_admin.models import DatasetExample

    rows = DatasetExample.objects.filter(dataset=dataset, split=split).order_by("index")
    if limit is not None:
        rows = rows[:limit]
    # A person's deleted data leaves a lineage mark without text.
    return [row.messages for row in rows if row.messages]


def training_job_run(*, job: TrainingJob) -> TrainingJob:
    """Run a claimed job to its end (or its cancellation) in this process,
    resuming from the job folder's last checkpoint when there is one."""
    from models_admin.models import DatasetExample
    from models_admin.training.loop import Hooks, TrainConfig, Trainer, states_drop

    params = dict(job.params)
    params.pop("epochs", None)
    pairs = job.kind == TrainingJob.Kind.DPO
    config = TrainConfig(
        kind=job.kind,
        base_dir=job.base_version.path,
        output_dir=job.folder,
        train=[] if pairs else _split(job.dataset, DatasetExample.Split.TRAIN),
        eval=[] if pairs else _split(job.dataset, DatasetExample.Split.EVAL),
        train_pairs=dataset_pairs(job.dataset, DatasetExample.Split.TRAIN) if pairs else [],
        eval_pairs=dataset_pairs(job.dataset, DatasetExample.Split.EVAL) if pairs else [],
        student_dir=job.student_version.path if job.student_version else None,
        **params,
    )
    cancel = threading.Event()
    done = threading.Event()

    def heartbeat() -> None:
        # Steps can take longer than the lease on a small CPU; this thread
        # keeps the claim fresh and notices a cancel between reports.
        try:
            while not done.wait(max(settings.TRAINING_LEASE_S / 4, 0.5)):
                if training_job_heartbeat(job_id=job.pk):
                    cancel.set()
        finally:
            connection.close()

    def progress(report: dict[str, Any]) -> None:
        training_job_progress(job_id=job.pk, report=report)
        if training_job_heartbeat(job_id=job.pk):
            cancel.set()

    def checkpoint(step: int, folder: Path, metrics: dict[str, Any]) -> None:
        training_checkpoint_register(job=job, step=step, folder=folder, metrics=metrics)

    beat = threading.Thread(target=heartbeat, name=f"job-{job.pk}-heartbeat", daemon=True)
    beat.start()
    try:
        outcome = Trainer(
            config,
            Hooks(
                progress=progress,
                checkpoint=checkpoint,
                should_stop=cancel.is_set,
                log=lambda line: training_job_log(job_id=job.pk, line=line),
            ),
        ).run()
    finally:
        done.set()
        beat.join(timeout=10)
    state = (
        TrainingJob.State.COMPLETED
        if outcome.state == "completed"
        else TrainingJob.State.CANCELLED
    )
    # Completed or cancelled, the job is not resumed: its restart state goes
    # before the job reads as finished, so a finished job never has one.
    states_drop(job.folder)
    return training_job_finish(job_id=job.pk, state=state)
