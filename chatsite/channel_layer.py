"""The channel layer: channels_redis, riding out Redis restarts.

A consumer waits on the layer for its whole life; when Redis goes away,
channels_redis raises out of that wait and the consumer dies with its
socket. This layer waits for Redis instead, so sockets stay open through
a restart and their generation streams resume on their own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)
#: The longest pause between attempts while Redis is away.
MAX_RETRY_DELAY_S = 2.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    async def receive(self, channel: str) -> Any:
        """Receive the next message on channel; while Redis is away, retry
        with a growing pause rather than fail."""
        delay = 0.1
        failing = False
        while True:
            try:
                message = await super().receive(channel)
            except _REDIS_DOWN as exc:
                if not failing:
                    logger.warning("Channel layer lost Redis, retrying: %s", exc)
                    failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            if failing:
                logger.info("Channel layer reached Redis again")
            return message
