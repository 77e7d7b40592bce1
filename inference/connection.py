"""The Redis connection and key names shared by web processes and workers."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings

from inference.worker.keys import Keys


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=3,
        socket_timeout=5,
        health_check_interval=30,
        decode_responses=True,
    )


def key(*parts: str) -> str:
    return settings.REDIS_KEY_PREFIX + ":".join(parts)


def worker_heartbeat_key(worker_id: str) -> str:
    return key("inference", "workers", worker_id)


def worker_heartbeat_pattern() -> str:
    return key("inference", "workers", "*")


def worker_metrics_key(worker_id: str) -> str:
    return key("inference", "metrics", worker_id)


def worker_metrics_pattern() -> str:
    return key("inference", "metrics", "*")


REQUESTS_GROUP = "workers"
#: How long a finished generation's events stay readable in Redis.
GENERATION_TTL_S = 3600
#: Unfinished generations expire too, so nothing is kept forever.
GENERATION_IDLE_TTL_S = 24 * 3600


def requests_stream_key() -> str:
    return key("inference", "requests")


def generation_key(generation_id: str) -> str:
    """The stream of one generation's events; entry ids are 0-<seq>."""
    return key("inference", "gen", generation_id)


def cancel_key(generation_id: str) -> str:
    return key("inference", "cancel", generation_id)


def serving_epoch_key() -> str:
    """A counter bumped whenever the versions in service change."""
    return key("inference", "serving", "epoch")


def worker_keys() -> Keys:
    return Keys(
        heartbeat=worker_heartbeat_key,
        requests=requests_stream_key(),
        generation=generation_key,
        cancel=cancel_key,
        metrics=worker_metrics_key,
        serving_epoch=serving_epoch_key(),
        group=REQUESTS_GROUP,
        generation_ttl_s=GENERATION_TTL_S,
        generation_idle_ttl_s=GENERATION_IDLE_TTL_S,
    )
