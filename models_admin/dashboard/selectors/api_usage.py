"""Reads of API keys and the calls made with them: the dashboard's API
area (every key with its usage this month and in all, one key's calls per
day and its recent calls) and a user's own API keys page.

A call counts as an error when its status is 400 or more or it ended
with finish_reason "error". Months and days are those of
settings.TIME_ZONE, as the monthly quota counts them. A key's limits "in
effect" are its own, or the site's defaults where it has none.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.paginator import Page, Paginator
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.utils import timezone

from chat.models import ApiKey, ApiRequest

#: Days of the per-day table and chart on a key's page, today included.
USAGE_DAYS = 30
REQUESTS_PER_PAGE = 25
KEYS_PER_PAGE = 50

#: Orders of the key list: value -> (label, ordering).
SORTS: dict[str, tuple[str, list[Any]]] = {
    "tokens_month": ("Tokens this month", [F("tokens_month").desc()]),
    "requests_month": ("Requests this month", [F("requests_month").desc()]),
    "errors_month": ("Errors this month", [F("errors_month").desc()]),
    "tokens_total": ("Tokens in all", [F("tokens_total").desc()]),
    "requests_total": ("Requests in all", [F("requests_total").desc()]),
    "errors_total": ("Errors in all", [F("errors_total").desc()]),
    "last_used": ("Last used", [F("last_used_at").desc(nulls_last=True)]),
    "created": ("Newest", []),
}
DEFAULT_SORT = "tokens_month"
#: States of the key list's filter.
STATES = {"active": "Active", "revoked": "Revoked"}


def api_month_start(*, now: datetime | None = None) -> datetime:
    """Midnight of the first day of the current calendar month."""
    local = timezone.localtime(now)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def api_key_limits(*, key: ApiKey) -> dict[str, Any]:
    """The limits a key runs under: requests a minute and tokens a month
    (None: no quota), and whether each is the site default."""
    # The same reading as chat.services.api_keys.api_limits_check.
    own_rate = key.rate_limit_per_minute
    own_quota = key.monthly_token_quota
    quota = own_quota if own_quota is not None else settings.API_MONTHLY_TOKEN_QUOTA
    return {
        "rate_limit_per_minute": own_rate or settings.API_RATE_LIMIT_PER_MINUTE,
        "rate_limit_default": not own_rate,
        "monthly_token_quota": quota or None,
        "quota_default": own_quota is None,
        "all_versions": key.all_versions,
    }


# --- aggregates -----------------------------------------------------------------


def _error_q(prefix: str = "") -> Q:
    return Q(**{f"{prefix}status_code__gte": 400}) | Q(**{f"{prefix}finish_reason": "error"})


def _figures(prefix: str, since: datetime | None) -> dict[str, Any]:
    """Aggregates of calls: requests, tokens in and out, errors; over the
    rows under ``prefix`` (e.g. "requests__"), since ``since`` if given."""
    window = Q(**{f"{prefix}created_at__gte": since}) if since is not None else Q()
    rows = f"{prefix}id" if prefix else "id"
    return {
        "requests": Count(rows, filter=window),
        "tokens_in": Sum(f"{prefix}prompt_tokens", filter=window, default=0),
        "tokens_out": Sum(f"{prefix}completion_tokens", filter=window, default=0),
        "errors": Count(rows, filter=window & _error_q(prefix)),
    }


def _key_annotations(*, since: datetime) -> dict[str, Any]:
    annotations: dict[str, Any] = {}
    for suffix, start in (("month", since), ("total", None)):
        for name, aggregate in _figures("requests__", start).items():
            annotations[f"{name}_{suffix}"] = aggregate
    return annotations


def _with_usage(keys: QuerySet[ApiKey], *, since: datetime) -> QuerySet[ApiKey]:
    # What the quota counts: the owner's tokens through all their keys.
    owner_month = (
        ApiRequest.objects.filter(user_id=OuterRef("user_id"), created_at__gte=since)
        .values("user_id")
        .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))
        .values("tokens")
    )
    return keys.annotate(**_key_annotations(since=since)).annotate(
        tokens_month=F("tokens_in_month") + F("tokens_out_month"),
        tokens_total=F("tokens_in_total") + F("tokens_out_total"),
        owner_tokens_month=Subquery(owner_month),
    )


def _usage_of(key: ApiKey, suffix: str) -> dict[str, int]:
    names = ("requests", "tokens_in", "tokens_out", "errors", "tokens")
    return {name: int(getattr(key, f"{name}_{suffix}") or 0) for name in names}


def _with_tokens(figures: dict[str, Any]) -> dict[str, int]:
    row = {name: int(value or 0) for name, value in figures.items()}
    row["tokens"] = row["tokens_in"] + row["tokens_out"]
    return row


def _key_row(key: ApiKey) -> dict[str, Any]:
    limits = api_key_limits(key=key)
    month = _usage_of(key, "month")
    quota = limits["monthly_token_quota"]
    owner_tokens = int(getattr(key, "owner_tokens_month", None) or 0)
    return {
        "key": key,
        "limits": limits,
        "month": month,
        "total": _usage_of(key, "total"),
        # Of the quota, which counts the owner's tokens through all keys.
        "quota_used_pct": 100 * owner_tokens / quota if quota else None,
    }


# --- a user's own keys ------------------------------------------------------------


def _user_id(user: AbstractBaseUser | AnonymousUser) -> int:
    if not user.is_authenticated or user.pk is None:
        raise Http404("No such key.")
    return int(user.pk)


def api_key_get_for_user(*, user: AbstractBaseUser | AnonymousUser, key_id: Any) -> ApiKey:
    """Return the user's key or raise Http404 (for another user's key too)."""
    try:
        return ApiKey.objects.get(pk=int(key_id), user_id=_user_id(user))
    except (ApiKey.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404("No such key.") from None


def api_keys_for_user(
    *, user: AbstractBaseUser | AnonymousUser, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The user's keys, newest first, each as ``{"key", "limits", "month",
    "total", "quota_used_pct"}``; ``month`` and ``total`` hold requests,
    tokens_in, tokens_out, tokens (in and out) and errors."""
    keys = ApiKey.objects.filter(user_id=_user_id(user)).order_by("-created_at", "-id")
    return [_key_row(key) for key in _with_usage(keys, since=api_month_start(now=now))]


