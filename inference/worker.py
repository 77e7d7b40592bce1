"""The inference worker: a Redis transport around the engine.

It claims generation requests from a Redis stream consumer group (several
workers share one Redis), runs them in the engine of the model version in
production, appends every piece of text to that generation's own stream
with a sequence number, checks cancel flags every step and heartbeats its
state with a TTL.

- Crash safety: a worker renews its claim on the requests it is running;
  one whose heartbeat expires (killed) loses them to another worker at
  once, and one that stops renewing (frozen) after ``claim_timeout``
  seconds; the other worker continues the answer from the text already
  streamed, with the sequence numbers following on. A
  request that cannot be continued ends with an error event.
- Redis outages: events are numbered and logged by the worker before they
  are written, so a failed write loses nothing. While Redis is away the
  engine keeps generating; once it answers again (or comes back as a new
  server, noticed by its run id) the worker recreates its consumer group,
  rewrites every event a stream lacks, and completes what it held back.
  After a restart that lost data, one worker hands the generations whose
  request vanished to ``on_redis_restart`` (they end with an error rather
  than wait forever).
- SIGTERM: stop claiming, finish what runs within ``drain_timeout``, and
  leave the rest pending for another worker to continue.
- Promotion: the worker loads the new production version (and any canary
  version) beside the old one in a background thread, so streams keep
  flowing while it loads; new requests go to the new engine, running ones
  finish on the old one, which is freed once it is idle. A request for a
  version that is not loaded yet waits for it, still claimed by this
  worker. A promotion bumps a Redis counter that workers check several
  times a second; they also poll the database.
- A model folder that cannot be loaded leaves the worker up and
  reporting ``error``.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_done
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from inference.engine import Engine, Event, OutputFilter, RequestError
from inference.loading import LoadedModel, ModelLoadError, model_load
from inference.metrics import WorkerMetrics
from inference.protocol import (
    FINAL_TYPES,
    SamplingError,
    SamplingParams,
    event_decode,
    event_encode,
    seq_of,
)

logger = logging.getLogger(__name__)

#: What a Redis outage raises; anything else from Redis is a bug or a reply.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
#: Seconds between checks that Redis is the same server (its run id).
RUN_ID_CHECK_S = 1.0
#: How long a dead consumer with nothing pending stays in the group.
CONSUMER_FORGET_MS = 3600 * 1000
#: Seconds after a Redis restart before lost requests are looked for, at
#: least; workers also list what they run in their heartbeats.
RESTART_SETTLE_S = 5.0

#: Append events to a generation's stream only if its last entry is the one
#: the writer last wrote (ARGV[1]), or rewrite the whole stream (ARGV[2] =
#: "rewrite") if its last entry is still ARGV[1]; all or nothing. Returns
#: {"ok"} or {"moved", top}. ARGV[3] is the TTL; then seq, event, writer.
_STREAM_WRITE = """
local top = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then top = tonumber(string.match(last[1][1], '%-(%d+)$')) end
if top ~= tonumber(ARGV[1]) then return {'moved', top} end
if ARGV[2] == 'rewrite' then redis.call('DEL', KEYS[1]) end
for i = 4, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'event', ARGV[i + 1], 'w', ARGV[i + 2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {'ok', 0}
"""


@dataclass(frozen=True)
class VersionSpec:
    """What the worker needs to know of a model version."""

    id: int
    name: str
    path: Path


@dataclass(frozen=True)
class Keys:
    """Redis key names (see ``inference.connection``)."""

    heartbeat: Callable[[str], str]
    requests: str
    generation: Callable[[str], str]
    cancel: Callable[[str], str]
    metrics: Callable[[str], str] | None = None
    serving_epoch: str | None = None
    group: str = "workers"
    generation_ttl_s: int = 3600
    generation_idle_ttl_s: int = 24 * 3600


class WorkerState:
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"
    NO_MODEL = "no_model"
    STOPPING = "stopping"


@dataclass
class _Inflight:
    generation_id: str
    entry_id: str
    version: VersionSpec
    next_seq: int
    text: list[str] = field(default_factory=list)
    position: int | None = None
    output_filter: Any = None
    #: This worker's mark on the events it writes (field ``w``).
    writer: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: Every event of the stream, earlier workers' included: (seq, fields).
    log: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: The highest sequence number known to be in Redis.
    published: int = 0
    #: The first sequence number this worker writes.
    first_own: int = 1

    @property
    def unpublished(self) -> list[tuple[int, dict[str, str]]]:
        start = bisect.bisect_right(self.log, self.published, key=lambda entry: entry[0])
        return self.log[start:]

    @property
    def final_logged(self) -> bool:
        if not self.log:
            return False
        return json.loads(self.log[-1][1]["event"]).get("type") in FINAL_TYPES


class InferenceWorker:
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
        heartbeat_interval: float = 2.0,
        heartbeat_ttl: float = 10.0,
        poll_interval: float = 5.0,
        claim_timeout: float = 30.0,
        drain_timeout: float = 30.0,
        worker_id: str | None = None,
    ) -> None:
        # redis-py's stubs type replies as unions of every reply shape.
        self.redis: Any = redis_client
        self.keys = keys
        self.worker_id = (
            worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self._production_version = production_version
        self._version_lookup = version_lookup
        self._extra_versions = extra_versions
        self._output_filter_factory = output_filter_factory
        self._on_finished = on_finished
        self.device, self.dtype = device, dtype
        self.engine_options: dict[str, Any] = {
            "slots": slots,
            "max_context": max_context,
            "step_token_budget": step_token_budget,
            "speculative_tokens": speculative_tokens,
            "speculative_max_batch": speculative_max_batch,
        }
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.poll_interval = poll_interval
        self.claim_timeout = claim_timeout
        self.drain_timeout = drain_timeout
        self.state = WorkerState.STARTING
        self.error = ""
        self.version: VersionSpec | None = None  # production, serving new requests
        self.engines: dict[int, Engine] = {}
        self.versions: dict[int, VersionSpec] = {}
        self.inflight: dict[str, _Inflight] = {}
        self._failed_version: VersionSpec | None = None
        self._wanted: VersionSpec | None = None
        self._wanted_extra: set[int] = set()
        # Loads run one at a time beside the serving loop.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._loads: dict[int, tuple[VersionSpec, Future[Engine]]] = {}
        self._load_errors: dict[int, str] = {}
        # Requests claimed for a version still loading: (entry id, fields).
        self._parked: dict[int, list[tuple[str, dict[str, str]]]] = {}
        self._epoch: str | None = None
        self._last_epoch_check = 0.0
        self.stop_event = threading.Event()
        self._beat_stop = threading.Event()
        self.started_at = time.time()
        self.metrics = WorkerMetrics(self.worker_id)
        self._last_sync = 0.0
        self._last_renew = 0.0
        self._last_reclaim = 0.0
        self._last_orphans = 0.0
        self._reclaim_cursor = "0-0"
        # No takeover of other workers' requests until their heartbeats
        # have had time to come back after an outage.
        self._orphans_after = 0.0
        self._last_consumers_prune = 0.0
        self.on_redis_restart = on_redis_restart
        self._script = self.redis.register_script(_STREAM_WRITE)
        self._probe: Any = None
        # Redis outages: whether the last call failed, the server's run id,
        # finished generations whose events are not all written yet, and
        # requests to acknowledge once Redis answers.
        self._redis_lost = False
        self._run_id: str | None = None
        self._last_run_id_check = 0.0
        self._backlog: dict[str, _Inflight] = {}
        self._unstarted: list[tuple[str, dict[str, str]]] = []
        self._retire_later: list[str] = []
        self._restart_recovery_at: float | None = None
        self._restart_run_id: str | None = None
        self._heartbeat_failing = False

    # --- heartbeat -----------------------------------------------------

    @property
    def loaded(self) -> LoadedModel | None:
        engine = self.engines.get(self.version.id) if self.version else None
        return engine.loaded if engine else None

    def heartbeat_payload(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": self.state,
            "error": self.error,
            "model_version_id": self.version.id if self.version else None,
            "model_version": self.version.name if self.version else None,
            "loaded_versions": sorted(v.name for v in self.versions.values()),
            "loading_versions": sorted(spec.name for spec, _f in self._loads.values()),
            "device": str(loaded.device) if loaded else None,
            "dtype": str(loaded.dtype).removeprefix("torch.") if loaded else None,
            "capacity": self.engine_options["slots"],
            "running": sum(e.running for e in self.engines.values()),
            "queued": sum(e.queued for e in self.engines.values())
            + sum(len(p) for p in self._parked.values()),
            "started_at": self.started_at,
            "at": time.time(),
            # What this worker holds, so a recovery after a Redis restart
            # does not take it for lost.
            "generations": sorted(self.inflight) + self._parked_ids(),
        }

    def _parked_ids(self) -> list[str]:
        ids = []
        for parked in list(self._parked.values()):
            for _entry_id, fields in parked:
                try:
                    ids.append(str(json.loads(fields["payload"])["id"]))
                except (KeyError, TypeError, ValueError):
                    continue
        return ids

    def heartbeat(self) -> None:
        payload = self.heartbeat_payload()
        ttl_ms = int(self.heartbeat_ttl * 1000)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.keys.heartbeat(self.worker_id), json.dumps(payload), px=ttl_ms)
            if self.keys.metrics is not None:
                self.metrics.load(running=payload["running"], waiting=payload["queued"])
                pipe.set(self.keys.metrics(self.worker_id), self.metrics.exposition(), px=ttl_ms)
            pipe.execute()
        except redis.RedisError as exc:
            if not self._heartbeat_failing:
                logger.warning("Heartbeat to Redis failed: %s", exc)
            self._heartbeat_failing = True
        else:
            self._heartbeat_failing = False

    def _heartbeat_loop(self) -> None:
        # Beats on through the drain after stop(): a worker finishing its
        # streams must not look dead to the others.
        while not self._beat_stop.wait(self.heartbeat_interval):
            self.heartbeat()

    def heartbeat_clear(self) -> None:
        try:
            self.redis.delete(self.keys.heartbeat(self.worker_id))
            if self.keys.metrics is not None:
                self.redis.delete(self.keys.metrics(self.worker_id))
        except redis.RedisError as exc:
            logger.warning("Could not remove the heartbeat: %s", exc)

    def _set_state(self, state: str, error: str) -> None:
        self.state, self.error = state, error
        self.heartbeat()

    # --- models --------------------------------------------------------

    def _engine_build(self, spec: VersionSpec) -> Engine:
        loaded = model_load(spec.path, device=self.device, dtype=self.dtype)
        return Engine(loaded, **self.engine_options)

    def _load_start(self, spec: VersionSpec) -> None:
        """Load a version in the background unless loaded, loading or
        known to fail."""
        if spec.id in self.engines or spec.id in self._loads or spec.id in self._load_errors:
            return
        logger.info("Loading model version %s from %s", spec.name, spec.path)
        self._loads[spec.id] = (spec, self._loader.submit(self._engine_build, spec))
        self.heartbeat()

    def loads_collect(self, wait: bool = False) -> None:
        """Take in finished loads: serve a loaded production version,
        start the requests that waited for a version, fail them if it
        cannot be loaded."""
        for version_id, (spec, future) in list(self._loads.items()):
            if wait:
                wait_done([future])
            if not future.done():
                continue
            del self._loads[version_id]
            try:
                engine = future.result()
            except Exception as exc:
                message = str(exc) if isinstance(exc, ModelLoadError) else repr(exc)
                logger.error("Model version %s cannot be loaded: %s", spec.name, message)
                self._load_errors[version_id] = message
                self._load_failed(spec, message)
                continue
            self.engines[version_id] = engine
            self.versions[version_id] = spec
            logger.info("Loaded model version %s", spec.name)
            if self._wanted is not None and self._wanted.id == version_id:
                self._serve(spec)
            for entry_id, fields in self._parked.pop(version_id, []):
                self._start(entry_id, fields)
        if not self._loads and self.state == WorkerState.LOADING and self.version:
            self._set_state(WorkerState.READY, "")

    def _load_failed(self, spec: VersionSpec, message: str) -> None:
        if self._wanted is not None and self._wanted.id == spec.id:
            self._failed_version = spec
            if self.version is None or self.version.id not in self.engines:
                self.version = spec
                self._set_state(WorkerState.ERROR, message)
            else:
                # Keep serving the old version rather than nothing.
                self._set_state(WorkerState.READY, f"cannot load {spec.name}: {message}")
        for entry_id, fields in self._parked.pop(spec.id, []):
            self._start(entry_id, fields)  # ends with an error event

    def _serve(self, spec: VersionSpec) -> None:
        previous = self.version
        self.version, self._failed_version = spec, None
        self._set_state(WorkerState.READY, "")
        logger.info(
            "Serving model version %s from %s%s",
            spec.name,
            spec.path,
            f" (was {previous.name})" if previous and previous != spec else "",
        )

    def model_sync(self) -> None:
        """Serve the production version, loading it (and the canary)
        beside what runs."""
        try:
            wanted = self._production_version()
            extra = self._extra_versions() if self._extra_versions else []
        except Exception:
            logger.exception("Could not read the model versions in service")
            return
        self._wanted = wanted
        self._wanted_extra = {spec.id for spec in extra}
        for spec in extra:
            self._load_start(spec)
        if wanted is None:
            if not self.engines:
                self._set_state(WorkerState.NO_MODEL, "no model version is in production")
            return
        if self.version == wanted and wanted.id in self.engines:
            return
        if wanted == self._failed_version or wanted.id in self._load_errors:
            if self._failed_version != wanted:
                self._load_failed(wanted, self._load_errors[wanted.id])
            return  # already reported; wait for a promotion to change it
        if wanted.id in self.engines:
            self._serve(wanted)
            return
        if self.version is None or self.version.id not in self.engines:
            self._set_state(WorkerState.LOADING, "")
        self._load_start(wanted)

    def _engines_release_idle(self) -> None:
        """Free engines of versions no longer in service once idle."""
        keep = set(self._wanted_extra) | set(self._parked)
        if self.version:
            keep.add(self.version.id)
        for version_id in list(self.engines):
            if version_id in keep:
                continue
            if not self.engines[version_id].has_work():
                logger.info("Releasing model version %s", self.versions[version_id].name)
                del self.engines[version_id]
                del self.versions[version_id]

    def _version_for(self, version_id: int | None) -> VersionSpec:
        """The version a request asks for (None: production)."""
        if version_id is None or (self.version and version_id == self.version.id):
            if self.version is None or self.version.id not in self.engines:
                raise RequestError("no model version is loaded")
            return self.version
        if version_id in self.versions:
            return self.versions[version_id]
        if version_id in self._loads:
            return self._loads[version_id][0]
        spec = self._version_lookup(version_id) if self._version_lookup else None
        if spec is None:
            raise RequestError(f"unknown model version {version_id}")
        return spec

    # --- requests ------------------------------------------------------

    def group_ensure(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.requests, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _capacity(self) -> int:
        """How many more requests to claim: fill free slots, queue few."""
        if self.version is None or self.version.id not in self.engines:
            return 0
        engine = self.engines[self.version.id]
        parked = sum(len(p) for p in self._parked.values()) + len(self._unstarted)
        return max(
            engine.slots + max(engine.slots // 4, 1) - engine.running - engine.queued - parked, 0
        )

    def claim(self, block_ms: int | None) -> int:
        capacity = self._capacity()
        if capacity <= 0 or self.stop_event.is_set():
            if block_ms:
                self.stop_event.wait(block_ms / 1000)
            return 0
        try:
            response = self.redis.xreadgroup(
                self.keys.group,
                self.worker_id,
                {self.keys.requests: ">"},
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
                self._start(entry_id, fields)
                claimed += 1
        return claimed

    def reclaim(self) -> int:
        """Take over requests whose worker stopped renewing its claim."""
        if self._capacity() <= 0:
            return 0
        # Redis 7 adds a third item (deleted ids); 6.2 returns two.
        response = self.redis.xautoclaim(
            self.keys.requests,
            self.keys.group,
            self.worker_id,
            min_idle_time=int(self.claim_timeout * 1000),
            start_id=self._reclaim_cursor,
            count=self._capacity(),
        )
        # Go on from where the scan stopped next time: a long pending list
        # is covered a page at a time.
        self._reclaim_cursor = str(response[0] or "0-0")
        entries = [(entry_id, fields) for entry_id, fields in response[1] if entry_id]
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream meanwhile
                self._retire(entry_id)
                continue
            logger.warning("Continuing request %s from a worker that stopped", entry_id)
            self._start(entry_id, fields)
        return len(entries)

    def reclaim_orphans(self) -> int:
        """Take over at once the requests of workers whose heartbeat has
        expired (killed, crashed): no need to wait out claim_timeout."""
        if self._capacity() <= 0 or time.monotonic() < self._orphans_after:
            return 0
        summary = self.redis.xpending(self.keys.requests, self.keys.group)
        taken = 0
        for consumer in summary.get("consumers") or []:
            name = consumer["name"]
            if name == self.worker_id or self.redis.exists(self.keys.heartbeat(name)):
                continue
            capacity = self._capacity()
            if capacity <= 0:
                break
            pending = self.redis.xpending_range(
                self.keys.requests, self.keys.group, "-", "+", capacity, consumername=name
            )
            ids = [entry["message_id"] for entry in pending]
            if not ids:
                continue
            # An entry renewed within a heartbeat TTL belongs to a live
            # worker whatever its heartbeat key says.
            claimed = self.redis.xclaim(
                self.keys.requests,
                self.keys.group,
                self.worker_id,
                int(self.heartbeat_ttl * 1000),
                ids,
            )
            for entry_id, fields in claimed:
                if not entry_id:
                    continue
                if not fields:
                    self._retire(entry_id)
                    continue
                logger.warning("Continuing request %s of stopped worker %s", entry_id, name)
                self._start(entry_id, fields)
                taken += 1
        return taken

    def consumers_prune(self) -> None:
        """Forget consumers of the group that are dead, own nothing and
        have been idle an hour (each worker run is a new consumer)."""
        for consumer in self.redis.xinfo_consumers(self.keys.requests, self.keys.group):
            name = consumer["name"]
            if (
                int(consumer.get("pending") or 0) == 0
                and int(consumer.get("idle") or 0) > CONSUMER_FORGET_MS
                and name != self.worker_id
                and not self.redis.exists(self.keys.heartbeat(name))
            ):
                self.redis.xgroup_delconsumer(self.keys.requests, self.keys.group, name)

    def renew(self) -> None:
        """Reset the idle time of the requests this worker runs."""
        entry_ids = [item.entry_id for item in self.inflight.values()]
        entry_ids += [entry_id for parked in self._parked.values() for entry_id, _f in parked]
        entry_ids += [entry_id for entry_id, _fields in self._unstarted]
        if entry_ids:
            self.redis.xclaim(
                self.keys.requests, self.keys.group, self.worker_id, 0, entry_ids, justid=True
            )

    def _start(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            payload = json.loads(fields["payload"])
            generation_id = str(payload["id"])
        except (KeyError, TypeError, ValueError):
            logger.error("Dropping malformed request %s", entry_id)
            self._retire(entry_id)
            return
        version: VersionSpec | None = None
        refusal: RequestError | None = None
        try:
            version = self._version_for(payload.get("model_version_id"))
        except RequestError as exc:
            refusal = exc
        if version is not None:
            load_error = self._load_errors.get(version.id)
            if load_error is not None:
                refusal = RequestError(
                    f"model version {version.name} cannot be loaded: {load_error}"
                )
            elif version.id not in self.engines:
                # Wait for the version, still claimed by this worker.
                self._parked.setdefault(version.id, []).append((entry_id, fields))
                self._load_start(version)
                return
        gen_key = self.keys.generation(generation_id)
        # Continue after what an earlier worker already streamed, if any.
        try:
            previous = self.redis.xrange(gen_key, "-", "+")
        except REDIS_DOWN as exc:
            # Still claimed by this worker (renewed): started once Redis is back.
            self._redis_lost_mark(exc)
            self._unstarted.append((entry_id, fields))
            return
        events = [event_decode(eid, f) for eid, f in previous]
        if events and events[-1].final:
            self._retire(entry_id)
            return
        streamed = "".join(e.text for e in events)
        next_seq = (events[-1].seq + 1) if events else 1
        log = [(seq_of(eid), dict(f)) for eid, f in previous]
        try:
            if refusal is not None:
                raise refusal
            assert version is not None
            params = SamplingParams.from_dict(payload.get("params"))
            engine = self.engines[version.id]
            prompt = engine.prompt_ids(payload.get("messages"))
            if streamed:
                prompt += engine.tokenizer.encode(streamed, add_special_tokens=False)
                produced = max(len(engine.tokenizer.encode(streamed, add_special_tokens=False)), 1)
                params = dataclasses.replace(
                    params, max_new_tokens=max(params.max_new_tokens - produced, 1)
                )
            output_filter = (
                self._output_filter_factory(payload) if self._output_filter_factory else None
            )
            item = _Inflight(
                generation_id,
                entry_id,
                version,
                next_seq,
                text=[streamed],
                output_filter=output_filter,
                log=log,
                published=next_seq - 1,
                first_own=next_seq,
            )
            self.inflight[generation_id] = item
            engine.submit(generation_id, prompt=prompt, params=params, output_filter=output_filter)
        except Exception as failure:
            # Whatever the request holds (bad parameters, an unknown version,
            # a conversation the chat template rejects), it ends here with
            # an error event rather than coming back forever.
            if not isinstance(failure, RequestError | SamplingError | TypeError):
                logger.exception("Request %s failed to start", generation_id)
            self.inflight.pop(generation_id, None)
            item = _Inflight(
                generation_id,
                entry_id,
                version or _NO_VERSION,
                next_seq,
                log=log,
                published=next_seq - 1,
                first_own=next_seq,
            )
            final = {"finish_reason": "error", "error": str(failure)}
            code = getattr(failure, "code", "")
            if code:
                # Lets the API answer a prompt too long for the context
                # with a 400 before it sends anything.
                final["code"] = code
            self._publish(item, "error", **final)
            self._complete(item, final)
            return
        self._publish(item, "start", model_version=version.name, worker=self.worker_id)

    def _publish(self, item: _Inflight, event_type: str, **data: Any) -> bool:
        """Log one event with the next sequence number and write it (with
        any the stream still lacks). Return False when another worker has
        taken the generation over."""
        fields = event_encode(event_type, **data)
        fields["w"] = item.writer
        item.log.append((item.next_seq, fields))
        item.next_seq += 1
        return self._flush(item)

    def _flush(self, item: _Inflight) -> bool:
        """Write the logged events Redis lacks, in order. While Redis is
        away they wait in the log; return False only when another worker
        owns the stream."""
        pending = item.unpublished
        if not pending or self._redis_lost:
            return True
        try:
            moved = self._stream_write(item, pending, expected=item.published)
            if moved is not None:
                # The stream is not where this worker left it: another
                # worker wrote to it, or Redis lost or rewrote its tail.
                return self._resync(item) >= 0
        except redis.ResponseError as exc:
            # Out of memory, read-only, a failed append-only file: an outage
            # as far as this worker is concerned; the events wait.
            self._redis_lost_mark(exc)
            return True
        except REDIS_DOWN as exc:
            self._redis_lost_mark(exc)
            return True
        item.published = pending[-1][0]
        return True

    def _stream_write(
        self,
        item: _Inflight,
        entries: list[tuple[int, dict[str, str]]],
        *,
        expected: int,
        rewrite: bool = False,
    ) -> int | None:
        """Write entries if the stream still ends at expected (all or
        nothing); return None, or the sequence number it ends at."""
        ttl = self.keys.generation_ttl_s if item.final_logged else self.keys.generation_idle_ttl_s
        args: list[Any] = [expected, "rewrite" if rewrite else "append", ttl]
        for seq, fields in entries:
            args += [seq, fields["event"], fields.get("w", "")]
        status, top = self._script(keys=[self.keys.generation(item.generation_id)], args=args)
        return None if status == "ok" else int(top)

    def _deliver(self, event: Event) -> None:
        item = self.inflight.get(event.request_id)
        if item is None:
            return
        if event.text:
            item.text.append(event.text)
            if not self._publish(item, "text", text=event.text):
                # Another worker continues this generation: let it.
                self.inflight.pop(event.request_id, None)
                self.engines[item.version.id].cancel(event.request_id)
                return
        if not event.finished:
            return
        usage = {
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
        }
        final: dict[str, Any]
        if event.error:
            final = {"finish_reason": "error", "error": event.error}
            owned = self._publish(item, "error", **final)
        else:
            final = {
                "finish_reason": event.finish_reason,
                "usage": usage,
                "timings": event.timings,
                "model_version": item.version.name,
                "model_version_id": item.version.id,
            }
            report = getattr(item.output_filter, "report", None)
            filtered = report() if report is not None else {}
            if filtered.get("notice"):
                final["notice"] = filtered["notice"]
            owned = self._publish(item, "done", **final)
            if filtered.get("hits"):
                # Kept out of the stream that clients read: excerpts quote
                # the filtered text.
                final = {**final, "filter_hits": filtered["hits"]}
        self.inflight.pop(event.request_id, None)
        if not owned:
            # Another worker runs it now: it acknowledges and stores it.
            return
        self.metrics.finished(
            finish_reason=final["finish_reason"],
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            timings=event.timings,
            gaps=event.token_gaps or (),
        )
        self._complete(item, final)

    def _retire(self, entry_id: str) -> None:
        """Acknowledge a request and remove it: the stream holds only
        unfinished work. While Redis is away, do it once it is back."""
        if self._redis_lost:
            self._retire_later.append(entry_id)
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(self.keys.requests, self.keys.group, entry_id)
            pipe.xdel(self.keys.requests, entry_id)
            pipe.execute()
        except REDIS_DOWN as exc:
            self._redis_lost_mark(exc)
            self._retire_later.append(entry_id)

    def _complete(self, item: _Inflight, final: dict[str, Any]) -> None:
        if item.unpublished:
            # Written once Redis is back, with the request acknowledged then.
            self._backlog[item.generation_id] = item
        self._retire(item.entry_id)
        if not self._redis_lost:
            try:
                self.redis.delete(self.keys.cancel(item.generation_id))
            except REDIS_DOWN as exc:
                self._redis_lost_mark(exc)
        if self._on_finished is not None:
            try:
                self._on_finished(item.generation_id, final, "".join(item.text))
            except Exception:
                logger.exception("Storing generation %s failed", item.generation_id)

    def cancels_apply(self) -> None:
        ids = list(self.inflight)
        if not ids:
            return
        flags = self.redis.mget([self.keys.cancel(i) for i in ids])
        for generation_id, flag in zip(ids, flags, strict=True):
            if flag is not None:
                item = self.inflight[generation_id]
                self.engines[item.version.id].cancel(generation_id)

    def _positions_publish(self) -> None:
        for engine in self.engines.values():
            for position, waiting in enumerate(engine.waiting, start=1):
                item = self.inflight.get(waiting.id)
                if item is not None and item.position != position:
                    item.position = position
                    self._publish(item, "queued", position=position)

    def step(self) -> bool:
        """One engine step for every engine with work; False when idle."""
        busy = False
        for engine in list(self.engines.values()):
            if engine.has_work():
                busy = True
                for event in engine.step():
                    self._deliver(event)
        if busy:
            self._positions_publish()
        return busy

    # --- Redis outages ----------------------------------------------------

    def _redis_lost_mark(self, exc: BaseException) -> None:
        if not self._redis_lost:
            logger.error("Redis unreachable; holding events until it is back: %s", exc)
        self._redis_lost = True

    def redis_check(self) -> bool:
        """Notice an outage ending or a new Redis server (its run id moved)
        and recover; return whether Redis is usable now."""
        now = time.monotonic()
        if not self._redis_lost and now - self._last_run_id_check < RUN_ID_CHECK_S:
            return True
        self._last_run_id_check = now
        try:
            # While Redis is away, probe without the client's retries so
            # the engine keeps stepping between probes.
            client = self._probe_client() if self._redis_lost else self.redis
            run_id = str(client.info("server").get("run_id", ""))
        except REDIS_DOWN as exc:
            self._redis_lost_mark(exc)
            return False
        restarted = self._run_id is not None and run_id != self._run_id
        if self._redis_lost or restarted:
            try:
                self._recover(restarted=restarted, run_id=run_id)
            except REDIS_DOWN as exc:
                self._redis_lost_mark(exc)
                return False
        self._run_id = run_id
        return True

    def _probe_client(self) -> Any:
        if self._probe is None:
            pool = self.redis.connection_pool
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
        self._redis_lost = False
        self.group_ensure()
        items = [*self.inflight.values(), *self._backlog.values()]
        rewritten = 0
        for item in items:
            rewritten += max(self._resync(item), 0)
        while self._retire_later:
            self._retire(self._retire_later.pop())
            if self._redis_lost:
                raise redis.ConnectionError("Redis went away again")
        self._backlog = {g: i for g, i in self._backlog.items() if i.unpublished}
        unstarted, self._unstarted = self._unstarted, []
        for entry_id, fields in unstarted:
            self._start(entry_id, fields)
        if self._redis_lost:
            raise redis.ConnectionError("Redis went away again")
        self._epoch = None
        self._last_sync = 0.0
        # Beat now, and let the other workers beat before taking over
        # anything of theirs: every heartbeat key may have expired.
        self.heartbeat()
        self._orphans_after = time.monotonic() + self.heartbeat_ttl
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

    def _resync(self, item: _Inflight) -> int:
        """Rewrite the events of item's stream that Redis lacks; drop the
        item when another worker has written past it. Return how many."""
        key = self.keys.generation(item.generation_id)
        last = self.redis.xrevrange(key, "+", "-", count=1)
        last_seq = seq_of(last[0][0]) if last else 0
        foreign = bool(last) and last[0][1].get("w") != item.writer
        foreign_final = foreign and event_decode(*last[0]).final
        taken = foreign and (last_seq >= item.first_own or foreign_final)
        if last_seq >= item.next_seq or taken:
            logger.warning("Generation %s continued elsewhere meanwhile", item.generation_id)
            self._drop(item)
            return -1
        whole = last_seq == 0 or int(self.redis.xlen(key)) == last_seq
        if whole:
            item.published = last_seq
            entries, rewrite = item.unpublished, False
        else:
            # A hole (Redis lost entries under later ones): write the whole
            # stream again from the log, which holds every event.
            entries, rewrite = item.log, True
        if not entries:
            return 0
        moved = self._stream_write(item, entries, expected=last_seq, rewrite=rewrite)
        if moved is not None:
            return self._resync(item)  # it moved again meanwhile
        item.published = entries[-1][0]
        return len(entries)

    def _drop(self, item: _Inflight) -> None:
        self._backlog.pop(item.generation_id, None)
        if item.entry_id in self._retire_later:
            self._retire_later.remove(item.entry_id)
        if self.inflight.pop(item.generation_id, None) is not None:
            engine = self.engines.get(item.version.id)
            if engine is not None:
                engine.cancel(item.generation_id)

    def _restart_recovery(self) -> None:
        """After a Redis restart, once every worker had time to rewrite its
        streams, let one worker hand on the requests that were lost."""
        if self._restart_recovery_at is None or time.monotonic() < self._restart_recovery_at:
            return
        self._restart_recovery_at = None
        if self.on_redis_restart is None:
            return
        lock = self.keys.requests + f":recovered:{self._restart_run_id}"
        if not self.redis.set(lock, self.worker_id, nx=True, ex=3600):
            return  # another worker does it
        try:
            held: set[str] = set()
            for _eid, fields in self.redis.xrange(self.keys.requests, "-", "+"):
                try:
                    held.add(str(json.loads(fields["payload"])["id"]))
                except (KeyError, TypeError, ValueError):
                    continue
            for key in self.redis.scan_iter(match=self.keys.heartbeat("*"), count=200):
                beat = self.redis.get(key)
                if beat:
                    held.update(str(g) for g in json.loads(beat).get("generations") or [])
            self.on_redis_restart(sorted(held))
        except Exception:
            logger.exception("Handing on requests lost in a Redis restart failed")
            self.redis.delete(lock)  # let the next worker that notices retry

    # --- lifecycle -----------------------------------------------------

    def _epoch_check(self, now: float) -> None:
        """A promotion bumps the serving epoch: sync now, and try again
        versions that failed to load."""
        if self.keys.serving_epoch is None or now - self._last_epoch_check < 0.25:
            return
        self._last_epoch_check = now
        epoch = self.redis.get(self.keys.serving_epoch)
        if epoch != self._epoch:
            if self._epoch is not None or epoch is not None:
                self._load_errors.clear()
                self._failed_version = None
            self._epoch = epoch
            self._last_sync = 0.0

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._epoch_check(now)
        self.loads_collect()
        if now - self._last_sync >= self.poll_interval:
            self._last_sync = now
            self.model_sync()
            self._engines_release_idle()
        if now - self._last_renew >= min(self.heartbeat_interval, self.claim_timeout / 3):
            self._last_renew = now
            self.renew()
        if now - self._last_orphans >= self.heartbeat_interval and not self.stop_event.is_set():
            self._last_orphans = now
            self.reclaim_orphans()
        if now - self._last_consumers_prune >= 600:
            self._last_consumers_prune = now
            self.consumers_prune()
        if now - self._last_reclaim >= self.claim_timeout / 2 and not self.stop_event.is_set():
            self._last_reclaim = now
            self.reclaim()

    def run_once(self, block_ms: int | None = None) -> bool:
        """One iteration of the main loop (tests drive it directly). While
        Redis is away the engine keeps stepping; its events wait."""
        usable = self.redis_check()
        if usable:
            try:
                self._housekeeping()
                self.cancels_apply()
                self._restart_recovery()
            except REDIS_DOWN as exc:
                self._redis_lost_mark(exc)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.group_ensure()  # a restart not noticed yet
        busy = self.step()
        if not self._redis_lost:
            try:
                self.claim(None if busy else block_ms)
            except REDIS_DOWN as exc:
                self._redis_lost_mark(exc)
        elif not busy:
            self.stop_event.wait(0.2)
        return busy

    def run(self) -> None:
        """Serve until stop(); then drain and exit."""
        self.group_ensure()
        self.heartbeat()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stop_event.is_set():
                try:
                    self.run_once(block_ms=200)
                except REDIS_DOWN as exc:
                    self._redis_lost_mark(exc)
                    self.stop_event.wait(0.5)
                except Exception:
                    # A bug must not take the worker down with every stream.
                    logger.exception("Inference worker loop failed; continuing")
                    self.stop_event.wait(1.0)
            self._drain()
        finally:
            self.state = WorkerState.STOPPING
            self.stop_event.set()
            self._beat_stop.set()
            beat.join(timeout=self.heartbeat_interval + 1)
            # A load in progress finishes; none is left running behind.
            self._loader.shutdown(wait=True, cancel_futures=True)
            self.heartbeat_clear()
            logger.info("Inference worker %s stopped", self.worker_id)

    def _drain(self) -> None:
        """Finish running requests within drain_timeout; leave the rest
        pending so another worker continues them."""
        self.state = WorkerState.STOPPING
        deadline = time.monotonic() + self.drain_timeout
        while self.inflight and time.monotonic() < deadline:
            try:
                if self.redis_check():
                    self.cancels_apply()
                    if time.monotonic() - self._last_renew >= self.heartbeat_interval:
                        self._last_renew = time.monotonic()
                        self.renew()
            except REDIS_DOWN as exc:
                self._redis_lost_mark(exc)
            if not self.step():
                break
        while self._backlog and time.monotonic() < deadline and not self.redis_check():
            self.stop_event.wait(0.5)
        if self._backlog:
            logger.error("Redis stayed away: %d stream(s) left unwritten", len(self._backlog))
        if self.inflight:
            logger.warning("Leaving %d request(s) to other workers", len(self.inflight))

    def stop(self) -> None:
        self.stop_event.set()


_NO_VERSION = VersionSpec(id=0, name="", path=Path())
