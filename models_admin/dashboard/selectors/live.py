"""The live load: answers being written now, the backlog of the requests
stream, and the inference workers as their heartbeats in Redis describe
them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.utils import timezone

from chat.models import Message
from inference.connection import (
    GENERATION_IDLE_TTL_S,
    redis_client,
    requests_stream_key,
    worker_heartbeat_pattern,
)
from inference.selectors import worker_heartbeats_list
from inference.worker import WorkerState

logger = logging.getLogger(__name__)

#: A pending answer older than this is an abandoned one, not a live
#: stream: its generation has expired in Redis.
PENDING_HORIZON = timedelta(seconds=GENERATION_IDLE_TTL_S)


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
