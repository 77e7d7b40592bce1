"""The dashboard's home: what serves (production, a canary), the workers,
today's traffic, training jobs and the latest promotions; and the
changing part of it as JSON for the page's live refresh."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from models_admin.dashboard.selectors.figures import figures_with_percents
from models_admin.dashboard.selectors.overview import (
    overview_figures,
    promotions_recent,
    serving_overview,
)
from models_admin.dashboard.views.access import staff_required


def _figures() -> dict[str, Any]:
    figures = overview_figures()
    for job in [*figures["jobs"]["active"], *figures["jobs"]["recent"]]:
        job["url"] = reverse("dashboard:job", args=[job["id"]])
    return figures


@staff_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    figures = _figures()
    comparison = figures["comparison"] or {}
    figures_with_percents(figures["today"], comparison.get("production"), comparison.get("canary"))
    context = {
        "section": "home",
        "figures": figures,
        "jobs": [*figures["jobs"]["active"], *figures["jobs"]["recent"]],
        "promotions": promotions_recent(),
        **serving_overview(),
    }
    return render(request, "dashboard/overview.html", context)


@staff_required
@never_cache
@require_GET
def home_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_figures())


urlpatterns = [
    path("", home, name="home"),
    path("data.json", home_data, name="home-data"),
]
