"""The dashboard's home: what serves (production, a canary), training
jobs, the latest promotions, and the figures that change (the live load,
today's traffic, answers per hour, the canary beside production)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from models_admin.dashboard.selectors.figures import version_stats
from models_admin.dashboard.selectors.live import live_load
from models_admin.dashboard.selectors.usage import usage_by_hour, usage_summary, usage_window
from models_admin.models import Promotion, TrainingJob
from models_admin.selectors import canary_get_active, model_version_get_production

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
