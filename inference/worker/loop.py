"""``InferenceWorker``: the parts of a worker put together, and its loop.

The loop steps the engines, applies cancel flags, claims requests and
does the periodic housekeeping (versions in service, claim renewal,
takeovers); a thread heartbeats beside it. ``stop`` (SIGTERM) ends
claiming; the worker then drains what it runs and exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from inference.engine_base import EngineBase
from inference.engine_types import OutputFilter
from inference.engines import EngineOptions
from inference.metrics import WorkerMetrics
from inference.worker.claims import Claims
from inference.worker.generations import Generations
from inference.worker.heartbeat import Heartbeat, HeartbeatSender, WorkerState
from inference.worker.keys import Keys
from inference.worker.link import REDIS_DOWN, RedisLink
from inference.worker.recovery import Recovery
from inference.worker.streams import Inflight
from inference.worker.versions import Versions, VersionSpec

logger = logging.getLogger(__name__)


class InferenceWorker:
    """One worker: the callbacks say which versions serve and where
    finished generations go; the rest configures the engines and the
    worker's timing."""

    def __init__(
        self,
        *,
        redis_client: redis.Redis,
        keys: Keys,
        production_version: Callable[[], VersionSpec | None],
        version_lookup: Callable[[int], VersionSpec | None] | None = None,
        extra_versions: Callable[[], list[VersionSpec]] | None = None,
        output_filter_factory: Callable[[dict[str, Any]], OutputFilter | None] | None = None,
        on_finished: Callable[[str, dict[str, Any], str], None] | None = None,
        on_redis_restart: Callable[[list[str]], None] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        slots: int = 32,
        max_context: int = 2048,
        step_token_budget: int = 64,
        speculative_tokens: int = 4,
        speculative_max_batch: int = 4,
        gguf_step_token_budget: int = 256,
        gguf_kv_tokens: int = 4096,
        gguf_kv_max_tokens: int = 0,
        gguf_kv_type: str = "f16",
        threads: int = 0,
        heartbeat_interval: float = 2.0,
        heartbeat_ttl: float = 10.0,
        poll_interval: float = 5.0,
        claim_timeout: float = 30.0,
        drain_timeout: float = 30.0,
        worker_id: str | None = None,
    ) -> None:
        self.worker_id = (
            worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.poll_interval = poll_interval
        self.claim_timeout = claim_timeout
        self.drain_timeout = drain_timeout
        self.slots = slots
        self.started_at = time.time()
        self.stop_event = threading.Event()
        self.metrics = WorkerMetrics(self.worker_id)
        self.link = RedisLink(redis_client, keys, self.worker_id)
        self.heartbeats = HeartbeatSender(
            redis_client,
            keys.heartbeat(self.worker_id),
            build=self.heartbeat_build,
            interval=heartbeat_interval,
            ttl=heartbeat_ttl,
            metrics_key=keys.metrics(self.worker_id) if keys.metrics else None,
            metrics=self._metrics_exposition,
        )
        self.versions = Versions(
            production_version=production_version,
            version_lookup=version_lookup,
            extra_versions=extra_versions,
            device=device,
            dtype=dtype,
            engine_options=EngineOptions(
                slots=slots,
                max_context=max_context,
                step_token_budget=step_token_budget,
                speculative_tokens=speculative_tokens,
                speculative_max_batch=speculative_max_batch,
                gguf_step_token_budget=gguf_step_token_budget,
                gguf_kv_tokens=gguf_kv_tokens,
                gguf_kv_max_tokens=gguf_kv_max_tokens,
                gguf_kv_type=gguf_kv_type,
                threads=threads,
            ),
            on_change=self.heartbeats.beat,
            on_settled=lambda version_id: self.generations.unpark(version_id),
        )
        self.generations = Generations(
            link=self.link,
            versions=self.versions,
            metrics=self.metrics,
            output_filter_factory=output_filter_factory,
            on_finished=on_finished,
        )
        self.claims = Claims(
            link=self.link,
            versions=self.versions,
            generations=self.generations,
            heartbeat_ttl=heartbeat_ttl,
            claim_timeout=claim_timeout,
            stop_event=self.stop_event,
        )
        self.recovery = Recovery(
            link=self.link,
            claims=self.claims,
            generations=self.generations,
            heartbeat_ttl=heartbeat_ttl,
            on_back=self._redis_back,
            on_redis_restart=on_redis_restart,
        )
        self._epoch: str | None = None
        self._last_epoch_check = 0.0
        self._last_sync = 0.0
        self._last_renew = 0.0
        self._last_reclaim = 0.0
        self._last_orphans = 0.0
        self._last_consumers_prune = 0.0

    # What callers watch: state and error (see WorkerState), the version
    # serving new requests, the engines loaded, the generations running.

    @property
    def state(self) -> str:
        return self.versions.state

    @property
    def error(self) -> str:
        return self.versions.error

    @property
    def version(self) -> VersionSpec | None:
        return self.versions.version

    @property
    def engines(self) -> dict[int, EngineBase]:
        return self.versions.engines

    @property
    def inflight(self) -> dict[str, Inflight]:
        return self.generations.inflight

    # --- heartbeat -----------------------------------------------------

    def heartbeat_build(self) -> Heartbeat:
        versions, generations = self.versions, self.generations
        # The state first: a worker takes a version before it says ready.
        state, error = versions.state, versions.error
        version, loaded = versions.version, versions.loaded
        return Heartbeat(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=state,
            error=error,
            model_version_id=version.id if version else None,
            model_version=version.name if version else None,
            loaded_versions=sorted(v.name for v in versions.specs.values()),
            loading_versions=sorted(spec.name for spec, _f in versions.loads.values()),
            device=str(loaded.device) if loaded else None,
            dtype=str(loaded.dtype).removeprefix("torch.") if loaded else None,
            capacity=self.slots,
            running=sum(e.running for e in versions.engines.values()),
            queued=sum(e.queued for e in versions.engines.values()) + generations.parked_count(),
            started_at=self.started_at,
            at=time.time(),
            generations=sorted(generations.inflight) + generations.parked_ids(),
        )

    def _metrics_exposition(self, beat: Heartbeat) -> str:
        self.metrics.load(running=beat.running, waiting=beat.queued)
        return self.metrics.exposition()

    # --- housekeeping --------------------------------------------------

    def _redis_back(self) -> None:
        """Redis answers again: read the versions in service again, and
        beat now, for every heartbeat key may have expired."""
        self._epoch = None
        self._last_sync = 0.0
        self.heartbeats.beat()

    def _epoch_check(self, now: float) -> None:
        """A promotion bumps the serving epoch: sync now, and try again
        versions that failed to load."""
        if self.link.keys.serving_epoch is None or now - self._last_epoch_check < 0.25:
            return
        self._last_epoch_check = now
        epoch = self.link.redis.get(self.link.keys.serving_epoch)
        if epoch != self._epoch:
            if self._epoch is not None or epoch is not None:
                self.versions.failures_forget()
            self._epoch = epoch
            self._last_sync = 0.0

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._epoch_check(now)
        self.versions.loads_collect()
        if now - self._last_sync >= self.poll_interval:
            self._last_sync = now
            self.versions.sync()
            self.versions.release_idle(keep=self.generations.parked)
        if now - self._last_renew >= min(self.heartbeat_interval, self.claim_timeout / 3):
            self._last_renew = now
            self.claims.renew()
        if now - self._last_orphans >= self.heartbeat_interval and not self.stop_event.is_set():
            self._last_orphans = now
            self.claims.reclaim_orphans()
        if now - self._last_consumers_prune >= 600:
            self._last_consumers_prune = now
            self.claims.consumers_prune()
        if now - self._last_reclaim >= self.claim_timeout / 2 and not self.stop_event.is_set():
            self._last_reclaim = now
            self.claims.reclaim()

    # --- the loop ------------------------------------------------------

    def run_once(self, block_ms: int | None = None) -> bool:
        """One iteration of the main loop (tests drive it directly). While
        Redis is away the engine keeps stepping; its events wait."""
        usable = self.recovery.check()
        if usable:
            try:
                self._housekeeping()
                self.generations.cancels_apply()
                self.recovery.restart_recovery()
            except REDIS_DOWN as exc:
                self.link.lost_mark(exc)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.claims.group_ensure()  # a restart not noticed yet
        busy = self.generations.step()
        if not self.link.lost:
            try:
                self.claims.claim(None if busy else block_ms)
            except REDIS_DOWN as exc:
                self.link.lost_mark(exc)
        elif not busy:
            self.stop_event.wait(0.2)
        return busy

    def run(self) -> None:
        """Serve until stop(); then drain and exit."""
        self.claims.group_ensure()
        self.heartbeats.start()
        try:
            while not self.stop_event.is_set():
                try:
                    self.run_once(block_ms=200)
                except REDIS_DOWN as exc:
                    self.link.lost_mark(exc)
                    self.stop_event.wait(0.5)
                except Exception:
                    # A bug must not take the worker down with every stream.
                    logger.exception("Inference worker loop failed; continuing")
                    self.stop_event.wait(1.0)
            self._drain()
        finally:
            self.versions.state = WorkerState.STOPPING
            self.stop_event.set()
            self.heartbeats.stop()
            self.versions.close()
            self.heartbeats.clear()
            logger.info("Inference worker %s stopped", self.worker_id)

    def _drain(self) -> None:
        """Finish running requests within drain_timeout; leave the rest
        pending so another worker continues them."""
        self.versions.state = WorkerState.STOPPING
        generations = self.generations
        deadline = time.monotonic() + self.drain_timeout
        while generations.inflight and time.monotonic() < deadline:
            try:
                if self.recovery.check():
                    generations.cancels_apply()
                    if time.monotonic() - self._last_renew >= self.heartbeat_interval:
                        self._last_renew = time.monotonic()
                        self.claims.renew()
            except REDIS_DOWN as exc:
                self.link.lost_mark(exc)
            if not generations.step():
                break
        while generations.backlog and time.monotonic() < deadline and not self.recovery.check():
            self.stop_event.wait(0.5)
        if generations.backlog:
            logger.error(
                "Redis stayed away: %d stream(s) left unwritten", len(generations.backlog)
            )
        if generations.inflight:
            logger.warning("Leaving %d request(s) to other workers", len(generations.inflight))

    def stop(self) -> None:
        self.stop_event.set()
