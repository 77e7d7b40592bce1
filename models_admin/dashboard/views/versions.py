"""The dashboard's model versions: every version with its lineage and
metrics, promotion, rollback, canaries and the audit history of all of
them; the side-by-side comparison is ``compare``.

Looking is for staff; promoting, rolling back and running canaries need
``models_admin.promote_modelversion``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from models_admin.dashboard.forms.versions import (
    CanaryForm,
    CompressForm,
    PromoteForm,
    RollbackForm,
    VersionFilterForm,
)
from models_admin.dashboard.paging import page_get, query_without
from models_admin.dashboard.selectors.versions import (
    canary_panel,
    promotion_deltas,
    promotion_shared_datasets,
    rollback_target,
    version_badge,
    version_eval_rows,
    version_feedback,
    version_lineage,
    version_metrics_table,
    version_row,
    versions_filtered,
)
from models_admin.dashboard.views.access import (
    permission_required,
    staff_member,
    staff_required,
)
from models_admin.dashboard.views.http import next_url
from models_admin.models import Canary, ModelVersion, Promotion
from models_admin.selectors import canary_get_active, model_version_get_production
from models_admin.services.compression import compression_start
from models_admin.services.model_versions import (
    canary_start,
    canary_stop,
    model_version_promote,
    model_version_rollback,
)

logger = logging.getLogger(__name__)

PROMOTE = "models_admin.promote_modelversion"
RUN_TRAINING = "models_admin.run_trainingjob"
VERSIONS_PER_PAGE = 100
PAGE_SIZE = 50


def _canary_context(request: HttpRequest, form: CanaryForm | None = None) -> dict[str, Any]:
    canary = canary_get_active()
    context: dict[str, Any] = {"panel": canary_panel(canary), "canary_form": None}
    if request.user.has_perm(PROMOTE):
        initial = {"version": canary.version_id, "percent": canary.percent} if canary else {}
        context["canary_form"] = form if form is not None else CanaryForm(initial=initial)
    return context


# --- pages ----------------------------------------------------------------------


@staff_required
@require_GET
def versions(request: HttpRequest) -> HttpResponse:
    """Every version, filtered by state and kind, with the canary panel."""
    filters = VersionFilterForm(request.GET or None)
    state = kind = ""
    if filters.is_valid():
        state, kind = filters.cleaned_data["state"], filters.cleaned_data["kind"]
    context = _canary_context(request)
    canary = context["panel"]["canary"]
    page = page_get(
        versions_filtered(state=state, kind=kind, canary=canary),
        per_page=VERSIONS_PER_PAGE,
        number=request.GET.get("page"),
    )
    context.update(
        section="versions",
        filters=filters,
        page=page,
        rows=[version_row(version, canary) for version in page.object_list],
        rollback_target=rollback_target(),
        query=query_without(request),
    )
    return render(request, "dashboard/versions/list.html", context)


@staff_required
@require_GET
def version_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One version: facts, lineage, metrics, answers, promotions."""
    version = get_object_or_404(
        ModelVersion.objects.select_related("parent", "job", "dataset"), pk=pk
    )
    canary = canary_get_active()
    production = model_version_get_production()
    promotions = (
        Promotion.objects.select_related("from_version", "to_version", "by")
        .filter(Q(to_version=version) | Q(from_version=version))
        .order_by("-created_at", "-id")
    )
    running = canary if canary is not None and canary.version_id == version.pk else None
    context = {
        "section": "versions",
        "version": version,
        "badge": version_badge(version, canary),
        "lineage": version_lineage(version),
        "children": version.children.order_by("created_at", "id"),
        "metrics_rows": version_metrics_table(version),
        "by_dataset": version_eval_rows(version),
        "answers": [item for item in version.answers or [] if isinstance(item, dict)],
        "promotions": promotions,
        "canaries": version.canaries.select_related("started_by", "ended_by"),
        "production": production,
        "is_canary": running is not None,
        "canary": running,
        "canary_form": CanaryForm(
            initial={"version": version.pk, "percent": running.percent if running else 10}
        )
        if request.user.has_perm(PROMOTE)
        else None,
        "compress_form": CompressForm() if request.user.has_perm(RUN_TRAINING) else None,
        "compressions": version.compressions.select_related("result", "created_by")[:20],
        "feedback": version_feedback(version),
    }
    return render(request, "dashboard/versions/detail.html", context)


