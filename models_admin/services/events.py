"""Notifications to open dashboards over the channel layer.

A dashboard socket subscribes to topics; each topic is the group
``dashboard.<topic>``. Notifications are small ("this changed, fetch
it"); pages read the figures themselves, so a dropped notification costs
a late refresh, never wrong data.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

_TOPIC = re.compile(r"^[a-z]+(\.[0-9]+)?$")


def dashboard_group(topic: str) -> str:
    if not _TOPIC.match(topic):
        raise ValueError(f"bad dashboard topic {topic!r}")
    return f"dashboard.{topic}"


def dashboard_notify(*, topic: str, payload: dict[str, Any]) -> None:
    """Send now (call it after the commit that made the change)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            dashboard_group(topic), {"type": "dashboard.event", "topic": topic, "payload": payload}
        )
    except Exception as exc:
        logger.warning("Dashboard notification on %s failed: %r", topic, exc)


def dashboard_notify_on_commit(*, topic: str, payload: dict[str, Any]) -> None:
    transaction.on_commit(lambda: dashboard_notify(topic=topic, payload=payload))
