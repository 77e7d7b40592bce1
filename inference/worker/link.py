"""The worker's Redis client, its key names and its name there (the
consumer name in the group, the heartbeat key's suffix), and whether
Redis answers.

The parts of a worker share one RedisLink. A call that fails because
Redis is away marks it lost; from then on the parts hold back what they
would write (events stay in their logs, acknowledgements wait) until
``inference.worker.recovery`` sees Redis answer again and catches up.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from inference.worker.keys import Keys

logger = logging.getLogger(__name__)

#: What a Redis outage raises; anything else from Redis is a bug or a reply.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class RedisLink:
    def __init__(self, client: redis.Redis, keys: Keys, worker_id: str) -> None:
        # redis-py's stubs type replies as unions of every reply shape.
        self.redis: Any = client
        self.keys = keys
        self.worker_id = worker_id
        #: Whether the last call failed; cleared by recovery only.
        self.lost = False

    def lost_mark(self, exc: BaseException) -> None:
        if not self.lost:
            logger.error("Redis unreachable; holding events until it is back: %s", exc)
        self.lost = True
