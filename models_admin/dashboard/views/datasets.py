"""The dashboard's datasets: the list, a dataset's page with a preview of
its examples and the jobs that trained on it, and uploading one.

Every page is for staff; uploading and creating the demo dataset need
``models_admin.run_trainingjob``.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from models_admin.dashboard.forms.datasets import DatasetUploadForm
from models_admin.dashboard.paging import page_get
from models_admin.dashboard.selectors.jobs import (
    dataset_filter_rows,
    dataset_get,
    datasets_query,
    job_payload,
)
from models_admin.dashboard.views.access import (
    permission_required,
    staff_member,
    staff_required,
)
from models_admin.dashboard.views.jobs import RUN_TRAINING, can_run_training
from models_admin.dataset_format import DatasetFormatError
from models_admin.models import Dataset
from models_admin.selectors import dataset_preview
from models_admin.services.datasets import DEMO_NAME, dataset_demo_create, dataset_upload

DATASETS_PER_PAGE = 50
PREVIEW_EXAMPLES = 8
DATASET_JOBS_SHOWN = 20


def _demo_dataset() -> Dataset | None:
    """The dataset ``dataset_demo_create`` would return as it is: the one
    under the demo's name, whatever its source."""
    # One read the service leaves to its caller; the dashboard's dataset
    # selectors (selectors/jobs.py) are its natural home.
    return Dataset.objects.filter(name=DEMO_NAME).first()


@staff_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    page = page_get(datasets_query(), per_page=DATASETS_PER_PAGE, number=request.GET.get("page"))
    return render(
        request,
        "dashboard/jobs/datasets.html",
        {
            "section": "datasets",
            "page": page,
            "can_run": can_run_training(request),
            "demo": _demo_dataset(),
        },
    )


@staff_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = dataset_get(pk=pk)
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
            "filters": dataset_filter_rows(dataset.filters),
            "preview": dataset_preview(dataset=dataset, limit=PREVIEW_EXAMPLES),
            "jobs": [
                {"job": job, "data": job_payload(job, full=False)}
                for job in jobs[:DATASET_JOBS_SHOWN]
            ],
            "job_count": jobs.count(),
            "can_run": can_run_training(request),
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
                    user=staff_member(request),
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


def _demo_exists_message(request: HttpRequest, dataset: Dataset) -> None:
    messages.info(
        request,
        format_html(
            'A dataset named <a href="{}">{}</a> already exists; nothing new was created.',
            reverse("dashboard:dataset", args=[dataset.pk]),
            dataset.name,
        ),
    )


@permission_required(RUN_TRAINING)
@require_POST
def dataset_demo(request: HttpRequest) -> HttpResponse:
    """Create the demo dataset (as ``manage.py dataset demo`` does) and open
    it; when one of its name exists, say so and link to it instead."""
    existing = _demo_dataset()
    if existing is not None:
        _demo_exists_message(request, existing)
        return redirect("dashboard:datasets")
    try:
        dataset = dataset_demo_create()
    except (ValidationError, IntegrityError):
        # Another click stored it first: the name is unique.
        existing = _demo_dataset()
        if existing is None:
            raise
        _demo_exists_message(request, existing)
        return redirect("dashboard:datasets")
    stats = dataset.stats
    messages.success(
        request,
        f"The demo dataset is stored: {stats.get('train', 0):,} training "
        f"and {stats.get('eval', 0):,} eval examples.",
    )
    return redirect("dashboard:dataset", pk=dataset.pk)


urlpatterns = [
    path("datasets/", dataset_list, name="datasets"),
    path("datasets/upload/", dataset_upload_form, name="dataset-upload"),
    path("datasets/demo/", dataset_demo, name="dataset-demo"),
    path("datasets/<int:pk>/", dataset_detail, name="dataset"),
]
