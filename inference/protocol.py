"""What travels through Redis between the web, the workers and the
clients. No Django here.

A request is one entry of the requests stream with a JSON ``payload``:
``{"id", "messages", "params", "model_version_id"}``. Each generation has
its own stream whose entry ids are ``0-<seq>``, so the sequence number is
the stream position and a reader resumes with ``XREAD`` after the last one
it delivered. Events (field ``event``, JSON):

- ``{"type": "queued", "position": n}`` while waiting for a slot;
- ``{"type": "start", "model_version": ..., "worker": ...}``;
- ``{"type": "text", "text": "..."}``, the answer in order;
- ``{"type": "done", "finish_reason", "usage", "timings", "model_version"}``;
- ``{"type": "error", "error": "...", "finish_reason": "error"}``.

Each entry also carries ``w``, a mark of the worker run that wrote it: a
reader that sees the mark change checks that the stream still continues
what it delivered (another worker took over, or Redis lost its tail).

``done`` and ``error`` are final. The engine's output filters run before
text is appended, so no reader ever sees filtered text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FINAL_TYPES = frozenset({"done", "error"})


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    type: str
    data: dict[str, Any]
    writer: str = ""

    @property
    def final(self) -> bool:
        return self.type in FINAL_TYPES

    @property
    def text(self) -> str:
        return self.data.get("text", "") if self.type == "text" else ""

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.data, "type": self.type}


def event_encode(event_type: str, **data: Any) -> dict[str, str]:
    return {"event": json.dumps({"type": event_type, **data}, separators=(",", ":"))}


def event_decode(entry_id: str, fields: dict[str, str]) -> StreamEvent:
    body = json.loads(fields["event"])
    return StreamEvent(
        seq=int(entry_id.split("-", 1)[1]),
        type=body.pop("type"),
        data=body,
        writer=fields.get("w", ""),
    )


def seq_of(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[1])
