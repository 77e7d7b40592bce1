"""The training area of the dashboard: training jobs (list, detail with
live curves, log and checkpoints, a new-job form, cancel) and datasets
(list, detail with a preview of the examples, upload).

Every page is for staff; starting, cancelling and uploading need
``models_admin.run_trainingjob``. Pages follow jobs live: the dashboard
socket says that a job changed and the page reads ``data.json`` again.
"""

from __future__ import annotations

import math
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from models_admin.dashboard.forms.jobs import PARAM_TEXT, DatasetUploadForm, TrainingJobForm
from models_admin.dashboard.views.access import permission_required, staff_required
from models_admin.dataset_format import DatasetFormatError
from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.selectors import dataset_preview, model_version_get_production
from models_admin.services.datasets import dataset_upload
from models_admin.services.training import PARAMS, training_job_cancel, training_job_create

RUN_TRAINING = "models_admin.run_trainingjob"

#: Characters of the log that ``data.json`` returns (the newest ones).
LOG_TAIL_CHARS = 20_000
#: Points a curve series keeps at most; longer runs are averaged in buckets.
CURVE_POINTS = 1_000
JOBS_PER_PAGE = 50
DATASETS_PER_PAGE = 50
PREVIEW_EXAMPLES = 8
DATASET_JOBS_SHOWN = 20


# --- reads ----------------------------------------------------------------
# Staff see every job and dataset, so a missing row is the only refusal.


def _jobs_query() -> QuerySet[TrainingJob]:
    return TrainingJob.objects.select_related(
        "dataset", "base_version", "student_version", "created_by"
    )


def _job_get(*, pk: int) -> TrainingJob:
    return get_object_or_404(_jobs_query(), pk=pk)


def _job_state_counts() -> dict[str, int]:
    rows = TrainingJob.objects.values_list("state").annotate(count=Count("pk")).order_by()
    return dict(rows)


def _dataset_get(*, pk: int) -> Dataset:
    return get_object_or_404(Dataset.objects.select_related("created_by"), pk=pk)


def _datasets_query() -> QuerySet[Dataset]:
    return (
        Dataset.objects.select_related("created_by")
        .annotate(job_count=Count("jobs"))
        .order_by("-created_at", "-id")
    )


# --- formatting -----------------------------------------------------------


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


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _param_rows(job: TrainingJob) -> list[dict[str, Any]]:
    """Return the job's hyperparameters in form order, marking the ones
    that differ from their default; unknown keys (older jobs) come last."""
    rows = []
    for name, (_type, default, _low, _high, kinds) in PARAMS.items():
        if name not in job.params and job.kind not in kinds:
            continue
        value = job.params.get(name, default)
        rows.append(
            {
                "name": name,
                "label": PARAM_TEXT.get(name, (name, ""))[0],
                "value": _param_value(value),
                "default": _param_value(default),
                "changed": value != default,
            }
        )
    for name, value in job.params.items():
        if name not in PARAMS:
            rows.append(
                {
                    "name": name,
                    "label": name,
                    "value": _param_value(value),
                    "default": "",
                    "changed": True,
                }
            )
    return rows


def _first_checkpoint(job: TrainingJob, *, total: int) -> int | None:
    """The step of the job's first checkpoint: the loop saves every
    ``checkpoint_every`` steps and at the last one, whichever comes first."""
    steps = [n for n in (int(job.params.get("checkpoint_every") or 0), int(total or 0)) if n]
    return min(steps) if steps else None


def _filter_rows(filters: dict[str, Any]) -> list[tuple[str, str]]:
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


def _staff(request: HttpRequest) -> AbstractBaseUser:
    """The signed-in staff member (the access decorators refused others)."""
    return cast(AbstractBaseUser, request.user)


def _can_run(request: HttpRequest) -> bool:
    return request.user.has_perm(RUN_TRAINING)


# --- jobs -----------------------------------------------------------------


