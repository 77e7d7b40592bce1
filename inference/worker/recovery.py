"""Catching up with Redis after an outage or a restart.

While Redis is away the engine keeps generating and the events wait in
each generation's log. Once Redis answers again, or comes back as a new
server (its run id moved), the worker recreates its consumer group,
rewrites every event a stream lacks, acknowledges what it owes and starts
what it claimed but could not start. After a restart that lost data, one
worker hands the generations whose request vanished to
``on_redis_restart``, so they end with an error rather than wait forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from inference.worker.claims import Claims
from inference.worker.generations import Generations, request_id
from inference.worker.heartbeat import heartbeats_read
from inference.worker.link import REDIS_DOWN, RedisLink

logger = logging.getLogger(__name__)

#: Seconds between checks that Redis is the same server (its run id).
RUN_ID_CHECK_S = 1.0
#: Seconds after a Redis restart before lost requests are looked for, at
#: least; workers also list what they run in their heartbeats.
RESTART_SETTLE_S = 5.0


class Recovery:
    """Watches Redis through link. on_back is called once Redis is back
    and the worker has caught up: the worker beats and reads the versions
    in service again."""

    def __init__(
        self,
        *,
        link: RedisLink,
        claims: Claims,
        generations: Generations,
        heartbeat_ttl: float,
        on_back: Callable[[], None],
        on_redis_restart: Callable[[list[str]], None] | None,
    ) -> None:
        self.link = link
        self.claims = claims
        self.generations = generations
        self.heartbeat_ttl = heartbeat_ttl
        self._on_back = on_back
        self.on_redis_restart = on_redis_restart
        self._probe: Any = None
        self._run_id: str | None = None
        self._last_run_id_check = 0.0
        self._restart_recovery_at: float | None = None
        self._restart_run_id: str | None = None

    def check(self) -> bool:
        """Notice an outage ending or a new Redis server (its run id moved)
        and recover; return whether Redis is usable now."""
        now = time.monotonic()
        if not self.link.lost and now - self._last_run_id_check < RUN_ID_CHECK_S:
            return True
        self._last_run_id_check = now
        try:
            # While Redis is away, probe without the client's retries so
            # the engine keeps stepping between probes.
            client = self._probe_client() if self.link.lost else self.link.redis
            run_id = str(client.info("server").get("run_id", ""))
        except REDIS_DOWN as exc:
            self.link.lost_mark(exc)
            return False
        restarted = self._run_id is not None and run_id != self._run_id
        if self.link.lost or restarted:
            try:
                self._recover(restarted=restarted, run_id=run_id)
            except REDIS_DOWN as exc:
                self.link.lost_mark(exc)
                return False
        self._run_id = run_id
        return True

    def _probe_client(self) -> Any:
        if self._probe is None:
            pool = self.link.redis.connection_pool
            self._probe = redis.Redis(
                connection_pool=redis.ConnectionPool(
                    connection_class=pool.connection_class,
                    **{
                        **pool.connection_kwargs,
                        "retry": Retry(NoBackoff(), 0),
                        "socket_timeout": 2,
                        "socket_connect_timeout": 2,
                    },
                )
            )
        return self._probe

    def _recover(self, *, restarted: bool, run_id: str) -> None:
        """Bring Redis back in step with this worker: the consumer group,
        every stream this worker writes, the acknowledgements it owes."""
        generations = self.generations
        self.link.lost = False
        self.claims.group_ensure()
        items = [*generations.inflight.values(), *generations.backlog.values()]
        rewritten = 0
        for item in items:
            rewritten += max(generations.streams.resync(item), 0)
        while generations.retire_later:
            generations.retire(generations.retire_later.pop())
            if self.link.lost:
                raise redis.ConnectionError("Redis went away again")
        generations.backlog = {g: i for g, i in generations.backlog.items() if i.unpublished}
        unstarted, generations.unstarted = generations.unstarted, []
        for entry_id, fields in unstarted:
            generations.start(entry_id, fields)
        if self.link.lost:
            raise redis.ConnectionError("Redis went away again")
        self._on_back()
        # Let the other workers beat before taking over anything of
        # theirs: every heartbeat key may have expired.
        self.claims.orphans_after = time.monotonic() + self.heartbeat_ttl
        if restarted:
            self._restart_recovery_at = time.monotonic() + max(
                RESTART_SETTLE_S, self.heartbeat_ttl
            )
            self._restart_run_id = run_id
        logger.warning(
            "Redis is back%s; %d event(s) rewritten in %d stream(s)",
            " as a new server" if restarted else "",
            rewritten,
            len(items),
        )

    def restart_recovery(self) -> None:
        """After a Redis restart, once every worker had time to rewrite its
        streams, let one worker hand on the requests that were lost."""
        if self._restart_recovery_at is None or time.monotonic() < self._restart_recovery_at:
            return
        self._restart_recovery_at = None
        if self.on_redis_restart is None or self._restart_run_id is None:
            return
        client, keys = self.link.redis, self.link.keys
        lock = keys.restart_recovered(self._restart_run_id)
        if not client.set(lock, self.link.worker_id, nx=True, ex=3600):
            return  # another worker does it
        try:
            held: set[str] = set()
            for _eid, fields in client.xrange(keys.requests, "-", "+"):
                try:
                    held.add(request_id(fields))
                except (KeyError, TypeError, ValueError):
                    continue
            for beat in heartbeats_read(client, keys.heartbeat("*")):
                held.update(beat.generations)
            self.on_redis_restart(sorted(held))
        except Exception:
            logger.exception("Handing on requests lost in a Redis restart failed")
            client.delete(lock)  # let the next worker that notices retry
