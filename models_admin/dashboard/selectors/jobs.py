"""Reads of the dashboard's training pages: jobs and datasets as staff see
them (every one; a missing row is the only refusal), and a job as the
pages and their ``data.json`` show it, with its curves thinned for
drawing."""

from __future__ import annotations

import math
from typing import Any

from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy

from models_admin.models import Dataset, Evaluation, FilterRule, ModelVersion, TrainingJob

#: Characters of the log that ``data.json`` returns (the newest ones).
LOG_TAIL_CHARS = 20_000
#: Points a curve series keeps at most; longer runs are averaged in buckets.
CURVE_POINTS = 1_000


def jobs_query() -> QuerySet[TrainingJob]:
    """Every job with the rows its pages show."""
    return TrainingJob.objects.select_related(
        "dataset", "base_version", "student_version", "created_by"
    )


def job_get(*, pk: int) -> TrainingJob:
    """Return a job or raise Http404."""
    return get_object_or_404(jobs_query(), pk=pk)


def job_state_counts() -> dict[str, int]:
    """How many jobs are in each state."""
    rows = TrainingJob.objects.values_list("state").annotate(count=Count("pk")).order_by()
    return dict(rows)


def dataset_get(*, pk: int) -> Dataset:
    """Return a dataset (with its creator and original) or raise Http404."""
    return get_object_or_404(Dataset.objects.select_related("created_by", "parent"), pk=pk)


def dataset_derived(dataset: Dataset) -> list[Dataset]:
    """The datasets made from dataset (its cleaned copies), oldest first."""
    return list(dataset.derived.order_by("created_at", "id"))


def dataset_messages_by_index(*, dataset: Dataset, indexes: list[int]) -> dict[int, Any]:
    """The stored messages of the dataset's examples at these indexes."""
    rows = dataset.examples.filter(index__in=indexes).values_list("index", "messages")
    return dict(rows)


def dataset_name_free(base: str, *, max_length: int = 200) -> str:
    """base, or base with a number after it, whichever no dataset has yet
    (shortened to fit ``max_length``)."""
    taken = set(
        Dataset.objects.filter(name__startswith=base[: max_length - 4]).values_list(
            "name", flat=True
        )
    )
    name = base[:max_length]
    number = 2
    while name in taken:
        suffix = f" {number}"
        name = base[: max_length - len(suffix)] + suffix
        number += 1
    return name


def filter_rules_applying_count(*, surface: str) -> int:
    """How many enabled content filter rules a dataset cleaned for surface
    (chat, widget, api) goes through: those of every surface and of this
    one, but not those of one widget site."""
    return FilterRule.objects.filter(
        enabled=True, surface__in=[FilterRule.Surface.ALL, surface], site__isnull=True
    ).count()


def datasets_query() -> QuerySet[Dataset]:
    """Every dataset, newest first, with ``job_count``."""
    return (
        Dataset.objects.select_related("created_by")
        .annotate(job_count=Count("jobs"))
        .order_by("-created_at", "-id")
    )


def duration_format(seconds: float | None) -> str:
    """Return a short duration such as ``45s``, ``3m 05s`` or ``2h 10m``;
    an empty string for no value."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    total = max(round(seconds), 0)
    if total < 60:
        return gettext("%(total)ss") % {"total": total}
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return gettext("%(minutes)sm %(secs)ss") % {
            "minutes": minutes,
            "secs": format(secs, "02d"),
        }
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return gettext("%(hours)sh %(minutes)sm") % {
            "hours": hours,
            "minutes": format(minutes, "02d"),
        }
    days, hours = divmod(hours, 24)
    return gettext("%(days)sd %(hours)sh") % {"days": days, "hours": hours}


def _number(value: Any) -> float | int | None:
    """A finite number for JSON (which has no NaN), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _thin(points: list[tuple[int, float]], limit: int = CURVE_POINTS) -> list[list[float]]:
    """Return at most ``limit`` points: consecutive points averaged in
    buckets, each placed at its last step, so the shape survives and the
    newest point stays exact."""
    if len(points) <= limit:
        return [[step, value] for step, value in points]
    size = math.ceil(len(points) / limit)
    thinned = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        thinned.append([bucket[-1][0], sum(v for _s, v in bucket) / len(bucket)])
    thinned[-1] = [points[-1][0], points[-1][1]]
    return thinned