@staff_required
def job_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    if state not in TrainingJob.State.values:
        state = ""
    rows = _jobs_query()
    if state:
        rows = rows.filter(state=state)
    page = Paginator(rows, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    counts = _job_state_counts()
    states = [
        {"value": value, "label": label, "count": counts.get(value, 0)}
        for value, label in TrainingJob.State.choices
    ]
    return render(
        request,
        "dashboard/jobs/list.html",
        {
            "section": "jobs",
            "page": page,
            "rows": [{"job": job, "data": job_payload(job, full=False)} for job in page],
            "state": state,
            "states": states,
            "total": sum(counts.values()),
            "can_run": _can_run(request),
        },
    )


@staff_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job_get(pk=pk)
    data = job_payload(job)
    return render(
        request,
        "dashboard/jobs/detail.html",
        {
            "section": "jobs",
            "job": job,
            "data": data,
            "params": _param_rows(job),
            "epochs_decide": bool(job.params.get("epochs")),
            "first_checkpoint": _first_checkpoint(job, total=data["total_steps"]),
            "can_run": _can_run(request),
        },
    )


@staff_required
def job_data(request: HttpRequest, pk: int) -> JsonResponse:
    """Answer the job as JSON; ``?brief=1`` leaves out curves, log and
    checkpoints (what the list needs)."""
    job = _job_get(pk=pk)
    response = JsonResponse(job_payload(job, full=request.GET.get("brief") != "1"))
    response["Cache-Control"] = "no-store"
    return response


def _job_initial(request: HttpRequest) -> dict[str, Any]:
    initial: dict[str, Any] = {}
    dataset = request.GET.get("dataset", "")
    if dataset.isdigit():
        initial["dataset"] = int(dataset)
    kind = request.GET.get("kind", "")
    if kind in TrainingJob.Kind.values:
        initial["kind"] = kind
    production = model_version_get_production()
    if production is not None:
        initial["base_version"] = production.pk
    return initial


@permission_required(RUN_TRAINING)
def job_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = TrainingJobForm(request.POST)
        if form.is_valid():
            try:
                job = training_job_create(
                    kind=form.cleaned_data["kind"],
                    dataset=form.cleaned_data["dataset"],
                    base_version=form.cleaned_data["base_version"],
                    student_version=form.cleaned_data.get("student_version"),
                    params=form.params,
                    user=_staff(request),
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                messages.success(request, f"{job} is queued.")
                return redirect("dashboard:job", pk=job.pk)
    else:
        form = TrainingJobForm(initial=_job_initial(request))
    return render(
        request,
        "dashboard/jobs/new.html",
        {"section": "jobs", "form": form, "has_datasets": Dataset.objects.exists()},
    )


@permission_required(RUN_TRAINING)
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job_get(pk=pk)
    if job.finished:
        messages.info(request, f"{job} had already ended ({job.get_state_display().lower()}).")
        return redirect("dashboard:job", pk=job.pk)
    job = training_job_cancel(job=job)
    if job.state == TrainingJob.State.CANCELLED:
        messages.success(request, f"{job} is cancelled.")
    else:
        messages.success(
            request, f"Cancel requested: {job} stops at its next step and keeps its checkpoints."
        )
    return redirect("dashboard:job", pk=job.pk)


# --- datasets -------------------------------------------------------------


@staff_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(_datasets_query(), DATASETS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/jobs/datasets.html",
        {"section": "datasets", "page": page, "can_run": _can_run(request)},
    )


@staff_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset_get(pk=pk)
    stats = dataset.stats or {}
    examples = stats.get("examples") or 0
    tokens = stats.get("tokens")
    jobs = dataset.jobs.select_related("base_version", "created_by").order_by("-created_at")
    return render(
        request,
        "dashboard/jobs/dataset.html",
        {
            "section": "datasets",
            "dataset": dataset,
            "stats": stats,
            "tokens_per_example": round(tokens / examples) if tokens and examples else None,
            "filters": _filter_rows(dataset.filters),
            "preview": dataset_preview(dataset=dataset, limit=PREVIEW_EXAMPLES),
            "jobs": [
                {"job": job, "data": job_payload(job, full=False)}
                for job in jobs[:DATASET_JOBS_SHOWN]
            ],
            "job_count": jobs.count(),
            "can_run": _can_run(request),
        },
    )


@permission_required(RUN_TRAINING)
def dataset_upload_form(request: HttpRequest) -> HttpResponse:
    format_error: DatasetFormatError | None = None
    if request.method == "POST":
        form = DatasetUploadForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                dataset = dataset_upload(
                    name=data["name"],
                    data=data["file"].read(),
                    description=data["description"],
                    eval_fraction=data["eval_fraction"],
                    user=_staff(request),
                )
            except DatasetFormatError as exc:
                format_error = exc
                form.add_error(
                    "file", "The file is not in the training format; nothing was stored."
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                stats = dataset.stats
                messages.success(
                    request,
                    f"Dataset {dataset.name} is stored: {stats.get('train', 0):,} training "
                    f"and {stats.get('eval', 0):,} eval examples.",
                )
                return redirect("dashboard:dataset", pk=dataset.pk)
    else:
        form = DatasetUploadForm()
    return render(
        request,
        "dashboard/jobs/dataset_upload.html",
        {"section": "datasets", "form": form, "format_error": format_error},
    )


urlpatterns = [
    path("", job_list, name="jobs"),
    path("new/", job_new, name="job-new"),
    path("<int:pk>/", job_detail, name="job"),
    path("<int:pk>/data.json", job_data, name="job-data"),
    path("<int:pk>/cancel/", job_cancel, name="job-cancel"),
    path("datasets/", dataset_list, name="datasets"),
    path("datasets/upload/", dataset_upload_form, name="dataset-upload"),
    path("datasets/<int:pk>/", dataset_detail, name="dataset"),
]
