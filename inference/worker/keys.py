"""The Redis key names a worker uses. Whoever builds the worker hands them
in (``inference.connection.worker_keys``), so the worker reads no
settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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

    def restart_recovered(self, run_id: str) -> str:
        """The lock one worker takes to recover from the restart of the
        Redis server whose run id is run_id."""
        return self.requests + f":recovered:{run_id}"
