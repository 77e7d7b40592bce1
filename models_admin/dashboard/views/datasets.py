"""The dashboard's datasets: the list, a dataset's page with a preview of
its examples, the jobs that trained on it and its lineage, uploading one,
and cleaning one with the content filter rules.

Every page is for staff; uploading, creating the demo dataset and storing
a cleaned copy need ``models_admin.run_trainingjob``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy, ngettext
from django.views.decorators.http import require_POST

from models_admin.dashboard.forms.datasets import (
    CLEAN_SURFACES,
    DatasetCleanForm,
    DatasetUploadForm,
)
from models_admin.dashboard.paging import page_get
from models_admin.dashboard.selectors.jobs import (
    dataset_derived,
    dataset_filter_rows,
    dataset_get,
    dataset_messages_by_index,
    dataset_name_free,
    datasets_query,
    filter_rules_applying_count,
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
from models_admin.services.dataset_cleaning import (
    MAX_REASONS,
    CleanedExample,
    CleanPreview,
    dataset_clean,
    dataset_clean_preview,
)
from models_admin.services.datasets import (
    DEMO_NAME,
    DEMO_PREFERENCES_NAME,
    dataset_demo_create,
    dataset_demo_preferences_create,
    dataset_upload,
)

DATASETS_PER_PAGE = 50
PREVIEW_EXAMPLES = 8
DATASET_JOBS_SHOWN = 20
#: Changed examples on one page of a cleaning preview.
CLEAN_EXAMPLES_PER_PAGE = 50
#: Near-duplicate groups a cleaning preview lists.
DUPLICATE_GROUPS_SHOWN = 50
#: Unchanged characters shown either side of what masking changed, and
#: the most of the changed text itself.
MASK_CONTEXT = 60
MASK_SPAN = 240
#: How a cleaned copy's summary names the surface of its rules.
SURFACE_WORDS = {
    "chat": gettext_lazy("chat"),
    "widget": gettext_lazy("widget"),
    "api": gettext_lazy("API"),
}


def _demo_dataset(name: str = DEMO_NAME) -> Dataset | None:
    """The dataset ``dataset_demo_create`` (or the preference demo's) would
    return as it is: the one under the demo's name, whatever its source."""
    # One read the service leaves to its caller; the dashboard's dataset
    # selectors (selectors/jobs.py) are its natural home.
    return Dataset.objects.filter(name=name).first()


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
            "demo_preferences": _demo_dataset(DEMO_PREFERENCES_NAME),
        },
    )


def _number(count: int) -> str:
    return number_format(count, force_grouping=True)


def _examples(count: int) -> str:
    return ngettext("%(count)s example", "%(count)s examples", count) % {"count": _number(count)}