# --- every key (dashboard) ----------------------------------------------------------


def api_key_get(*, pk: Any) -> ApiKey:
    """Any user's key with its user, or Http404."""
    try:
        return ApiKey.objects.select_related("user").get(pk=int(pk))
    except (ApiKey.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404("No such key.") from None


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
    keys = _with_usage(keys, since=api_month_start(now=now))
    return keys.order_by(*ordering, "-created_at", "-id")


def api_keys_page(*, keys: QuerySet[ApiKey], page: Any) -> Page[dict[str, Any]]:
    """One page of ``api_keys_list``, each key as a row that
    ``api_keys_for_user`` describes."""
    result: Page[Any] = Paginator(keys, KEYS_PER_PAGE).get_page(page)
    result.object_list = [_key_row(key) for key in result.object_list]
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
    month = calls.aggregate(**_figures("", api_month_start(now=now)))
    return {**counts, "month": _with_tokens(month)}


def api_owner_tokens_month(*, key: ApiKey, now: datetime | None = None) -> int:
    """Tokens in and out of the key owner's calls this month through all
    their keys, revoked ones included: what the key's quota counts."""
    calls = ApiRequest.objects.filter(user_id=key.user_id)
    return _with_tokens(calls.aggregate(**_figures("", api_month_start(now=now))))["tokens"]


def api_key_usage(*, key: ApiKey, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """The key's calls this month and in all: requests, tokens_in,
    tokens_out, tokens (in and out) and errors."""
    calls = ApiRequest.objects.filter(key=key)
    month = calls.aggregate(**_figures("", api_month_start(now=now)))
    total = calls.aggregate(**_figures("", None))
    return {"month": _with_tokens(month), "total": _with_tokens(total)}


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def api_key_usage_by_day(
    *, key: ApiKey, days: int = USAGE_DAYS, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The key's calls per calendar day for the last ``days`` days, today
    included, oldest first; a day without calls has zero counts."""
    tz = timezone.get_default_timezone()
    today = timezone.localtime(now, tz).date()
    first = today - timedelta(days=days - 1)
    grouped = (
        ApiRequest.objects.filter(key=key, created_at__gte=_midnight(first))
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(**_figures("", None))
        .order_by()
    )
    by_day: dict[date, dict[str, int]] = {}
    for row in grouped:
        figures: dict[str, Any] = dict(row)
        day = figures.pop("day")
        by_day[day] = _with_tokens(figures)
    zero = dict.fromkeys(("requests", "tokens_in", "tokens_out", "errors"), 0)
    rows = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        rows.append({"day": day, **by_day.get(day, _with_tokens(zero))})
    return rows


def api_key_requests_page(*, key: ApiKey, page: Any) -> Page[ApiRequest]:
    """One page of the key's calls, newest first."""
    calls = ApiRequest.objects.filter(key=key).order_by("-created_at", "-id")
    return Paginator(calls, REQUESTS_PER_PAGE).get_page(page)
