"""Usage figures read from stored answers: per version, per day, per user;
the live load read from the inference workers' heartbeats in Redis; and
the figures of the dashboard's overview.

Answers are assistant messages; an answer's figures are its token counts,
its timings (``ttft_s``, ``total_s``) and its status. Percentiles are
computed over the answers of the window asked for. Days and hours are
those of settings.TIME_ZONE.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import redis
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from chat.models import Feedback, Message
from inference.connection import (
    GENERATION_IDLE_TTL_S,
    redis_client,
    requests_stream_key,
    worker_heartbeat_pattern,
)
from inference.selectors import worker_heartbeats_list
from inference.worker import WorkerState
from models_admin.models import ModelVersion, Promotion, TrainingJob
from models_admin.selectors.model_versions import canary_get_active, model_version_get_production

logger = logging.getLogger(__name__)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def answer_tokens_per_s(completion_tokens: int | None, timings: dict[str, Any]) -> float | None:
    """Decode speed of one answer: tokens after the first over the time
    after the first token."""
    total, ttft = timings.get("total_s"), timings.get("ttft_s")
    if not completion_tokens or total is None or ttft is None or total - ttft <= 0:
        return None
    if completion_tokens < 2:
        return None
    return (completion_tokens - 1) / (total - ttft)


def _summary(rows: Iterable[dict[str, Any]], votes: dict[int, list[int]]) -> dict[str, Any]:
    answers = errors = prompt = completion = 0
    ttfts: list[float] = []
    speeds: list[float] = []
    up = down = 0
    for row in rows:
        answers += 1
        if row["status"] == Message.Status.ERROR:
            errors += 1
        prompt += row["prompt_tokens"] or 0
        completion += row["completion_tokens"] or 0
        timings = row["timings"] or {}
        if timings.get("ttft_s") is not None:
            ttfts.append(float(timings["ttft_s"]))
        speed = answer_tokens_per_s(row["completion_tokens"], timings)
        if speed is not None:
            speeds.append(speed)
        for rating in votes.get(row["pk"], ()):
            if rating > 0:
                up += 1
            else:
                down += 1
    rated = up + down
    return {
        "answers": answers,
        "errors": errors,
        "error_rate": errors / answers if answers else None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "thumbs_up": up,
        "thumbs_down": down,
        "thumbs_up_rate": up / rated if rated else None,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "tokens_per_s": statistics.median(speeds) if speeds else None,
    }


def version_stats(
    *,
    version_ids: list[int],
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
) -> dict[int, dict[str, Any]]:
    """Per version: answers, errors and error rate, tokens in and out,
    thumbs up and down and the up rate, TTFT p50/p95 and median tokens/s
    of the finished answers it wrote (since ``since``, before ``until``,
    in conversations from ``source`` when given). Every id asked for has
    an entry; a version without answers has zero counts and None rates."""
    answers = Message.objects.filter(
        role=Message.Role.ASSISTANT, model_version_id__in=version_ids
    ).exclude(status__in=[Message.Status.PENDING, Message.Status.SUPPLIED])
    if since is not None:
        answers = answers.filter(created_at__gte=since)
    if until is not None:
        answers = answers.filter(created_at__lt=until)
    if source:
        answers = answers.filter(conversation__source=source)
    rows_by_version: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in answers.values(
        "pk", "model_version_id", "status", "prompt_tokens", "completion_tokens", "timings"
    ):
        rows_by_version[row["model_version_id"]].append(dict(row))
    votes: dict[int, list[int]] = defaultdict(list)
    feedback = Feedback.objects.filter(message__in=answers).values_list("message_id", "rating")
    for message_id, rating in feedback:
        votes[message_id].append(rating)
    return {vid: _summary(rows_by_version.get(vid, []), votes) for vid in version_ids}


# --- windows ----------------------------------------------------------------

#: Window choices of the usage page: key -> label.
PERIODS = {
    "today": "Today",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "custom": "Custom range",
}
DEFAULT_PERIOD = "7d"
#: The longest custom range, so one page never reads years of answers.
MAX_WINDOW_DAYS = 92
#: A pending answer older than this is an abandoned one, not a live
#: stream: its generation has expired in Redis.
PENDING_HORIZON = timedelta(seconds=GENERATION_IDLE_TTL_S)


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
        return PERIODS[self.period]

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
    """Finished answers (anything but pending) of the window, filtered."""
    answers = Message.objects.filter(
        role=Message.Role.ASSISTANT,
        created_at__gte=window.start,
        created_at__lt=window.end,
    ).exclude(status__in=[Message.Status.PENDING, Message.Status.SUPPLIED])
    if version_id is not None:
        answers = answers.filter(model_version_id=version_id)
    if source:
        answers = answers.filter(conversation__source=source)
    return answers


def _count_aggregates() -> dict[str, Any]:
    return {
        "answers": Count("pk"),
        "errors": Count("pk", filter=Q(status=Message.Status.ERROR)),
        "prompt_tokens": Sum("prompt_tokens", default=0),
        "completion_tokens": Sum("completion_tokens", default=0),
    }


def _vote_aggregates() -> dict[str, Any]:
    return {
        "up": Count("pk", filter=Q(rating__gt=0)),
        "down": Count("pk", filter=Q(rating__lt=0)),
    }


def _dicts(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]


class _Timings:
    """TTFT and decode-speed samples of a group of answers."""

    def __init__(self) -> None:
        self.ttfts: list[float] = []
        self.speeds: list[float] = []

    def add(self, timings: dict[str, Any] | None, completion_tokens: int | None) -> None:
        timings = timings or {}
        if timings.get("ttft_s") is not None:
            self.ttfts.append(float(timings["ttft_s"]))
        speed = answer_tokens_per_s(completion_tokens, timings)
        if speed is not None:
            self.speeds.append(speed)


def _figures(
    *, counts: dict[str, Any] | None, timings: _Timings | None, up: int = 0, down: int = 0
) -> dict[str, Any]:
    """The figures of a group of answers, with the keys ``version_stats``
    gives (zeros and None for an empty group)."""
    counts = counts or {}
    timings = timings or _Timings()
    answers = counts.get("answers") or 0
    errors = counts.get("errors") or 0
    rated = up + down
    return {
        "answers": answers,
        "errors": errors,
        "error_rate": errors / answers if answers else None,
        "prompt_tokens": counts.get("prompt_tokens") or 0,
        "completion_tokens": counts.get("completion_tokens") or 0,
        "thumbs_up": up,
        "thumbs_down": down,
        "thumbs_up_rate": up / rated if rated else None,
        "ttft_p50_s": percentile(timings.ttfts, 50),
        "ttft_p95_s": percentile(timings.ttfts, 95),
        "tokens_per_s": statistics.median(timings.speeds) if timings.speeds else None,
    }


def usage_summary(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> dict[str, Any]:
    """Totals of the window: answers (requests), errors and error rate,
    tokens in (prompt) and out (completion), thumbs up and down and the up
    rate, TTFT p50/p95, median tokens/s, and the number of distinct users
    and conversations answered."""
    answers = _answers(window=window, version_id=version_id, source=source)
    counts = answers.aggregate(
        **_count_aggregates(),
        users=Count("conversation__user", distinct=True),
        conversations=Count("conversation", distinct=True),
    )
    timings = _Timings()
    for raw, completion in answers.values_list("timings", "completion_tokens").order_by():
        timings.add(raw, completion)
    votes = Feedback.objects.filter(message__in=answers).aggregate(**_vote_aggregates())
    figures = _figures(counts=counts, timings=timings, up=votes["up"], down=votes["down"])
    figures.update(users=counts["users"], conversations=counts["conversations"])
    return figures


def _version_label(name: str | None) -> str:
    return name or "unknown"


def usage_by_day(
    *, window: UsageWindow, version_id: int | None = None, source: str | None = None
) -> list[dict[str, Any]]:
    """The window's figures per calendar day of settings.TIME_ZONE, one
    row per day of the window, oldest first; a day without answers has
    zero counts and None rates. Each row has ``day`` and ``by_version``
    (answers per version name, "unknown" for a deleted version) beside
    the figures of ``usage_summary`` (users and conversations aside)."""
    tz = timezone.get_default_timezone()
    answers = _answers(window=window, version_id=version_id, source=source)
    by_day = answers.annotate(day=TruncDate("created_at", tzinfo=tz))
    counts: dict[date, dict[str, int]] = {}
    by_version: dict[date, dict[str, int]] = defaultdict(dict)
    grouped = by_day.values("day", "model_version_name").annotate(**_count_aggregates())
    for row in _dicts(grouped.order_by()):
        total = counts.setdefault(row["day"], dict.fromkeys(_count_aggregates(), 0))
        for field in total:
            total[field] += row[field] or 0
        label = _version_label(row["model_version_name"])
        by_version[row["day"]][label] = by_version[row["day"]].get(label, 0) + row["answers"]
    timings: dict[date, _Timings] = defaultdict(_Timings)
    for day, raw, completion in by_day.values_list(
        "day", "timings", "completion_tokens"
    ).order_by():
        timings[day].add(raw, completion)
    votes = {
        row["day"]: row
        for row in _dicts(
            Feedback.objects.filter(message__in=answers)
            .annotate(day=TruncDate("message__created_at", tzinfo=tz))
            .values("day")
            .annotate(**_vote_aggregates())
            .order_by()
        )
    }
    rows = []
    for day in window.days:
        vote = votes.get(day, {})
        row = _figures(
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


def usage_top_users(
    *,
    window: UsageWindow,
    version_id: int | None = None,
    source: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The users with the most answers in the window, then the most
    tokens (in plus out), then by username: user id, username, requests,
    prompt and completion tokens, conversations and the time of their
    last answer in the window."""
    answers = _answers(window=window, version_id=version_id, source=source)
    rows = (
        answers.values(
            user_id=F("conversation__user_id"), username=F("conversation__user__username")
        )
        .annotate(
            requests=Count("pk"),
            prompt_tokens=Sum("prompt_tokens", default=0),
            completion_tokens=Sum("completion_tokens", default=0),
            conversations=Count("conversation", distinct=True),
            last_active=Max("created_at"),
        )
        .annotate(tokens=F("prompt_tokens") + F("completion_tokens"))
        .order_by("-requests", "-tokens", "username")[:limit]
    )
    return _dicts(rows)


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
    answers = Message.objects.filter(
        role=Message.Role.ASSISTANT, created_at__gte=starts[0], created_at__lte=now
    ).exclude(status__in=[Message.Status.PENDING, Message.Status.SUPPLIED])
    grouped = (
        answers.annotate(hour=TruncHour("created_at", tzinfo=tz))
        .values("hour")
        .annotate(**_count_aggregates())
        .order_by()
    )
    # Aware datetimes hash by their instant, so the database's hours find
    # the buckets whatever zone each side carries.
    found = {row["hour"]: row for row in _dicts(grouped)}
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


