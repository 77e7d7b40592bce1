"""The dashboard's training jobs: the list, a job's page with live curves,
log and checkpoints, a new-job form, and cancelling. Datasets are
``datasets``.

Every page is for staff; starting and cancelling need
``models_admin.run_trainingjob``. Pages follow jobs live: the dashboard
socket says that a job changed and the page reads ``data.json`` again.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext
from django.views.decorators.http import require_POST

from models_admin.dashboard.forms.jobs import PARAM_TEXT, TrainingJobForm
from models_admin.dashboard.paging import page_get
from models_admin.dashboard.selectors.jobs import (
    job_get,
    job_payload,
    job_state_counts,
    jobs_query,
)
from models_admin.dashboard.views.access import (
    permission_required,
    staff_member,
    staff_required,
)
from models_admin.models import Dataset, TrainingJob
from models_admin.selectors import model_version_get_production
from models_admin.services.training import (
    PARAMS,
    param_default,
    training_job_cancel,
    training_job_create,
)

RUN_TRAINING = "models_admin.run_trainingjob"
JOBS_PER_PAGE = 50


def can_run_training(request: HttpRequest) -> bool:
    """Whether the user may start and cancel jobs and upload datasets."""
    return request.user.has_perm(RUN_TRAINING)


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
    for name, (_type, _default, _low, _high, kinds) in PARAMS.items():
        if name not in job.params and job.kind not in kinds:
            continue
        default = param_default(job.kind, name) if job.kind in kinds else _default
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


@staff_required
def job_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    if state not in TrainingJob.State.values:
        state = ""
    rows = jobs_query()
    if state:
        rows = rows.filter(state=state)
    page = page_get(rows, per_page=JOBS_PER_PAGE, number=request.GET.get("page"))
    counts = job_state_counts()
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
            "can_run": can_run_training(request),
        },
    )


@staff_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_get(pk=pk)
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
            "can_run": can_run_training(request),
        },
    )


@staff_required
def job_data(request: HttpRequest, pk: int) -> JsonResponse:
    """Answer the job as JSON; ``?brief=1`` leaves out curves, log and
    checkpoints (what the list needs)."""
    job = job_get(pk=pk)
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
                    user=staff_member(request),
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                messages.success(request, gettext("%(job)s is queued.") % {"job": job})
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
    job = job_get(pk=pk)
    if job.finished:
        messages.info(
            request,
            gettext("%(job)s had already ended (%(lower)s).")
            % {"job": job, "lower": job.get_state_display().lower()},
        )
        return redirect("dashboard:job", pk=job.pk)
    job = training_job_cancel(job=job)
    if job.state == TrainingJob.State.CANCELLED:
        messages.success(request, gettext("%(job)s is cancelled.") % {"job": job})
    else:
        messages.success(
            request,
            gettext("Cancel requested: %(job)s stops at its next step and keeps its checkpoints.")
            % {"job": job},
        )
    return redirect("dashboard:job", pk=job.pk)


urlpatterns = [
    path("", job_list, name="jobs"),
    path("new/", job_new, name="job-new"),
    path("<int:pk>/", job_detail, name="job"),
    path("<int:pk>/data.json", job_data, name="job-data"),
    path("<int:pk>/cancel/", job_cancel, name="job-cancel"),
]
