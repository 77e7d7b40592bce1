from __future__ import annotations

from typing import Any


def worker_metrics_list(*, client: Any, pattern: str) -> list[str]:
    """Return the live workers' metric expositions."""
    keys = sorted(client.scan_iter(match=pattern, count=200))
    if not keys:
        return []
    return [str(text) for text in client.mget(keys) if text]