@permission_required(RUN_TRAINING)
@require_POST
def version_compress(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Queue a GGUF copy of the version for llama.cpp."""
    version = get_object_or_404(ModelVersion, pk=pk)
    form = CompressForm(request.POST)
    if not form.is_valid():
        messages.error(request, gettext("Pick a quantization."))
        return redirect("dashboard:version", pk=version.pk)
    try:
        compression = compression_start(
            source=version,
            quantization=form.cleaned_data["quantization"],
            user=staff_member(request),
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("dashboard:version", pk=version.pk)
    messages.success(
        request,
        gettext(
            "Making a %(quantization)s GGUF copy of %(name)s; it "
            "appears as a candidate once built and measured."
        )
        % {"quantization": compression.quantization, "name": compression.source.name},
    )
    return redirect("dashboard:version", pk=compression.source_id)


@permission_required(PROMOTE)
@require_http_methods(["GET", "POST"])
def version_promote(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and promote (POST) a version, with a note."""
    candidate = get_object_or_404(ModelVersion, pk=pk)
    form = PromoteForm(request.POST) if request.method == "POST" else PromoteForm()
    if request.method == "POST" and form.is_valid():
        try:
            promotion = model_version_promote(
                version=candidate, by=staff_member(request), note=form.cleaned_data["note"]
            )
        except ValidationError as error:
            form.add_error(None, error.messages)
        else:
            if promotion is None:
                messages.info(
                    request,
                    gettext("%(name)s is already in production.") % {"name": candidate.name},
                )
            else:
                logger.info("%s promoted %s to production", request.user, candidate.name)
                messages.success(
                    request, gettext("%(name)s is now in production.") % {"name": candidate.name}
                )
            return redirect("dashboard:version", pk=candidate.pk)
    production = model_version_get_production()
    context = {
        "section": "versions",
        "candidate": candidate,
        "production": production,
        "form": form,
        "deltas": promotion_deltas(production, candidate) if production else [],
        "shared_datasets": promotion_shared_datasets(production, candidate) if production else [],
        "is_production": production is not None and production.pk == candidate.pk,
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "dashboard/versions/promote.html", context, status=status)


@permission_required(PROMOTE)
@require_POST
def rollback(request: HttpRequest) -> HttpResponseRedirect:
    """Put back the version that production replaced last."""
    form = RollbackForm(request.POST)
    target = next_url(request, reverse("dashboard:promotions"))
    if not form.is_valid():
        messages.error(request, gettext("The note is too long."))
        return HttpResponseRedirect(target)
    try:
        promotion = model_version_rollback(
            by=staff_member(request), note=form.cleaned_data["note"]
        )
    except ValidationError as error:
        for text in error.messages:
            messages.error(request, text)
    else:
        logger.info("%s rolled production back to %s", request.user, promotion.to_version)
        messages.success(
            request,
            gettext("Rolled back: %(name)s is in production.")
            % {"name": promotion.to_version.name},
        )
    return HttpResponseRedirect(target)


@permission_required(PROMOTE)
def _canary_post(request: HttpRequest) -> HttpResponse:
    form = CanaryForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            canary = canary_start(
                version=data["version"],
                percent=data["percent"],
                by=staff_member(request),
                note=data["note"],
            )
        except ValidationError as error:
            form.add_error(None, error.messages)
        else:
            logger.info("%s set canary %s at %s%%", request.user, canary.version, canary.percent)
            messages.success(
                request,
                gettext("Canary %(name)s answers %(percent)s%% of conversations.")
                % {"name": canary.version.name, "percent": canary.percent},
            )
            return HttpResponseRedirect(next_url(request, reverse("dashboard:canary")))
    context = {"section": "versions", **_canary_context(request, form)}
    return render(request, "dashboard/versions/canary.html", context, status=400)


@staff_required
@require_http_methods(["GET", "POST"])
def canary(request: HttpRequest) -> HttpResponse:
    """The canary panel (GET); start a canary or change its share (POST)."""
    if request.method == "POST":
        return _canary_post(request)
    context = {"section": "versions", **_canary_context(request)}
    return render(request, "dashboard/versions/canary.html", context)


@permission_required(PROMOTE)
@require_POST
def canary_end(request: HttpRequest) -> HttpResponseRedirect:
    """Stop the running canary: every conversation goes to production."""
    stopped = canary_stop(by=staff_member(request))
    if stopped is None:
        messages.info(request, gettext("No canary was running."))
    else:
        logger.info("%s stopped canary %s", request.user, stopped.version)
        messages.success(
            request, gettext("Canary %(name)s stopped.") % {"name": stopped.version.name}
        )
    return HttpResponseRedirect(next_url(request, reverse("dashboard:canary")))


@staff_required
@require_GET
def promotions(request: HttpRequest) -> HttpResponse:
    """The audit history: promotions and canaries, newest first."""
    promotion_page = page_get(
        Promotion.objects.select_related("from_version", "to_version", "by"),
        per_page=PAGE_SIZE,
        number=request.GET.get("page"),
    )
    canary_page = page_get(
        Canary.objects.select_related("version", "started_by", "ended_by"),
        per_page=PAGE_SIZE,
        number=request.GET.get("canaries"),
    )
    context = {
        "section": "promotions",
        "promotion_page": promotion_page,
        "canary_page": canary_page,
        "production": model_version_get_production(),
        "rollback_target": rollback_target(),
    }
    return render(request, "dashboard/versions/promotions.html", context)


urlpatterns = [
    path("", versions, name="versions"),
    path("<int:pk>/", version_detail, name="version"),
    path("<int:pk>/promote/", version_promote, name="version-promote"),
    path("<int:pk>/compress/", version_compress, name="version-compress"),
    path("rollback/", rollback, name="rollback"),
    path("canary/", canary, name="canary"),
    path("canary/stop/", canary_end, name="canary-stop"),
    path("promotions/", promotions, name="promotions"),
]
