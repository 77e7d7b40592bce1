"""Reads of the dashboard's API area: every key with its usage this month
and in all, filtered and sorted, the totals of the keys listed, and one
key's calls per day and its recent calls.

A key's usage and limits are read as ``chat.selectors`` reads them for
the key's owner; days are those of settings.TIME_ZONE.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.paginator import Page
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy

from chat.models import ApiKey, ApiRequest
from chat.selectors import (
    api_key_row,
    api_keys_with_usage,
    api_month_start,
    api_usage_aggregates,
    api_usage_row,
)
from models_admin.dashboard.paging import page_get
from models_admin.dashboard.selectors.usage import local_midnight

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: Days of the per-day table and chart on a key's page, today included.
USAGE_DAYS = 30
REQUESTS_PER_PAGE = 25
KEYS_PER_PAGE = 50

#: Orders of the key list: value -> (label, ordering).
SORTS: dict[str, tuple[StrOrPromise, list[Any]]] = {
    "tokens_month": (gettext_lazy("Tokens this month"), [F("tokens_month").desc()]),
    "requests_month": (gettext_lazy("Requests this month"), [F("requests_month").desc()]),
    "errors_month": (gettext_lazy("Errors this month"), [F("errors_month").desc()]),
    "tokens_total": (gettext_lazy("Tokens in all"), [F("tokens_total").desc()]),
    "requests_total": (gettext_lazy("Requests in all"), [F("requests_total").desc()]),
    "errors_total": (gettext_lazy("Errors in all"), [F("errors_total").desc()]),
    "last_used": (gettext_lazy("Last used"), [F("last_used_at").desc(nulls_last=True)]),
    "created": (gettext_lazy("Newest"), []),
}
DEFAULT_SORT = "tokens_month"
#: States of the key list's filter.
STATES = {"active": gettext_lazy("Active"), "revoked": gettext_lazy("Revoked")}


def api_key_user_choices() -> list[tuple[str, str]]:
    """(id, username) of every user who holds a key, by name."""
    users = (
        get_user_model()
        .objects.filter(api_keys__isnull=False)
        .distinct()
        .order_by("username")
        .values_list("pk", "username")
    )
    return [(str(pk), username) for pk, username in users]


def _keys_filtered(*, user_id: int | None, state: str) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.all()
    if user_id is not None:
        keys = keys.filter(user_id=user_id)
    if state == "active":
        keys = keys.filter(revoked_at__isnull=True)
    elif state == "revoked":
        keys = keys.filter(revoked_at__isnull=False)
    return keys


def api_keys_list(
    *,
    user_id: int | None = None,
    state: str = "",
    sort: str = DEFAULT_SORT,
    now: datetime | None = None,
) -> QuerySet[ApiKey]:
    """Every key (of ``user_id`` when given; only "active" or "revoked"
    ones when ``state`` says so) with its usage annotated, in ``sort``
    order (a key of SORTS), newest first among equals."""
    keys = _keys_filtered(user_id=user_id, state=state).select_related("user")
    ordering = SORTS.get(sort, SORTS[DEFAULT_SORT])[1]
    keys = api_keys_with_usage(keys, since=api_month_start(now=now))
    return keys.order_by(*ordering, "-created_at", "-id")


def api_keys_page(*, keys: QuerySet[ApiKey], page: Any) -> Page[dict[str, Any]]:
    """One page of ``api_keys_list``, each key as ``api_key_row`` gives
    it."""
    result: Page[Any] = page_get(keys, per_page=KEYS_PER_PAGE, number=page)
    result.object_list = [api_key_row(key) for key in result.object_list]
    return result


def api_keys_totals(
    *, user_id: int | None = None, state: str = "", now: datetime | None = None
) -> dict[str, Any]:
    """The keys ``api_keys_list`` lists for the same filters, together:
    how many (``keys``, ``active``) and their calls this month
    (``month``)."""
    keys = _keys_filtered(user_id=user_id, state=state)
    counts = keys.aggregate(
        keys=Count("id"), active=Count("id", filter=Q(revoked_at__isnull=True))
    )
    calls = ApiRequest.objects.filter(key__in=keys.values("pk"))
    month = calls.aggregate(**api_usage_aggregates(since=api_month_start(now=now)))
    return {**counts, "month": api_usage_row(month)}


def api_owner_tokens_month(*, key: ApiKey, now: datetime | None = None) -> int:
    """Tokens in and out of the key owner's calls this month through all
    their keys, revoked ones included: what the key's quota counts."""
    calls = ApiRequest.objects.filter(user_id=key.user_id)
    month = calls.aggregate(**api_usage_aggregates(since=api_month_start(now=now)))
    return api_usage_row(month)["tokens"]


def api_key_usage(*, key: ApiKey, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """The key's calls this month and in all: requests, tokens_in,
    tokens_out, tokens (in and out) and errors."""
    calls = ApiRequest.objects.filter(key=key)
    month = calls.aggregate(**api_usage_aggregates(since=api_month_start(now=now)))
    total = calls.aggregate(**api_usage_aggregates())
    return {"month": api_usage_row(month), "total": api_usage_row(total)}


def api_key_usage_by_day(
    *, key: ApiKey, days: int = USAGE_DAYS, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The key's calls per calendar day for the last ``days`` days, today
    included, oldest first; a day without calls has zero counts."""
    tz = timezone.get_default_timezone()
    today = timezone.localtime(now, tz).date()
    first = today - timedelta(days=days - 1)
    grouped = (
        ApiRequest.objects.filter(key=key, created_at__gte=local_midnight(first))
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(**api_usage_aggregates())
        .order_by()
    )
    by_day: dict[date, dict[str, int]] = {}
    for row in grouped:
        figures: dict[str, Any] = dict(row)
        day = figures.pop("day")
        by_day[day] = api_usage_row(figures)
    zero = dict.fromkeys(("requests", "tokens_in", "tokens_out", "errors"), 0)
    rows = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        rows.append({"day": day, **by_day.get(day, api_usage_row(zero))})
    return rows


def api_key_requests_page(*, key: ApiKey, page: Any) -> Page[ApiRequest]:
    """One page of the key's calls, newest first."""
    calls = ApiRequest.objects.filter(key=key).order_by("-created_at", "-id")
    return page_get(calls, per_page=REQUESTS_PER_PAGE, number=page)
