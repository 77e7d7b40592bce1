"""The usage page: a window's figures in total, per day, per version and
per user, the live load and the inference workers' health; and the same
figures as JSON for the page's live refresh."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from models_admin.dashboard.forms.usage import UsageFilterForm
from models_admin.dashboard.selectors.figures import figures_with_percents
from models_admin.dashboard.selectors.usage import UsageWindow, usage_report, usage_window
from models_admin.dashboard.views.access import staff_required


def _filters(request: HttpRequest) -> tuple[UsageFilterForm, dict[str, Any]]:
    """The form and the report's arguments; the default window, unfiltered,
    when the query string is empty or wrong (the form then holds the
    errors)."""
    form = UsageFilterForm(request.GET or None)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        window: UsageWindow = data["window"]
        version = data.get("version")
        return form, {
            "window": window,
            "version_id": version.pk if version else None,
            "source": data.get("source") or None,
        }
    return form, {"window": usage_window(), "version_id": None, "source": None}


@staff_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    form, filters = _filters(request)
    report = usage_report(**filters)
    figures_with_percents(report["summary"], *report["days"], *report["versions"])
    return render(
        request,
        "dashboard/usage.html",
        {"section": "usage", "form": form, "report": report},
    )


@staff_required
@never_cache
@require_GET
def usage_data(request: HttpRequest) -> JsonResponse:
    """The page's figures as JSON, for the same query string; a wrong
    query string is a 400 with the form's errors."""
    form, filters = _filters(request)
    if form.is_bound and form.errors:
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    return JsonResponse(usage_report(**filters))


urlpatterns = [
    path("", usage, name="usage"),
    path("data.json", usage_data, name="usage-data"),
]
