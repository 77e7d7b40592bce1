"""The usage page's reads: a window of time and its answers in total, per
day, per version, per user and per hour.

Percentiles are computed over the answers of the window asked for. Days
and hours are those of settings.TIME_ZONE.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Case, CharField, Count, F, Max, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from chat.models import Feedback, Message
from models_admin.dashboard.selectors.figures import (
    AnswerTimings,
    answer_figures,
    count_aggregates,
    dicts,
    finished_answers,
    version_stats,
    vote_aggregates,
)
from models_admin.dashboard.selectors.live import live_load
from models_admin.models import ModelVersion

# --- windows ----------------------------------------------------------------

#: Window choices of the usage page: key -> label.
PERIODS = {
    "today": gettext_lazy("Today"),
    "24h": gettext_lazy("Last 24 hours"),
    "7d": gettext_lazy("Last 7 days"),
    "30d": gettext_lazy("Last 30 days"),
    "custom": gettext_lazy("Custom range"),
}
DEFAULT_PERIOD = "7d"
#: The longest custom range, so one page never reads years of answers.
MAX_WINDOW_DAYS = 92


@dataclass(frozen=True)
class UsageWindow:
    """Answers created in ``[start, end)``; ``days`` are the calendar days
    of the site's time zone that the window touches, oldest first."""

    period: str
    start: datetime
    end: datetime
    days: tuple[date, ...]

    @property
    def label(self) -> str:
        return str(PERIODS[self.period])

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "label": self.label,
            "start": self.start,
            "end": self.end,
            "first_day": self.days[0],
            "last_day": self.days[-1],
            "time_zone": str(timezone.get_default_timezone()),
        }