# --- live load -------------------------------------------------------------------


def _worker_row(beat: dict[str, Any], now: float) -> dict[str, Any]:
    at = beat.get("at")
    started = beat.get("started_at")
    return {
        "id": beat.get("id"),
        "host": beat.get("host"),
        "pid": beat.get("pid"),
        "state": beat.get("state") or "unknown",
        "error": beat.get("error") or "",
        "model_version": beat.get("model_version"),
        "loaded_versions": list(beat.get("loaded_versions") or []),
        "loading_versions": list(beat.get("loading_versions") or []),
        "device": beat.get("device"),
        "dtype": beat.get("dtype"),
        "capacity": int(beat.get("capacity") or 0),
        "running": int(beat.get("running") or 0),
        "queued": int(beat.get("queued") or 0),
        "heartbeat_age_s": round(max(now - float(at), 0.0), 1) if at is not None else None,
        "uptime_s": round(max(now - float(started), 0.0)) if started is not None else None,
        "started_at": (
            datetime.fromtimestamp(float(started), tz=UTC) if started is not None else None
        ),
    }


def live_load(*, client: Any = None, now: datetime | None = None) -> dict[str, Any]:
    """What is happening now: pending answers (recent ones), the length
    of the requests stream (workers delete finished entries, so this is
    the backlog) and one row per live inference worker from its heartbeat
    (sorted by id), with their running, queued and capacity summed. When
    Redis cannot be reached, ``redis_ok`` is False, ``redis_error`` says
    why, ``queue_length`` is None and there are no workers."""
    now = now or timezone.now()
    pending = Message.objects.filter(
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        created_at__gte=now - PENDING_HORIZON,
    ).count()
    client = client if client is not None else redis_client()
    try:
        queue_length: int | None = int(client.xlen(requests_stream_key()))
        beats = worker_heartbeats_list(client=client, pattern=worker_heartbeat_pattern())
        redis_error = ""
    except (redis.RedisError, OSError) as exc:
        logger.warning("Live load: Redis is unreachable: %s", exc)
        queue_length, beats, redis_error = None, [], str(exc) or exc.__class__.__name__
    workers = sorted(
        (_worker_row(beat, now.timestamp()) for beat in beats), key=lambda w: str(w["id"])
    )
    loaded = sorted({name for w in workers for name in w["loaded_versions"]})
    return {
        "at": now,
        "redis_ok": not redis_error,
        "redis_error": redis_error,
        "queue_length": queue_length,
        "pending_answers": pending,
        "running": sum(w["running"] for w in workers),
        "queued": sum(w["queued"] for w in workers),
        "capacity": sum(w["capacity"] for w in workers),
        "workers": workers,
        "workers_total": len(workers),
        "workers_ready": sum(1 for w in workers if w["state"] == WorkerState.READY),
        "loaded_versions": loaded,
    }


