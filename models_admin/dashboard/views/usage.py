"""The usage page: a window's figures in total, per day, per version and
per user, the live load and the inference workers' health; and the same
figures as JSON for the page's live refresh."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chat.models import Conversation
from models_admin.dashboard.selectors.usage import (
    DEFAULT_PERIOD,
    PERIODS,
    UsageWindow,
    usage_report,
    usage_window,
)
from models_admin.dashboard.views.access import staff_required
from models_admin.models import ModelVersion


class UsageFilterForm(forms.Form):
    """The window and filters, read from the query string."""

    period = forms.ChoiceField(
        choices=[(key, PERIODS[key]) for key in ("24h", "7d", "30d", "custom")],
        required=False,
        initial=DEFAULT_PERIOD,
    )
    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.order_by("name"),
        required=False,
        empty_label="All versions",
    )
    source = forms.ChoiceField(
        choices=[("", "All sources"), *Conversation.Source.choices], required=False
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        period = data.get("period") or ("custom" if data.get("start") else DEFAULT_PERIOD)
        try:
            data["window"] = usage_window(
                period=period, first_day=data.get("start"), last_day=data.get("end")
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return data


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


def _percent(rate: float | None) -> float | None:
    return None if rate is None else rate * 100


def _with_percents(report: dict[str, Any]) -> dict[str, Any]:
    """Add the rates as percentages, for the template."""
    for row in [report["summary"], *report["days"], *report["versions"]]:
        row["error_pct"] = _percent(row["error_rate"])
        row["thumbs_up_pct"] = _percent(row["thumbs_up_rate"])
    return report


@staff_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    form, filters = _filters(request)
    report = _with_percents(usage_report(**filters))
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
