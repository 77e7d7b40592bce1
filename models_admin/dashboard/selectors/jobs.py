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

from models_admin.models import Dataset, ModelVersion, TrainingJob

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
    """Return a dataset or raise Http404."""
    return get_object_or_404(Dataset.objects.select_related("created_by"), pk=pk)


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
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


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
    of ``[step, value]`` sorted by step. A step reported twice (a job that
    resumed from a checkpoint repeats the steps after it) keeps the later
    value."""
    by_step: dict[str, dict[int, float]] = {"loss": {}, "eval_loss": {}, "lr": {}}
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
        for key in ("step", "total_steps", "loss", "lr", "eval_loss", "examples_per_s", "eta_s")
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
    }
    if full:
        log = job.log or ""
        tail = log[-LOG_TAIL_CHARS:]
        if len(log) > LOG_TAIL_CHARS and "\n" in tail:
            tail = tail[tail.index("\n") + 1 :]  # start at a whole line
        data["curve"] = curve_series(job.curve)
        data["log"] = tail
        data["log_truncated"] = len(tail) < len(log)
        data["checkpoints"] = [
            _checkpoint_row(version) for version in job.checkpoints.order_by("step", "pk")
        ]
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
