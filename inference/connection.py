"""The Redis connection and key names shared by web processes and workers."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


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