def curve_series(curve: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """Split the job's curve into ``loss``, ``eval_loss`` and ``lr`` series
    (and a DPO job's ``accuracy``, ``margin``, ``eval_accuracy`` and
    ``eval_margin``) of ``[step, value]`` sorted by step. A step reported
    twice (a job that resumed from a checkpoint repeats the steps after it)
    keeps the later value."""
    names = ("loss", "eval_loss", "lr", "accuracy", "margin", "eval_accuracy", "eval_margin")
    by_step: dict[str, dict[int, float]] = {name: {} for name in names}
    for point in curve if isinstance(curve, list) else []:
        if not isinstance(point, dict):
            continue
        step = _number(point.get("step"))
        if step is None:
            continue
        for key, series in by_step.items():
            value = _number(point.get(key))
            if value is not None:
                series[int(step)] = float(value)
    return {key: _thin(sorted(series.items())) for key, series in by_step.items()}


#: How pages name each phase of an evaluation.
EVALUATION_PHASES = {
    "loading": gettext_lazy("loading the model"),
    "eval loss": gettext_lazy("eval loss"),
    "decode speed": gettext_lazy("decode speed"),
    "answers": gettext_lazy("answers to the fixed prompts"),
}


def evaluation_describe(evaluation: Evaluation) -> str:
    """What an evaluation is doing, for people: "answers to the fixed
    prompts 2/8", "waiting for the evaluation worker"."""
    if evaluation.state == Evaluation.State.QUEUED:
        return gettext("waiting for the evaluation worker")
    if evaluation.state == Evaluation.State.FAILED:
        reason = evaluation.error.strip().splitlines()[-1] if evaluation.error.strip() else ""
        return gettext("failed: %(reason)s") % {"reason": reason} if reason else gettext("failed")
    if evaluation.state == Evaluation.State.COMPLETED:
        return gettext("done")
    phase = str(EVALUATION_PHASES.get(evaluation.phase, evaluation.phase or "starting"))
    if evaluation.total:
        return gettext("%(phase)s %(done)s/%(total)s") % {
            "phase": phase,
            "done": min(evaluation.done, evaluation.total),
            "total": evaluation.total,
        }
    return phase


def _evaluation_row(job: TrainingJob, evaluation: Evaluation) -> dict[str, Any]:
    version = evaluation.version
    if version.pk == job.base_version_id:
        what = "the base model"
        if evaluation.dataset is not None:
            what += f" on {evaluation.dataset.name}"
    else:
        what = f"checkpoint {version.step}" if version.step is not None else version.name
    percent = 100.0 * evaluation.done / evaluation.total if evaluation.total else 0.0
    return {
        "id": evaluation.pk,
        "version": version.pk,
        "what": what,
        "state": evaluation.state,
        "text": evaluation_describe(evaluation),
        "percent": round(percent, 1),
        "finished": evaluation.finished,
    }


def job_evaluations(job: TrainingJob) -> list[dict[str, Any]]:
    """The measurements queued for the job, oldest first."""
    rows = Evaluation.objects.filter(job=job).select_related("version", "dataset")
    return [_evaluation_row(job, evaluation) for evaluation in rows.order_by("created_at", "id")]


def job_waiting_note(job: TrainingJob) -> str:
    """What a queued job waits for, in words."""
    if job.cancel_requested:
        return "Cancelling…"
    ahead = (
        TrainingJob.objects.filter(state=TrainingJob.State.RUNNING)
        .exclude(pk=job.pk)
        .order_by("started_at", "id")
        .first()
    )
    queued_before = TrainingJob.objects.filter(
        state=TrainingJob.State.QUEUED, created_at__lt=job.created_at
    ).count()
    if ahead is not None:
        if queued_before:
            return gettext(
                "Waiting for the training worker: it is running %(job)s, and %(count)s more "
                "queued before this one."
            ) % {"job": ahead, "count": queued_before}
        return gettext("Waiting for the training worker: it is running %(job)s.") % {"job": ahead}
    if queued_before:
        jobs = f"{queued_before} job{'s' if queued_before != 1 else ''}"
        return gettext("Waiting for a training worker; %(jobs)s queued before this one.") % {
            "jobs": jobs
        }
    return gettext("Waiting for a training worker to pick it up.")


def _checkpoint_row(version: ModelVersion) -> dict[str, Any]:
    metrics = version.metrics or {}
    training = metrics.get("training") or {}
    # Evaluation measures the checkpoint on the job's dataset; before it
    # has run, the eval loss the training loop saw stands in.
    eval_loss = _number(metrics.get("eval_loss"))
    if eval_loss is None:
        eval_loss = _number(training.get("eval_loss"))
    return {
        "id": version.pk,
        "name": version.name,
        "url": reverse("dashboard:version", args=[version.pk]),
        "step": version.step,
        "state": version.state,
        "state_display": version.get_state_display(),
        "train_loss": _number(training.get("train_loss")),
        "eval_loss": eval_loss,
        "perplexity": _number(metrics.get("perplexity")),
        "tokens_per_s": _number(metrics.get("tokens_per_s")),
        "evaluated": version.evaluated_at is not None,
    }


def job_payload(job: TrainingJob, *, full: bool = True) -> dict[str, Any]:
    """Return what pages show of a job; ``full`` adds the curves, the log
    tail and the checkpoints."""
    progress = {
        key: _number((job.progress or {}).get(key))
        for key in (
            *("step", "total_steps", "loss", "lr", "eval_loss", "examples_per_s", "eta_s"),
            # A DPO job's held-out preference accuracy and margin, and the base's.
            *("eval_accuracy", "eval_margin", "base_logp_accuracy"),
        )
    }
    step = progress["step"] or 0
    total = progress["total_steps"] or job.params.get("steps") or 0
    percent = min(100.0, 100.0 * step / total) if total else 0.0
    if job.state == TrainingJob.State.COMPLETED:
        percent = 100.0
    running = job.state == TrainingJob.State.RUNNING
    data: dict[str, Any] = {
        "id": job.pk,
        "kind": job.kind,
        "kind_display": job.get_kind_display(),
        "state": job.state,
        "state_display": job.get_state_display(),
        "finished": job.finished,
        "cancel_requested": job.cancel_requested,
        "progress": progress,
        "step": step,
        "total_steps": total,
        "percent": round(percent, 1),
        "eta": duration_format(progress["eta_s"]) if running else "",
        "attempts": job.attempts,
        "error": job.error,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "duration": duration_format(
            (job.finished_at - job.started_at).total_seconds()
            if job.started_at and job.finished_at
            else None
        ),
        "url": reverse("dashboard:job", args=[job.pk]),
        "note": job_waiting_note(job) if job.state == TrainingJob.State.QUEUED else "",
    }
    if full:
        log = job.log or ""
        tail = log[-LOG_TAIL_CHARS:]
        if len(log) > LOG_TAIL_CHARS and "\n" in tail:
            tail = tail[tail.index("\n") + 1 :]  # start at a whole line
        data["curve"] = curve_series(job.curve)
        data["log"] = tail
        data["log_truncated"] = len(tail) < len(log)
        evaluations = job_evaluations(job)
        data["evaluations"] = evaluations
        data["evaluating"] = any(not row["finished"] for row in evaluations)
        latest = {row["version"]: row for row in evaluations}
        data["checkpoints"] = []
        for version in job.checkpoints.order_by("step", "pk"):
            row = _checkpoint_row(version)
            evaluation = latest.get(version.pk)
            row["evaluation"] = evaluation["text"] if evaluation else ""
            data["checkpoints"].append(row)
    return data


def dataset_filter_rows(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """Return an export's filters as label and value, ``any`` for none."""
    rows = []
    for key, value in (filters or {}).items():
        if value is None or value == "":
            shown = "any"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        else:
            shown = str(value)
        rows.append((key.replace("_", " ").capitalize(), shown))
    return rows
