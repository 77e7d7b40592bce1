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
from inference.worker.heartbeat import Heartbeat, WorkerState, heartbeats_read

logger = logging.getLogger(__name__)

#: A pending answer older than this is an abandoned one, not a live
#: stream: its generation has expired in Redis.
PENDING_HORIZON = timedelta(seconds=GENERATION_IDLE_TTL_S)


def _worker_row(beat: Heartbeat, now: float) -> dict[str, Any]:
    at, started = beat.at, beat.started_at
    return {
        "id": beat.id,
        "host": beat.host,
        "pid": beat.pid,
        "state": beat.state or "unknown",
        "error": beat.error,
        "model_version": beat.model_version,
        "loaded_versions": list(beat.loaded_versions),
        "loading_versions": list(beat.loading_versions),
        "device": beat.device,
        "dtype": beat.dtype,
        "capacity": beat.capacity,
        "running": beat.running,
        "queued": beat.queued,
        "heartbeat_age_s": round(max(now - at, 0.0), 1) if at is not None else None,
        "uptime_s": round(max(now - started, 0.0)) if started is not None else None,
        "started_at": (datetime.fromtimestamp(started, tz=UTC) if started is not None else None),
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
        beats = heartbeats_read(client, worker_heartbeat_pattern())
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
