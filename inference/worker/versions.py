"""The model versions a worker serves.

Versions load one at a time in a background thread, beside the engines
already serving, so streams keep flowing while a new version loads. Once
the production version is loaded it serves new requests; running ones
finish on the engine they started on, and an engine no longer in service
is released once it is idle. A version that cannot be loaded is reported
(state ``error``, or a note while an older version goes on serving) and
not tried again until the versions in service change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_done
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.engine_base import EngineBase
from inference.engine_types import RequestError
from inference.engines import EngineOptions, engine_open
from inference.loading import ModelLoadError
from inference.worker.heartbeat import WorkerState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionSpec:
    """What the worker needs to know of a model version."""

    id: int
    name: str
    path: Path


#: Stands for the version of a request that failed before one was chosen.
NO_VERSION = VersionSpec(id=0, name="", path=Path())


class Versions:
    """The engines of the versions loaded, and the worker's state.

    on_change is called whenever the state or the loads in progress
    change (the worker heartbeats); on_settled with a version's id once it
    has loaded or failed to, so the requests that waited for it start.
    """

    def __init__(
        self,
        *,
        production_version: Callable[[], VersionSpec | None],
        version_lookup: Callable[[int], VersionSpec | None] | None,
        extra_versions: Callable[[], list[VersionSpec]] | None,
        device: str,
        dtype: str,
        engine_options: EngineOptions,
        on_change: Callable[[], None],
        on_settled: Callable[[int], None],
    ) -> None:
        self._production_version = production_version
        self._version_lookup = version_lookup
        self._extra_versions = extra_versions
        self.device, self.dtype = device, dtype
        self.engine_options = engine_options
        self._on_change = on_change
        self._on_settled = on_settled
        self.state = WorkerState.STARTING
        self.error = ""
        self.version: VersionSpec | None = None  # production, serving new requests
        self.engines: dict[int, EngineBase] = {}
        self.specs: dict[int, VersionSpec] = {}
        self._failed: VersionSpec | None = None
        self._wanted: VersionSpec | None = None
        self._wanted_extra: set[int] = set()
        # Loads run one at a time beside the serving loop.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self.loads: dict[int, tuple[VersionSpec, Future[EngineBase]]] = {}
        self.load_errors: dict[int, str] = {}

    @property
    def loaded(self) -> Any:
        """The production version's model (its device and dtype), once loaded."""
        engine = self.engines.get(self.version.id) if self.version else None
        return engine.loaded if engine else None

    @property
    def serving(self) -> EngineBase | None:
        """The engine that takes new requests, if loaded."""
        if self.version is None:
            return None
        return self.engines.get(self.version.id)

    def state_set(self, state: str, error: str) -> None:
        self.state, self.error = state, error
        self._on_change()

    def engine_build(self, spec: VersionSpec) -> EngineBase:
        return engine_open(
            spec.path, device=self.device, dtype=self.dtype, options=self.engine_options
        )

    def load_start(self, spec: VersionSpec) -> None:
        """Load a version in the background unless loaded, loading or
        known to fail."""
        if spec.id in self.engines or spec.id in self.loads or spec.id in self.load_errors:
            return
        logger.info("Loading model version %s from %s", spec.name, spec.path)
        self.loads[spec.id] = (spec, self._loader.submit(self.engine_build, spec))
        self._on_change()

    def loads_collect(self, wait: bool = False) -> None:
        """Take in finished loads: serve a loaded production version,
        start the requests that waited for a version, fail them if it
        cannot be loaded."""
        for version_id, (spec, future) in list(self.loads.items()):
            if wait:
                wait_done([future])
            if not future.done():
                continue
            del self.loads[version_id]
            try:
                engine = future.result()
            except Exception as exc:
                message = str(exc) if isinstance(exc, ModelLoadError) else repr(exc)
                logger.error("Model version %s cannot be loaded: %s", spec.name, message)
                self.load_errors[version_id] = message
                self._load_failed(spec, message)
                continue
            self.engines[version_id] = engine
            self.specs[version_id] = spec
            logger.info("Loaded model version %s", spec.name)
            if self._wanted is not None and self._wanted.id == version_id:
                self._serve(spec)
            self._on_settled(version_id)
        if not self.loads and self.state == WorkerState.LOADING and self.version:
            self.state_set(WorkerState.READY, "")

    def _load_failed(self, spec: VersionSpec, message: str) -> None:
        if self._wanted is not None and self._wanted.id == spec.id:
            self._failed = spec
            if self.version is None or self.version.id not in self.engines:
                self.version = spec
                self.state_set(WorkerState.ERROR, message)
            else:
                # Keep serving the old version rather than nothing.
                self.state_set(WorkerState.READY, f"cannot load {spec.name}: {message}")
        self._on_settled(spec.id)  # what waited for it ends with an error event

    def _serve(self, spec: VersionSpec) -> None:
        previous = self.version
        self.version, self._failed = spec, None
        self.state_set(WorkerState.READY, "")
        logger.info(
            "Serving model version %s from %s%s",
            spec.name,
            spec.path,
            f" (was {previous.name})" if previous and previous != spec else "",
        )

    def failures_forget(self) -> None:
        """Let versions that failed to load be tried again (the versions
        in service changed)."""
        self.load_errors.clear()
        self._failed = None

    def sync(self) -> None:
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
            self.load_start(spec)
        if wanted is None:
            if not self.engines:
                self.state_set(WorkerState.NO_MODEL, "no model version is in production")
            return
        if self.version == wanted and wanted.id in self.engines:
            return
        if wanted == self._failed or wanted.id in self.load_errors:
            if self._failed != wanted:
                self._load_failed(wanted, self.load_errors[wanted.id])
            return  # already reported; wait for a promotion to change it
        if wanted.id in self.engines:
            self._serve(wanted)
            return
        if self.version is None or self.version.id not in self.engines:
            self.state_set(WorkerState.LOADING, "")
        self.load_start(wanted)

    def release_idle(self, keep: Iterable[int]) -> None:
        """Free engines of versions no longer in service once idle; keep
        those of the ids in keep too."""
        kept = set(self._wanted_extra) | set(keep)
        if self.version:
            kept.add(self.version.id)
        for version_id in list(self.engines):
            if version_id in kept:
                continue
            if not self.engines[version_id].has_work():
                logger.info("Releasing model version %s", self.specs[version_id].name)
                del self.engines[version_id]
                del self.specs[version_id]

    def version_for(self, version_id: int | None) -> VersionSpec:
        """The version a request asks for (None: production)."""
        if version_id is None or (self.version and version_id == self.version.id):
            if self.version is None or self.version.id not in self.engines:
                raise RequestError("no model version is loaded")
            return self.version
        if version_id in self.specs:
            return self.specs[version_id]
        if version_id in self.loads:
            return self.loads[version_id][0]
        spec = self._version_lookup(version_id) if self._version_lookup else None
        if spec is None:
            raise RequestError(f"unknown model version {version_id}")
        return spec

    def close(self) -> None:
        """Let a load in progress finish; none is left running behind."""
        self._loader.shutdown(wait=True, cancel_futures=True)
