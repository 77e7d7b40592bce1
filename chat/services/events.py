"""Small notifications to the user's open pages over the channel layer,
sent after the transaction commits. Token streams never travel this way:
sockets tail the generation's Redis stream (see ``chat.consumers.chat``)."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"chat.user.{int(user_id)}"


def conversation_group(conversation_id: int) -> str:
    return f"chat.conversation.{int(conversation_id)}"


def _send(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception:
        # A page that misses a notification catches up on its next fetch;
        # the write it announces has committed either way.
        logger.warning("Notification to %s failed", group, exc_info=True)


def notify_on_commit(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to ``group`` once the current transaction commits."""
    transaction.on_commit(lambda: _send(group, event))
