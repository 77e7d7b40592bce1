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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The groups this process's channels are in, to join again after
        # an outage: a Redis that restarted empty forgot them.
        self.memberships: dict[str, set[str]] = {}

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        self.memberships.setdefault(channel, set()).add(group)

    async def group_discard(self, group: str, channel: str) -> None:
        groups = self.memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self.memberships[channel]
        await super().group_discard(group, channel)

    async def receive(self, channel: str) -> Any:
        """Receive the next message on channel; while Redis is away, retry
        with a growing pause rather than fail, then join the channel's
        groups again."""
        delay = 0.1
        failing = False
        while True:
            try:
                if failing:
                    await self._rejoin(channel)
                message = await super().receive(channel)
            except _REDIS_DOWN as exc:
                if not failing:
                    logger.warning("Channel layer lost Redis, retrying: %s", exc)
                    failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            return message

    async def _rejoin(self, channel: str) -> None:
        for group in sorted(self.memberships.get(channel, ())):
            await super().group_add(group, channel)