def local_midnight(day: date) -> datetime:
    """The start of ``day`` in settings.TIME_ZONE."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def _days_between(start: datetime, end: datetime) -> tuple[date, ...]:
    tz = timezone.get_default_timezone()
    first = timezone.localtime(start, tz).date()
    last = timezone.localtime(max(start, end - timedelta(microseconds=1)), tz).date()
    return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))


def usage_window(
    *,
    period: str = DEFAULT_PERIOD,
    first_day: date | None = None,
    last_day: date | None = None,
    now: datetime | None = None,
) -> UsageWindow:
    """Build the window of a period: "today" (since local midnight),
    "24h" (the last 24 hours), "7d" and "30d" (that many calendar days,
    today included) or "custom" (``first_day`` to ``last_day``, both
    whole days, ``last_day`` defaulting to today). Days are those of
    settings.TIME_ZONE. Raise ValueError for an unknown period, a custom
    range without a first day, reversed or longer than MAX_WINDOW_DAYS."""
    now = now or timezone.now()
    today = timezone.localtime(now, timezone.get_default_timezone()).date()
    if period == "today":
        start, end = local_midnight(today), now
    elif period == "24h":
        start, end = now - timedelta(hours=24), now
    elif period in ("7d", "30d"):
        count = int(period.removesuffix("d"))
        start, end = local_midnight(today - timedelta(days=count - 1)), now
    elif period == "custom":
        if first_day is None:
            raise ValueError("Choose the first day of the range.")
        last_day = last_day or today
        if last_day < first_day:
            raise ValueError("The last day is before the first day.")
        if (last_day - first_day).days + 1 > MAX_WINDOW_DAYS:
            raise ValueError(f"Choose at most {MAX_WINDOW_DAYS} days.")
        start, end = local_midnight(first_day), local_midnight(last_day + timedelta(days=1))
    else:
        raise ValueError(f"Unknown period {period!r}.")
    return UsageWindow(period=period, start=start, end=end, days=_days_between(start, end))


# --- answers of a window --------------------------------------------------------


def _answers(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> QuerySet[Message]:
    """Finished answers of the window, filtered."""
    answers = finished_answers().filter(created_at__gte=window.start, created_at__lt=window.end)
    if version_id is not None:
        answers = answers.filter(model_version_id=version_id)
    if source:
        answers = answers.filter(conversation__source=source)
    return answers


def usage_summary(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> dict[str, Any]:
    """Totals of the window: answers (requests), errors and error rate,
    tokens in (prompt) and out (completion), thumbs up and down and the up
    rate, TTFT p50/p95, median tokens/s, and the number of distinct users
    and conversations answered."""
    answers = _answers(window=window, version_id=version_id, source=source)
    counts = answers.aggregate(
        **count_aggregates(),
        users=Count("conversation__user", distinct=True),
        conversations=Count("conversation", distinct=True),
    )
    timings = AnswerTimings()
    for raw, completion in answers.values_list("timings", "completion_tokens").order_by():
        timings.add(raw, completion)
    votes = Feedback.objects.filter(message__in=answers).aggregate(**vote_aggregates())
    figures = answer_figures(counts=counts, timings=timings, up=votes["up"], down=votes["down"])
    figures.update(users=counts["users"], conversations=counts["conversations"])
    return figures


#: Labels of answers that no model version wrote, by why none did.
NO_MODEL_LABELS = {
    "blocked": gettext_lazy("No model (blocked by a filter)"),
    "staff": gettext_lazy("No model (written by staff)"),
    "none": gettext_lazy("No model (none was in production)"),
}


def _no_model_reason() -> Case:
    """Why an answer has no version's name: "" when it has one; "blocked"
    for a question a filter stopped (the notice is the answer), "staff"
    for a reply a person wrote in a widget handoff, "none" for an answer
    sent while no version was in production (it failed or was stopped
    before any model ran)."""
    return Case(
        When(~Q(model_version_name=""), then=Value("")),
        When(status=Message.Status.BLOCKED, then=Value("blocked")),
        When(author__isnull=False, then=Value("staff")),
        default=Value("none"),
        output_field=CharField(),
    )


def _version_label(name: str, no_model: str) -> str:
    return name or str(NO_MODEL_LABELS[no_model])


def usage_by_day(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> list[dict[str, Any]]:
    """The window's figures per calendar day of settings.TIME_ZONE, one
    row per day of the window, oldest first; a day without answers has
    zero counts and None rates. Each row has ``day`` and ``by_version``
    (answers per version name, a deleted version's kept name included;
    answers no version wrote under a NO_MODEL_LABELS label) beside the
    figures of ``usage_summary`` (users and conversations aside)."""
    tz = timezone.get_default_timezone()
    answers = _answers(window=window, version_id=version_id, source=source)
    by_day = answers.annotate(day=TruncDate("created_at", tzinfo=tz))
    counts: dict[date, dict[str, int]] = {}
    by_version: dict[date, dict[str, int]] = defaultdict(dict)
    grouped = (
        by_day.annotate(no_model=_no_model_reason())
        .values("day", "model_version_name", "no_model")
        .annotate(**count_aggregates())
    )
    for row in dicts(grouped.order_by()):
        total = counts.setdefault(row["day"], dict.fromkeys(count_aggregates(), 0))
        for field in total:
            total[field] += row[field] or 0
        label = _version_label(row["model_version_name"], row["no_model"])
        by_version[row["day"]][label] = by_version[row["day"]].get(label, 0) + row["answers"]
    timings: dict[date, AnswerTimings] = defaultdict(AnswerTimings)
    for day, raw, completion in by_day.values_list(
        "day", "timings", "completion_tokens"
    ).order_by():
        timings[day].add(raw, completion)
    votes = {
        row["day"]: row
        for row in dicts(
            Feedback.objects.filter(message__in=answers)
            .annotate(day=TruncDate("message__created_at", tzinfo=tz))
            .values("day")
            .annotate(**vote_aggregates())
            .order_by()
        )
    }
    rows = []
    for day in window.days:
        vote = votes.get(day, {})
        row = answer_figures(
            counts=counts.get(day),
            timings=timings.get(day),
            up=vote.get("up", 0),
            down=vote.get("down", 0),
        )
        row.update(day=day, by_version=dict(sorted(by_version.get(day, {}).items())))
        rows.append(row)
    return rows


def usage_by_version(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> list[dict[str, Any]]:
    """The window's figures per model version that answered in it (the
    figures of ``version_stats`` with the version's id, name and state),
    the busiest first. Answers of a deleted version are left out."""
    answers = _answers(window=window, version_id=version_id, source=source)
    ids = list(
        answers.exclude(model_version_id=None)
        .values_list("model_version_id", flat=True)
        .distinct()
        .order_by()
    )
    stats = version_stats(version_ids=ids, since=window.start, until=window.end, source=source)
    versions = ModelVersion.objects.filter(pk__in=ids).values("pk", "name", "state")
    rows = [
        {"id": v["pk"], "name": v["name"], "state": v["state"], **stats[v["pk"]]} for v in versions
    ]
    rows.sort(key=lambda row: (-row["answers"], row["name"]))
    return rows


def _requester_aggregates() -> dict[str, Any]:
    """Aggregates of the answers one requester got."""
    return {
        "requests": Count("pk"),
        "prompt_tokens": Sum("prompt_tokens", default=0),
        "completion_tokens": Sum("completion_tokens", default=0),
        "conversations": Count("conversation", distinct=True),
        "last_active": Max("created_at"),
    }


def _visitors_label(site_name: str | None) -> str:
    return (
        gettext("Widget visitors (%(site_name)s)") % {"site_name": site_name}
        if site_name
        else gettext("Widget visitors")
    )


def usage_top_users(
    *,
    window: UsageWindow,
    version_id: int | None = None,
    source: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """Who got the most answers in the window, then the most tokens (in
    plus out), then by label: each signed-in user (API calls count for
    the key's owner), and the visitors of each widget site together, who
    have no account.

    A row has ``kind`` ("user" or "visitors"), ``label`` (the username,
    or "Widget visitors (site name)"), ``user_id`` and ``username`` (None
    for visitors), ``site_id`` and ``visitors`` (None for a user),
    requests, prompt and completion tokens, tokens, conversations and the
    time of the last answer in the window."""
    answers = _answers(window=window, version_id=version_id, source=source)
    top = ("-requests", "-tokens")
    users = (
        answers.filter(conversation__user__isnull=False)
        .values(user_id=F("conversation__user_id"), username=F("conversation__user__username"))
        .annotate(**_requester_aggregates())
        .annotate(tokens=F("prompt_tokens") + F("completion_tokens"))
        .order_by(*top, "username")[:limit]
    )
    # A conversation has a user or a widget visitor (a database
    # constraint) until retention anonymises it: the others are visitors',
    # counted by site, and anonymised chats and API calls, together.
    sites = (
        answers.filter(conversation__user__isnull=True)
        .values(site_id=F("conversation__site_id"), site_name=F("conversation__site__name"))
        .annotate(
            **_requester_aggregates(), visitors=Count("conversation__visitor", distinct=True)
        )
        .annotate(tokens=F("prompt_tokens") + F("completion_tokens"))
        .order_by(*top, "site_name")[:limit]
    )
    rows = [
        {**row, "kind": "user", "label": row["username"], "site_id": None, "visitors": None}
        for row in dicts(users)
    ]
    for row in dicts(sites):
        site_name = row.pop("site_name")
        if row["site_id"] is None:
            kind, label = "anonymised", gettext("Anonymised conversations")
        else:
            kind, label = "visitors", _visitors_label(site_name)
        rows.append({**row, "kind": kind, "label": label, "user_id": None, "username": None})
    rows.sort(key=lambda row: (-row["requests"], -row["tokens"], row["label"]))
    return rows[:limit]


def usage_by_hour(*, hours: int = 24, now: datetime | None = None) -> list[dict[str, Any]]:
    """Answers, errors and tokens (in plus out) per hour of the site's
    time zone over the last ``hours`` hours, the current hour last; an
    hour without answers has zeros."""
    now = now or timezone.now()
    tz = timezone.get_default_timezone()
    current = timezone.localtime(now, tz).replace(minute=0, second=0, microsecond=0)
    # Step back in UTC: wall-clock arithmetic would skip or repeat an hour
    # on the days the clocks change.
    starts = [
        (current.astimezone(UTC) - timedelta(hours=n)).astimezone(tz)
        for n in range(hours - 1, -1, -1)
    ]
    answers = finished_answers().filter(created_at__gte=starts[0], created_at__lte=now)
    grouped = (
        answers.annotate(hour=TruncHour("created_at", tzinfo=tz))
        .values("hour")
        .annotate(**count_aggregates())
        .order_by()
    )
    # Aware datetimes hash by their instant, so the database's hours find
    # the buckets whatever zone each side carries.
    found = {row["hour"]: row for row in dicts(grouped)}
    rows = []
    for start in starts:
        row = found.get(start, {})
        rows.append(
            {
                "hour": start,
                "answers": row.get("answers", 0),
                "errors": row.get("errors", 0),
                "tokens": (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0),
            }
        )
    return rows


# --- pages -------------------------------------------------------------------------


def usage_report(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> dict[str, Any]:
    """Everything the usage page shows for a window and filters: the
    window, totals, per day, per version, top users and the live load."""
    return {
        "window": window.as_dict(),
        "filters": {"version": version_id, "source": source or ""},
        "summary": usage_summary(window=window, version_id=version_id, source=source),
        "days": usage_by_day(window=window, version_id=version_id, source=source),
        "versions": usage_by_version(window=window, version_id=version_id, source=source),
        "top_users": usage_top_users(window=window, version_id=version_id, source=source),
        "live": live_load(),
    }
