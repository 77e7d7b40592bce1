"""What travels through Redis between the sockets and the speech worker.

A dictation is a job on ``jobs`` (JSON), its audio a list of tagged
entries (``a`` + bytes: audio, ``e``: the recording ended, ``c``: the page
gave up) and its results a stream of events (``started``, ``partial``,
``final``, ``error``), each a flat map of strings. Workers report
themselves under ``heartbeat(worker_id)`` with a TTL.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from inference.worker.heartbeat import records_read

AUDIO = b"a"
END = b"e"
CANCEL = b"c"

#: How long a dictation's audio and events stay in Redis at most.
SESSION_TTL_S = 600
#: A worker's heartbeat outlives three missed beats.
HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_TTL_S = 8


@dataclass(frozen=True)
class SpeechKeys:
    prefix: str

    @property
    def jobs(self) -> str:
        return f"{self.prefix}speech:jobs"

    def audio(self, dictation_id: str) -> str:
        return f"{self.prefix}speech:audio:{dictation_id}"

    def events(self, dictation_id: str) -> str:
        return f"{self.prefix}speech:events:{dictation_id}"

    def heartbeat(self, worker_id: str) -> str:
        return f"{self.prefix}speech:workers:{worker_id}"

    @property
    def heartbeat_pattern(self) -> str:
        return f"{self.prefix}speech:workers:*"


@dataclass(frozen=True)
class SpeechLimits:
    """What one dictation may take (settings ``SPEECH_*``)."""

    #: The longest recording, in seconds of audio.
    max_seconds: float = 60.0
    #: Audio may arrive at most this many times faster than it is spoken
    #: (plus ``ahead_s`` of slack for a page that sends a backlog).
    realtime_factor: float = 2.0
    ahead_s: float = 5.0
    #: A dictation with no audio for this long is ended.
    idle_s: float = 15.0
    #: A job that waited this long for a free recogniser is refused.
    queue_wait_s: float = 20.0


@dataclass(frozen=True)
class SpeechHeartbeat:
    """What a speech worker reports of itself."""

    id: str
    host: str = ""
    pid: int | None = None
    #: "loading", "ready" or "error".
    state: str = ""
    error: str = ""
    backend: str = ""
    model: str = ""
    languages: list[str] = field(default_factory=list)
    capacity: int = 0
    running: int = 0
    at: float | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> SpeechHeartbeat:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a heartbeat is a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ValueError(f"not a speech heartbeat: {exc}") from exc


def speech_heartbeats(client: Any, keys: SpeechKeys) -> list[SpeechHeartbeat]:
    """The live speech workers, unreadable records left out."""
    return records_read(client, keys.heartbeat_pattern, SpeechHeartbeat.from_json)
