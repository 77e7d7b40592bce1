"""Worker heartbeats: the record each worker stores in Redis with a TTL,
its sender, and the one reader that every consumer uses (health checks,
the dashboard, the count of live workers, restart recovery).

Neither torch nor Django is imported here, so a web process reads
heartbeats without loading either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import redis

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class _Record(Protocol):
    def to_json(self) -> str: ...


_R = TypeVar("_R", bound=_Record)


class WorkerState:
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"
    NO_MODEL = "no_model"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Heartbeat:
    """What one worker reports of itself. A field the stored record lacks
    reads as its default."""

    id: str
    host: str = ""
    pid: int | None = None
    #: One of WorkerState's values ("" when the record has none).
    state: str = ""
    error: str = ""
    #: The production version, serving new requests.
    model_version_id: int | None = None
    model_version: str | None = None
    loaded_versions: list[str] = field(default_factory=list)
    loading_versions: list[str] = field(default_factory=list)
    device: str | None = None
    dtype: str | None = None
    capacity: int = 0
    running: int = 0
    queued: int = 0
    #: Unix times: when the worker started, when it wrote this record.
    started_at: float | None = None
    at: float | None = None
    #: What this worker holds, so a recovery after a Redis restart does
    #: not take it for lost.
    generations: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Heartbeat:
        """Read a stored record; raise ValueError if it is not one."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a heartbeat is a JSON object")
        try:
            return cls(
                id=str(data.get("id") or ""),
                host=str(data.get("host") or ""),
                pid=_optional(int, data.get("pid")),
                state=str(data.get("state") or ""),
                error=str(data.get("error") or ""),
                model_version_id=_optional(int, data.get("model_version_id")),
                model_version=_optional(str, data.get("model_version")),
                loaded_versions=_strings(data.get("loaded_versions")),
                loading_versions=_strings(data.get("loading_versions")),
                device=_optional(str, data.get("device")),
                dtype=_optional(str, data.get("dtype")),
                capacity=int(data.get("capacity") or 0),
                running=int(data.get("running") or 0),
                queued=int(data.get("queued") or 0),
                started_at=_optional(float, data.get("started_at")),
                at=_optional(float, data.get("at")),
                generations=_strings(data.get("generations")),
            )
        except TypeError as exc:
            raise ValueError(f"not a heartbeat: {exc}") from exc


def _optional(kind: Callable[[Any], _T], value: Any) -> _T | None:
    return None if value is None else kind(value)


def _strings(value: Any) -> list[str]:
    return [str(item) for item in value or []]


def records_read(client: Any, pattern: str, parse: Callable[[Any], _T]) -> list[_T]:
    """The records stored under the keys matching pattern, in key order,
    each read by parse: expired ones are gone, ones parse refuses
    (ValueError) are left out. Inference and speech workers' heartbeats."""
    keys = sorted(client.scan_iter(match=pattern, count=200))
    if not keys:
        return []
    records = []
    for raw in client.mget(keys):
        if raw is None:
            continue
        try:
            records.append(parse(raw))
        except ValueError:
            continue
    return records


def heartbeats_read(client: Any, pattern: str) -> list[Heartbeat]:
    """Return the live workers' heartbeats in key order. pattern matches
    every worker's heartbeat key
    (``inference.connection.worker_heartbeat_pattern``)."""
    return records_read(client, pattern, Heartbeat.from_json)


class HeartbeatSender(Generic[_R]):
    """Stores a worker's heartbeat, as build makes it, under key with a
    TTL: on demand, and every interval from a thread of its own between
    start and stop. metrics, with a metrics_key, turns a beat into the
    metrics exposition stored beside it. Inference and speech workers."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        build: Callable[[], _R],
        interval: float,
        ttl: float,
        metrics_key: str | None = None,
        metrics: Callable[[_R], str] | None = None,
    ) -> None:
        self.client, self.key, self.metrics_key = client, key, metrics_key
        self._build, self._metrics = build, metrics
        self.interval, self.ttl = interval, ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        # A beat is built and stored under the lock: one built before a
        # change of state cannot be stored after the beat the change made,
        # and none is stored once clear() has removed the heartbeat.
        self._lock = threading.Lock()
        self._cleared = False

    def beat(self) -> None:
        with self._lock:
            if not self._cleared:
                self._beat()

    def _beat(self) -> None:
        beat = self._build()
        ttl_ms = int(self.ttl * 1000)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key, beat.to_json(), px=ttl_ms)
            if self.metrics_key is not None and self._metrics is not None:
                pipe.set(self.metrics_key, self._metrics(beat), px=ttl_ms)
            pipe.execute()
        except redis.RedisError as exc:
            if not self._failing:
                logger.warning("Heartbeat to Redis failed: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def start(self) -> None:
        """Beat now, then every interval until stop()."""
        self.beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Beats on through the drain after the worker's stop(): a worker
        # finishing its streams must not look dead to the others.
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)

    def clear(self) -> None:
        """Remove the heartbeat (and metrics) of a stopped worker at once,
        rather than let them expire; beat() stores nothing after it."""
        with self._lock:
            self._cleared = True
            try:
                self.client.delete(*filter(None, (self.key, self.metrics_key)))
            except redis.RedisError as exc:
                logger.warning("Could not remove the heartbeat: %s", exc)
