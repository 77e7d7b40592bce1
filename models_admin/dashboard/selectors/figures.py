"""Figures of groups of answers: counts, error and thumbs-up rates, token
totals, TTFT percentiles and decode speed; and those figures per model
version.

Answers are assistant messages; an answer's figures are its token counts,
its timings (``ttft_s``, ``total_s``) and its status.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from chat.models import Feedback, Message


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


def finished_answers() -> QuerySet[Message]:
    """Answers that have ended, whatever the end: anything but pending,
    and not text an API caller supplied as history."""
    return Message.objects.filter(role=Message.Role.ASSISTANT).exclude(
        status__in=[Message.Status.PENDING, Message.Status.SUPPLIED]
    )


def count_aggregates() -> dict[str, Any]:
    """Aggregates of answers: ``answers``, ``errors`` and the tokens in
    (``prompt_tokens``) and out (``completion_tokens``)."""
    return {
        "answers": Count("pk"),
        "errors": Count("pk", filter=Q(status=Message.Status.ERROR)),
        "prompt_tokens": Sum("prompt_tokens", default=0),
        "completion_tokens": Sum("completion_tokens", default=0),
    }


def vote_aggregates() -> dict[str, Any]:
    """Aggregates of feedback: thumbs ``up`` and ``down``."""
    return {
        "up": Count("pk", filter=Q(rating__gt=0)),
        "down": Count("pk", filter=Q(rating__lt=0)),
    }


def dicts(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]


class AnswerTimings:
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


def answer_figures(
    *,
    counts: Mapping[str, Any] | None,
    timings: AnswerTimings | None,
    up: int = 0,
    down: int = 0,
) -> dict[str, Any]:
    """The figures of a group of answers from its ``count_aggregates``,
    timings and votes (zeros and None for an empty group): answers,
    errors and error rate, tokens in and out, thumbs up and down and the
    up rate, TTFT p50/p95 and median tokens/s."""
    counts = counts or {}
    timings = timings or AnswerTimings()
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


def version_stats(
    *,
    version_ids: list[int],
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
) -> dict[int, dict[str, Any]]:
    """Per version: the ``answer_figures`` of the finished answers it
    wrote (since ``since``, before ``until``, in conversations from
    ``source`` when given). Every id asked for has an entry; a version
    without answers has zero counts and None rates."""
    answers = finished_answers().filter(model_version_id__in=version_ids)
    if since is not None:
        answers = answers.filter(created_at__gte=since)
    if until is not None:
        answers = answers.filter(created_at__lt=until)
    if source:
        answers = answers.filter(conversation__source=source)
    grouped = answers.values("model_version_id").annotate(**count_aggregates()).order_by()
    counts = {row["model_version_id"]: row for row in dicts(grouped)}
    timings: dict[int, AnswerTimings] = defaultdict(AnswerTimings)
    for version_id, raw, completion in answers.values_list(
        "model_version_id", "timings", "completion_tokens"
    ).order_by():
        timings[version_id].add(raw, completion)
    rated = (
        Feedback.objects.filter(message__in=answers)
        .values("message__model_version_id")
        .annotate(**vote_aggregates())
        .order_by()
    )
    votes = {row["message__model_version_id"]: row for row in dicts(rated)}
    return {
        vid: answer_figures(
            counts=counts.get(vid),
            timings=timings.get(vid),
            up=votes.get(vid, {}).get("up", 0),
            down=votes.get(vid, {}).get("down", 0),
        )
        for vid in version_ids
    }


def figures_with_percents(*groups: dict[str, Any] | None) -> None:
    """Add ``error_pct`` and ``thumbs_up_pct`` to each group of figures
    given (None is skipped): the rates as percentages, for templates."""
    for figures in groups:
        if figures is None:
            continue
        for rate, percent in (("error_rate", "error_pct"), ("thumbs_up_rate", "thumbs_up_pct")):
            figures[percent] = None if figures[rate] is None else figures[rate] * 100
