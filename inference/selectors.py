from __future__ import annotations

import json
from typing import Any


def worker_heartbeats_list(*, client: Any, pattern: str) -> list[dict[str, Any]]:
    """Return the live workers' heartbeats (expired ones are gone)."""
    beats: list[dict[str, Any]] = []
    keys = sorted(client.scan_iter(match=pattern, count=200))
    if not keys:
        return beats
    for raw in client.mget(keys):
        if raw is None:
            continue
        try:
            beats.append(json.loads(raw))
        except ValueError:
            continue
    return beats


def worker_metrics_list(*, client: Any, pattern: str) -> list[str]:
    """Return the live workers' metric expositions."""
    keys = sorted(client.scan_iter(match=pattern, count=200))
    if not keys:
        return []
    return [str(text) for text in client.mget(keys) if text]
