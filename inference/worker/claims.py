"""Which requests a worker holds.

Workers share the requests stream through one consumer group. A worker
claims new requests up to what it can run soon, renews its claim on the
ones it holds, and takes over the requests of a worker whose heartbeat
has expired (killed) at once, and of one that stopped renewing (frozen)
after ``claim_timeout`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from inference.worker.generations import Generations
from inference.worker.link import RedisLink
from inference.worker.versions import Versions

logger = logging.getLogger(__name__)

#: How long a dead consumer with nothing pending stays in the group.
CONSUMER_FORGET_MS = 3600 * 1000


class Claims:
    """The requests-stream side of the requests a worker holds."""

    def __init__(
        self,
        *,
        link: RedisLink,
        versions: Versions,
        generations: Generations,
        heartbeat_ttl: float,
        claim_timeout: float,
        stop_event: threading.Event,
    ) -> None:
        self.link = link
        self.versions = versions
        self.generations = generations
        self.heartbeat_ttl = heartbeat_ttl
        self.claim_timeout = claim_timeout
        self.stop_event = stop_event
        self._reclaim_cursor = "0-0"
        #: No takeover of other workers' requests before this (monotonic)
        #: time: after an outage their heartbeats need time to come back.
        self.orphans_after = 0.0

    def group_ensure(self) -> None:
        keys = self.link.keys
        try:
            self.link.redis.xgroup_create(keys.requests, keys.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def capacity(self) -> int:
        """How many more requests to claim: fill free slots, queue few."""
        engine = self.versions.serving
        if engine is None:
            return 0
        waiting = self.generations.parked_count() + len(self.generations.unstarted)
        return max(
            engine.slots + max(engine.slots // 4, 1) - engine.running - engine.queued - waiting, 0
        )

    def claim(self, block_ms: int | None) -> int:
        capacity = self.capacity()
        if capacity <= 0 or self.stop_event.is_set():
            if block_ms:
                self.stop_event.wait(block_ms / 1000)
            return 0
        keys = self.link.keys
        try:
            response = self.link.redis.xreadgroup(
                keys.group,
                self.link.worker_id,
                {keys.requests: ">"},
                count=capacity,
                block=block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back without the group (a restart that lost data).
            self.group_ensure()
            return 0
        claimed = 0
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                self.generations.start(entry_id, fields)
                claimed += 1
        return claimed

    def reclaim(self) -> int:
        """Take over requests whose worker stopped renewing its claim."""
        if self.capacity() <= 0:
            return 0
        keys = self.link.keys
        # Redis 7 adds a third item (deleted ids); 6.2 returns two.
        response = self.link.redis.xautoclaim(
            keys.requests,
            keys.group,
            self.link.worker_id,
            min_idle_time=int(self.claim_timeout * 1000),
            start_id=self._reclaim_cursor,
            count=self.capacity(),
        )
        # Go on from where the scan stopped next time: a long pending list
        # is covered a page at a time.
        self._reclaim_cursor = str(response[0] or "0-0")
        entries = [(entry_id, fields) for entry_id, fields in response[1] if entry_id]
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream meanwhile
                self.generations.retire(entry_id)
                continue
            logger.warning("Continuing request %s from a worker that stopped", entry_id)
            self.generations.start(entry_id, fields)
        return len(entries)

    def reclaim_orphans(self) -> int:
        """Take over at once the requests of workers whose heartbeat has
        expired (killed, crashed): no need to wait out claim_timeout."""
        if self.capacity() <= 0 or time.monotonic() < self.orphans_after:
            return 0
        client, keys = self.link.redis, self.link.keys
        summary = client.xpending(keys.requests, keys.group)
        taken = 0
        for consumer in summary.get("consumers") or []:
            name = consumer["name"]
            if name == self.link.worker_id or client.exists(keys.heartbeat(name)):
                continue
            capacity = self.capacity()
            if capacity <= 0:
                break
            pending = client.xpending_range(
                keys.requests, keys.group, "-", "+", capacity, consumername=name
            )
            ids = [entry["message_id"] for entry in pending]
            if not ids:
                continue
            # An entry renewed within a heartbeat TTL belongs to a live
            # worker whatever its heartbeat key says.
            claimed = client.xclaim(
                keys.requests, keys.group, self.link.worker_id, int(self.heartbeat_ttl * 1000), ids
            )
            for entry_id, fields in claimed:
                if not entry_id:
                    continue
                if not fields:
                    self.generations.retire(entry_id)
                    continue
                logger.warning("Continuing request %s of stopped worker %s", entry_id, name)
                self.generations.start(entry_id, fields)
                taken += 1
        return taken

    def consumers_prune(self) -> None:
        """Forget consumers of the group that are dead, own nothing and
        have been idle an hour (each worker run is a new consumer)."""
        client, keys = self.link.redis, self.link.keys
        for consumer in client.xinfo_consumers(keys.requests, keys.group):
            name = consumer["name"]
            if (
                int(consumer.get("pending") or 0) == 0
                and int(consumer.get("idle") or 0) > CONSUMER_FORGET_MS
                and name != self.link.worker_id
                and not client.exists(keys.heartbeat(name))
            ):
                client.xgroup_delconsumer(keys.requests, keys.group, name)

    def renew(self) -> None:
        """Reset the idle time of the requests this worker runs."""
        entry_ids = self.generations.entry_ids()
        if entry_ids:
            keys = self.link.keys
            self.link.redis.xclaim(
                keys.requests, keys.group, self.link.worker_id, 0, entry_ids, justid=True
            )
