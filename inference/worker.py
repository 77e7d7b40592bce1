"""The inference worker process around the engine.

It loads the model version in production, keeps it loaded, follows
promotions, and heartbeats its state to Redis with a TTL so the web can
tell whether any worker is able to answer. A model folder that cannot be
loaded leaves the worker up and reporting ``error``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from inference.loading import LoadedModel, ModelLoadError, model_load

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionSpec:
    """What the worker needs to know of a model version."""

    id: int
    name: str
    path: Path


class WorkerState:
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"
    NO_MODEL = "no_model"
    STOPPING = "stopping"


class InferenceWorker:
    def __init__(
        self,
        *,
        redis_client: redis.Redis,
        heartbeat_key: Callable[[str], str],
        production_version: Callable[[], VersionSpec | None],
        device: str = "auto",
        dtype: str = "auto",
        heartbeat_interval: float = 2.0,
        heartbeat_ttl: float = 10.0,
        poll_interval: float = 5.0,
        capacity: int = 1,
        worker_id: str | None = None,
    ) -> None:
        self.redis = redis_client
        self.worker_id = (
            worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self._heartbeat_key = heartbeat_key(self.worker_id)
        self._production_version = production_version
        self.device = device
        self.dtype = dtype
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.poll_interval = poll_interval
        self.capacity = capacity
        self.state = WorkerState.STARTING
        self.error = ""
        self.version: VersionSpec | None = None
        self.loaded: LoadedModel | None = None
        self._failed_version: VersionSpec | None = None
        self.stop_event = threading.Event()
        self.started_at = time.time()

    # --- heartbeat -----------------------------------------------------

    def heartbeat_payload(self) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": self.state,
            "error": self.error,
            "model_version_id": self.version.id if self.version else None,
            "model_version": self.version.name if self.version else None,
            "device": str(self.loaded.device) if self.loaded else None,
            "dtype": str(self.loaded.dtype).removeprefix("torch.") if self.loaded else None,
            "capacity": self.capacity,
            "running": 0,
            "queued": 0,
            "started_at": self.started_at,
            "at": time.time(),
        }

    def heartbeat(self) -> None:
        try:
            self.redis.set(
                self._heartbeat_key,
                json.dumps(self.heartbeat_payload()),
                px=int(self.heartbeat_ttl * 1000),
            )
        except redis.RedisError as exc:
            logger.warning("Heartbeat to Redis failed: %s", exc)

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.wait(self.heartbeat_interval):
            self.heartbeat()

    def heartbeat_clear(self) -> None:
        try:
            self.redis.delete(self._heartbeat_key)
        except redis.RedisError as exc:
            logger.warning("Could not remove the heartbeat: %s", exc)

    # --- model ---------------------------------------------------------

    def model_sync(self) -> None:
        """Load the production version when it differs from the loaded one."""
        try:
            wanted = self._production_version()
        except Exception:
            logger.exception("Could not read the production model version")
            return
        if wanted is None:
            if self.loaded is None:
                self._set_state(WorkerState.NO_MODEL, "no model version is in production")
            return
        if self.version is not None and wanted == self.version and self.loaded is not None:
            return
        if wanted == self._failed_version:
            return  # already reported; wait for a promotion to change it
        self._set_state(WorkerState.LOADING, "")
        self.heartbeat()
        try:
            loaded = model_load(wanted.path, device=self.device, dtype=self.dtype)
        except ModelLoadError as exc:
            logger.error("Model version %s cannot be loaded: %s", wanted.name, exc)
            self._failed_version = wanted
            self.version = wanted
            self.loaded = None
            self._set_state(WorkerState.ERROR, str(exc))
            return
        self.loaded, self.version, self._failed_version = loaded, wanted, None
        self._set_state(WorkerState.READY, "")
        logger.info("Serving model version %s from %s", wanted.name, wanted.path)

    def _set_state(self, state: str, error: str) -> None:
        self.state, self.error = state, error
        self.heartbeat()

    # --- lifecycle -----------------------------------------------------

    def run(self) -> None:
        """Run until stop() is called."""
        self.heartbeat()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stop_event.is_set():
                self.model_sync()
                self.stop_event.wait(self.poll_interval)
        finally:
            self.state = WorkerState.STOPPING
            self.stop_event.set()
            beat.join(timeout=self.heartbeat_interval + 1)
            self.heartbeat_clear()
            logger.info("Inference worker %s stopped", self.worker_id)

    def stop(self) -> None:
        self.stop_event.set()
