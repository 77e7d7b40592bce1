"""The API area of the dashboard: every API key with its owner, limits
and usage (this month and in all), and a page per key with its calls per
day and its recent calls.

Looking is for staff; changing a key's limits and revoking it need
``chat.change_apikey``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from chat.models import ApiKey
from chat.selectors import api_key_get, api_key_limits
from models_admin.dashboard.forms.api_keys import ApiKeyFilterForm, ApiKeyLimitsForm
from models_admin.dashboard.paging import query_without
from models_admin.dashboard.selectors.api_usage import (
    USAGE_DAYS,
    api_key_requests_page,
    api_key_usage,
    api_key_usage_by_day,
    api_keys_list,
    api_keys_page,
    api_keys_totals,
    api_owner_tokens_month,
)
from models_admin.dashboard.services.api_keys import api_key_admin_revoke, api_key_limits_set
from models_admin.dashboard.views.access import (
    permission_required,
    staff_member,
    staff_required,
)

logger = logging.getLogger(__name__)

CHANGE = "chat.change_apikey"


@staff_required
@require_GET
def api_keys_admin(request: HttpRequest) -> HttpResponse:
    """Every key with its usage, filtered and sorted."""
    filters = ApiKeyFilterForm(request.GET or None)
    selection = filters.selector_kwargs()
    page = api_keys_page(keys=api_keys_list(**selection), page=request.GET.get("page"))
    totals = api_keys_totals(user_id=selection.get("user_id"), state=selection.get("state", ""))
    return render(
        request,
        "dashboard/api_keys/list.html",
        {
            "section": "api",
            "filters": filters,
            "page": page,
            "totals": totals,
            "sort": selection["sort"],
            "query": query_without(request, "page"),
            "sort_query": query_without(request, "page", "sort"),
        },
    )


def _detail_page(
    request: HttpRequest, *, key: ApiKey, form: ApiKeyLimitsForm | None, status: int = 200
) -> HttpResponse:
    can_change = request.user.has_perm(CHANGE)
    if can_change and form is None:
        form = ApiKeyLimitsForm(initial=ApiKeyLimitsForm.initial_for(key))
    days = api_key_usage_by_day(key=key)
    chart = {
        "days": [row["day"].isoformat() for row in days],
        "tokens_in": [row["tokens_in"] for row in days],
        "tokens_out": [row["tokens_out"] for row in days],
    }
    limits = api_key_limits(key=key)
    usage = api_key_usage(key=key)
    owner_tokens = api_owner_tokens_month(key=key)
    quota = limits["monthly_token_quota"]
    return render(
        request,
        "dashboard/api_keys/detail.html",
        {
            "section": "api",
            "key": key,
            "limits": limits,
            "usage": usage,
            "owner_tokens_month": owner_tokens,
            # Limits that came with the key: staff set them on an earlier one.
            "limits_carried": key.limits_set_at is not None and key.limits_set_at < key.created_at,
            "quota_used_pct": 100 * owner_tokens / quota if quota else None,
            "days": list(reversed(days)),
            "usage_days": USAGE_DAYS,
            "chart": chart,
            "requests_page": api_key_requests_page(key=key, page=request.GET.get("page")),
            "query": query_without(request, "page"),
            "form": form if can_change else None,
            "can_change": can_change,
        },
        status=status,
    )


@staff_required
@require_GET
def api_key_admin(request: HttpRequest, pk: int) -> HttpResponse:
    """One key: its usage per day, its recent calls and (with the right)
    its limits."""
    return _detail_page(request, key=api_key_get(pk=pk), form=None)


@permission_required(CHANGE)
@require_POST
def api_key_limits_post(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the key's limits, or show its page again with the errors."""
    key = api_key_get(pk=pk)
    form = ApiKeyLimitsForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            api_key_limits_set(
                key=key,
                rate_limit_per_minute=data["rate_limit_per_minute"],
                monthly_token_quota=data["monthly_token_quota"],
                all_versions=data["all_versions"],
                knowledge_base=data["knowledge_base"],
                by=staff_member(request),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(
                request,
                gettext("Limits of “%(name)s” (%(prefix)s…) saved.")
                % {"name": key.name, "prefix": key.prefix},
            )
            return redirect("dashboard:api-key-admin", pk=key.pk)
    return _detail_page(request, key=key, form=form, status=400)


@permission_required(CHANGE)
@require_POST
def api_key_revoke_post(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke the key; its calls get 401 from now on."""
    key = api_key_get(pk=pk)
    if api_key_admin_revoke(key=key, by=staff_member(request)):
        messages.success(
            request,
            gettext("Key “%(name)s” (%(prefix)s…) revoked.")
            % {"name": key.name, "prefix": key.prefix},
        )
    else:
        messages.info(request, gettext("Key “%(name)s” was already revoked.") % {"name": key.name})
    return redirect("dashboard:api-key-admin", pk=key.pk)


urlpatterns = [
    path("", api_keys_admin, name="api-keys-admin"),
    path("<int:pk>/", api_key_admin, name="api-key-admin"),
    path("<int:pk>/limits/", api_key_limits_post, name="api-key-admin-limits"),
    path("<int:pk>/revoke/", api_key_revoke_post, name="api-key-admin-revoke"),
]