# --- overview ----------------------------------------------------------------------

#: Training jobs the overview lists: the unfinished ones and the latest
#: finished ones.
OVERVIEW_ACTIVE_JOBS = 10
OVERVIEW_RECENT_JOBS = 5
OVERVIEW_PROMOTIONS = 5


def training_job_summary(job: TrainingJob) -> dict[str, Any]:
    """A job's state and progress for lists: step of total steps and the
    percentage done (None before the first step is known)."""
    progress = job.progress or {}
    step, total = progress.get("step"), progress.get("total_steps")
    percent = None
    if job.state == TrainingJob.State.COMPLETED:
        percent = 100.0
    elif step is not None and total:
        percent = round(min(100.0, 100.0 * float(step) / float(total)), 1)
    return {
        "id": job.pk,
        "kind": job.kind,
        "kind_label": job.get_kind_display(),
        "state": job.state,
        "state_label": job.get_state_display(),
        "dataset": job.dataset.name,
        "base_version": job.base_version.name,
        "step": step,
        "total_steps": total,
        "percent": percent,
        "loss": progress.get("loss"),
        "eta_s": progress.get("eta_s"),
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def training_jobs_overview() -> dict[str, list[dict[str, Any]]]:
    """Unfinished jobs (running first, then queued, oldest first) and the
    latest finished ones."""
    jobs = TrainingJob.objects.select_related("dataset", "base_version")
    unfinished = (TrainingJob.State.RUNNING, TrainingJob.State.QUEUED)
    active = sorted(
        jobs.filter(state__in=unfinished).order_by("created_at", "id")[:OVERVIEW_ACTIVE_JOBS],
        key=lambda job: job.state != TrainingJob.State.RUNNING,
    )
    recent = jobs.exclude(state__in=unfinished).order_by(
        F("finished_at").desc(nulls_last=True), "-id"
    )
    return {
        "active": [training_job_summary(job) for job in active],
        "recent": [training_job_summary(job) for job in recent[:OVERVIEW_RECENT_JOBS]],
    }


def serving_overview() -> dict[str, Any]:
    """The production version with the latest promotion to it (when, by
    whom) and the running canary, if any."""
    production = model_version_get_production()
    promotion = None
    if production is not None:
        promotion = (
            Promotion.objects.select_related("by", "from_version")
            .filter(to_version=production)
            .first()
        )
    return {"production": production, "promotion": promotion, "canary": canary_get_active()}


def canary_comparison() -> dict[str, Any] | None:
    """The running canary's figures beside production's, both since the
    canary started (``version_stats`` figures); None without a canary."""
    canary = canary_get_active()
    if canary is None:
        return None
    production = model_version_get_production()
    ids = [canary.version_id] + ([production.pk] if production is not None else [])
    stats = version_stats(version_ids=ids, since=canary.started_at)
    return {
        "canary_id": canary.pk,
        "since": canary.started_at,
        "production": stats[production.pk] if production is not None else None,
        "canary": stats[canary.version_id],
    }


def promotions_recent(*, limit: int = OVERVIEW_PROMOTIONS) -> list[Promotion]:
    return list(Promotion.objects.select_related("from_version", "to_version", "by")[:limit])


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


def overview_figures(*, now: datetime | None = None) -> dict[str, Any]:
    """The changing figures of the overview: the live load, today's totals
    (since local midnight), answers per hour over the last 24 hours,
    training jobs, and the canary's side-by-side figures if one runs."""
    now = now or timezone.now()
    return {
        "live": live_load(now=now),
        "today": usage_summary(window=usage_window(period="today", now=now)),
        "hours": usage_by_hour(now=now),
        "jobs": training_jobs_overview(),
        "comparison": canary_comparison(),
    }