def clean_summary(filters: dict[str, Any]) -> str:
    """What cleaning did, in words, from a cleaned copy's ``filters``."""
    masked = filters.get("masked") or 0
    done = [
        ngettext("%(count)s example masked", "%(count)s examples masked", masked)
        % {"count": _number(masked)},
        gettext("%(count)s dropped") % {"count": _number(filters.get("dropped") or 0)},
    ]
    if filters.get("duplicates_dropped"):
        left = filters["duplicates_dropped"]
        done.append(
            ngettext(
                "%(count)s near duplicate left out", "%(count)s near duplicates left out", left
            )
            % {"count": _number(left)}
        )
    surface = SURFACE_WORDS.get(filters.get("surface") or "", filters.get("surface") or "")
    return gettext("%(done)s, by the %(surface)s filter rules.") % {
        "done": gettext(", ").join(done),
        "surface": surface,
    }


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
            "clean_summary": (
                clean_summary(dataset.filters) if dataset.source == Dataset.Source.CLEAN else ""
            ),
            "derived": dataset_derived(dataset),
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
                    kind=data["kind"] or Dataset.Kind.CONVERSATIONS,
                    name=data["name"],
                    data=data["file"].read(),
                    description=data["description"],
                    eval_fraction=data["eval_fraction"],
                    user=staff_member(request),
                )
            except DatasetFormatError as exc:
                format_error = exc
                form.add_error(
                    "file",
                    gettext("The file is not in the format chosen; nothing was stored.")
                    if data["kind"] == Dataset.Kind.PREFERENCES
                    else gettext("The file is not in the training format; nothing was stored."),
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                stats = dataset.stats
                messages.success(
                    request,
                    gettext(
                        "Dataset %(name)s is stored: %(train)s training "
                        "and %(eval)s eval examples."
                    )
                    % {
                        "name": dataset.name,
                        "train": number_format(stats.get("train", 0), force_grouping=True),
                        "eval": number_format(stats.get("eval", 0), force_grouping=True),
                    },
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
    """Create the demo dataset (as ``manage.py dataset demo`` does), or with
    ``which=preferences`` the demo preference pairs, and open it; when one
    of its name exists, say so and link to it instead."""
    pairs = request.POST.get("which") == "preferences"
    name = DEMO_PREFERENCES_NAME if pairs else DEMO_NAME
    existing = _demo_dataset(name)
    if existing is not None:
        _demo_exists_message(request, existing)
        return redirect("dashboard:datasets")
    try:
        dataset = dataset_demo_preferences_create() if pairs else dataset_demo_create()
    except (ValidationError, IntegrityError):
        # Another click stored it first: the name is unique.
        existing = _demo_dataset(name)
        if existing is None:
            raise
        _demo_exists_message(request, existing)
        return redirect("dashboard:datasets")
    stats = dataset.stats
    what = "demo preference pairs are" if pairs else "demo dataset is"
    messages.success(
        request,
        gettext("The %(what)s stored: %(train)s training and %(eval)s eval examples.")
        % {
            "what": what,
            "train": number_format(stats.get("train", 0), force_grouping=True),
            "eval": number_format(stats.get("eval", 0), force_grouping=True),
        },
    )
    return redirect("dashboard:dataset", pk=dataset.pk)


@permission_required(RUN_TRAINING)
@require_POST
def dataset_from_feedback(request: HttpRequest) -> HttpResponse:
    """Make a preference dataset of every pair the stored feedback holds
    (as ``manage.py dataset preferences`` does) and open it."""
    from chat.services.preferences import preference_dataset_create

    name = f"Feedback pairs {timezone.localtime():%Y-%m-%d %H:%M:%S}"
    try:
        dataset = preference_dataset_create(name=name, user=staff_member(request))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("dashboard:datasets")
    origins = ", ".join(f"{n:,} {kind}" for kind, n in sorted(dataset.stats["origins"].items()))
    messages.success(
        request,
        gettext("Dataset %(name)s is stored: %(origins)s.")
        % {"name": dataset.name, "origins": origins},
    )
    return redirect("dashboard:dataset", pk=dataset.pk)


def _clip(text: str, limit: int = MASK_SPAN) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} … {text[-half:]}"


def masked_turn(before: str, after: str) -> dict[str, Any]:
    """The part of a turn that masking changed, before and after, with a
    little unchanged text either side; long parts are shortened."""
    start, limit = 0, min(len(before), len(after))
    while start < limit and before[start] == after[start]:
        start += 1
    end = 0
    while end < limit - start and before[-1 - end] == after[-1 - end]:
        end += 1
    prefix = before[max(start - MASK_CONTEXT, 0) : start]
    suffix = before[len(before) - end : len(before) - end + MASK_CONTEXT]
    lead, trail = start > MASK_CONTEXT, end > MASK_CONTEXT
    # Cut shortened context at a space rather than inside a word.
    if lead and " " in prefix[:-1]:
        prefix = prefix[prefix.index(" ", 0, len(prefix) - 1) + 1 :]
    if trail and " " in suffix[1:]:
        suffix = suffix[: suffix.rindex(" ", 1)]
    return {
        "lead": lead,
        "prefix": prefix,
        "before": _clip(before[start : len(before) - end]),
        "after": _clip(after[start : len(after) - end]),
        "suffix": suffix,
        "trail": trail,
    }


def _changed_rows(dataset: Dataset, examples: list[CleanedExample]) -> list[dict[str, Any]]:
    """The changed examples of one page as the cleaning page shows them:
    the reasons (at most MAX_REASONS) and each masked turn's change."""
    masked = [e.index for e in examples if e.action == "mask"]
    originals = dataset_messages_by_index(dataset=dataset, indexes=masked) if masked else {}
    rows = []
    for example in examples:
        turns = []
        for turn, (old, new) in enumerate(
            zip(originals.get(example.index, []), example.messages, strict=False)
        ):
            if old.get("content") != new.get("content"):
                change = masked_turn(old.get("content", ""), new.get("content", ""))
                turns.append({"turn": turn, "role": new.get("role", ""), **change})
        rows.append(
            {
                "example": example,
                "opening": _opening(example.messages),
                "reasons": example.reasons[:MAX_REASONS],
                "more_reasons": max(len(example.reasons) - MAX_REASONS, 0),
                "masked": turns,
            }
        )
    return rows


def _opening(messages: list[dict[str, str]]) -> str:
    """The first words of a conversation: its first turn that is not a
    system prompt."""
    for message in messages:
        if message.get("role") != "system" and message.get("content"):
            return message["content"]
    return messages[0].get("content", "") if messages else ""


def _duplicate_rows(preview: CleanPreview) -> list[dict[str, Any]]:
    by_index = {example.index: example for example in preview.examples}
    return [
        {"indexes": group, "opening": _opening(by_index[group[0]].messages)}
        for group in preview.duplicates[:DUPLICATE_GROUPS_SHOWN]
    ]


def _surface(value: Any) -> str:
    """The surface a query names; chat for none or an unknown one."""
    return value if value in dict(CLEAN_SURFACES) else "chat"


def _clean_render(
    request: HttpRequest, dataset: Dataset, form: DatasetCleanForm, surface: str
) -> HttpResponse:
    preview = dataset_clean_preview(dataset=dataset, surface=surface)
    changed = preview.changed
    page = page_get(changed, per_page=CLEAN_EXAMPLES_PER_PAGE, number=request.GET.get("page"))
    counts = preview.counts
    repeats = {index for group in preview.duplicates for index in group[1:]}
    return render(
        request,
        "dashboard/jobs/dataset_clean.html",
        {
            "section": "datasets",
            "dataset": dataset,
            "form": form,
            "can_run": can_run_training(request),
            "surface": surface,
            "surfaces": CLEAN_SURFACES,
            "rules_applying": filter_rules_applying_count(surface=surface),
            "counts": counts,
            "total": len(preview.examples),
            "left": counts["keep"] + counts["mask"],
            "left_without_duplicates": sum(
                1 for e in preview.examples if e.action != "drop" and e.index not in repeats
            ),
            "flagged": sum(1 for e in changed if e.action == "keep"),
            "changed_count": len(changed),
            "page": page,
            "rows": _changed_rows(dataset, list(page.object_list)),
            "duplicates": _duplicate_rows(preview),
            "duplicate_groups": len(preview.duplicates),
            "duplicate_extra": sum(len(group) - 1 for group in preview.duplicates),
            "max_reasons": MAX_REASONS,
        },
    )


@staff_required
def dataset_clean_page(request: HttpRequest, pk: int) -> HttpResponse:
    """What the filter rules of a surface would do to the dataset; the
    form that stores the cleaned copy posts here."""
    if request.method == "POST":
        return _dataset_clean_store(request, pk)
    dataset = dataset_get(pk=pk)
    surface = _surface(request.GET.get("surface"))
    form = DatasetCleanForm(
        initial={"name": dataset_name_free(f"{dataset.name} (clean)"), "surface": surface}
    )
    return _clean_render(request, dataset, form, surface)


@permission_required(RUN_TRAINING)
def _dataset_clean_store(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = dataset_get(pk=pk)
    form = DatasetCleanForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            cleaned = dataset_clean(
                dataset=dataset,
                name=data["name"],
                surface=data["surface"],
                drop_duplicates=data["drop_duplicates"],
                user=staff_member(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        except IntegrityError:
            # The name is unique: another request stored it meanwhile.
            form.add_error(
                "name", gettext("A dataset of this name was stored meanwhile; pick another.")
            )
        else:
            messages.success(
                request,
                gettext("The cleaned copy %(name)s is stored with %(example)s: %(filters)s")
                % {
                    "name": cleaned.name,
                    "example": _examples(cleaned.stats.get("examples", 0)),
                    "filters": clean_summary(cleaned.filters),
                },
            )
            return redirect("dashboard:dataset", pk=cleaned.pk)
    surface = _surface(form.data.get("surface") or request.GET.get("surface"))
    return _clean_render(request, dataset, form, surface)


urlpatterns = [
    path("datasets/", dataset_list, name="datasets"),
    path("datasets/upload/", dataset_upload_form, name="dataset-upload"),
    path("datasets/demo/", dataset_demo, name="dataset-demo"),
    path("datasets/feedback/", dataset_from_feedback, name="dataset-feedback"),
    path("datasets/<int:pk>/", dataset_detail, name="dataset"),
    path("datasets/<int:pk>/clean/", dataset_clean_page, name="dataset-clean"),
]
