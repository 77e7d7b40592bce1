"""The dashboard's WebSocket: live notifications for staff pages.

Client frames: ``subscribe {topics: [...]}`` replaces the subscription
set; topics are ``jobs``, ``job.<id>``, ``versions``, ``usage``,
``filters``, ``inbox`` and, for staff who answer widget visitors,
``conversation.<id>`` (that conversation's live messages and handoff
changes).
``ping`` answers ``pong``. Server frames: ``event {topic, payload}``,
``subscribed {topics}`` and ``error {error}``.

Only active staff connect; others are closed with 4401 (not signed in)
or 4403 (not staff). A socket closes with 4401 when its session logs out
or ends, or the password changes, and with 4429 past the user's socket
limit (see ``chat.consumers.base.SocketConsumer``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.http import Http404
from django.utils.translation import gettext

from chat.consumers.base import CLOSE_POLICY, FrameBucket, SocketConsumer
from chat.services.events import conversation_group
from models_admin.dashboard.selectors.inbox import inbox_conversation_get
from models_admin.services.events import dashboard_group

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_BIG = 1009
MAX_FRAME_BYTES = 4096
MAX_TOPICS = 32


@database_sync_to_async
def _inbox_has(conversation_id: str) -> bool:
    try:
        inbox_conversation_get(pk=conversation_id)
    except Http404:
        return False
    return True


class DashboardConsumer(SocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        self.groups_joined: set[str] = set()
        self.conversation_topics: dict[str, str] = {}
        self.bucket = FrameBucket(rate=10.0, burst=30.0)
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not (user.is_active and user.is_staff):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        await self._account_watch(user)

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.account_closed:
            return
        if not self.bucket.take():
            await self.send_json(
                {"type": "error", "error": gettext("Too many frames; slow down.")}
            )
            await self.close(code=CLOSE_POLICY)
            return
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        if text_data is None:
            await self.send_json({"type": "error", "error": gettext("Frames are JSON text.")})
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_json({"type": "error", "error": gettext("Frames are JSON objects.")})
            return
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": gettext("Frames are JSON objects.")})
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe":
            await self._subscribe(content.get("topics"))
        else:
            await self.send_json(
                {
                    "type": "error",
                    "error": gettext("Unknown frame type %(kind)r.") % {"kind": kind},
                }
            )

    async def _subscribe(self, topics: Any) -> None:
        if not isinstance(topics, list) or len(topics) > MAX_TOPICS:
            await self.send_json(
                {
                    "type": "error",
                    "error": gettext("topics is a list of at most %(max_topics)s names.")
                    % {"max_topics": MAX_TOPICS},
                }
            )
            return
        wanted: dict[str, str] = {}
        for topic in topics:
            try:
                wanted[await self._group_for(str(topic))] = str(topic)
            except ValueError as exc:
                await self.send_json({"type": "error", "error": str(exc)})
                return
        for group in self.groups_joined - wanted.keys():
            await self.channel_layer.group_discard(group, self.channel_name)
        for group in wanted.keys() - self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = set(wanted)
        await self.send_json({"type": "subscribed", "topics": sorted(wanted.values())})

    async def _group_for(self, topic: str) -> str:
        if topic.startswith("conversation."):
            user = self.scope["user"]
            allowed = await database_sync_to_async(user.has_perm)("chat.answer_visitors")
            number = topic.removeprefix("conversation.")
            # Only widget conversations are the inbox's: a member's private
            # chat is refused exactly like a missing one.
            if not allowed or not number.isdigit() or not await _inbox_has(number):
                raise ValueError(f"Unknown topic {topic!r}.")
            self.conversation_topics[conversation_group(int(number))] = topic
            return conversation_group(int(number))
        try:
            return dashboard_group(topic)
        except ValueError:
            raise ValueError(f"Unknown topic {topic!r}.") from None

    async def _conversation_event(self, event: dict[str, Any]) -> None:
        group = conversation_group(int(event.get("conversation") or 0))
        topic = self.conversation_topics.get(group)
        if topic is not None:
            await self.send_json({"type": "event", "topic": topic, "payload": event})

    async def message_created(self, event: dict[str, Any]) -> None:
        await self._conversation_event(event)

    async def handoff_changed(self, event: dict[str, Any]) -> None:
        await self._conversation_event(event)

    async def message_finished(self, event: dict[str, Any]) -> None:
        answer = event.get("answer") or {}
        conversation = answer.get("conversation")
        if conversation is None:
            return
        await self._conversation_event({**event, "conversation": conversation})

    async def conversation_changed(self, event: dict[str, Any]) -> None:
        return

    async def conversations_changed(self, event: dict[str, Any]) -> None:
        return

    async def dashboard_event(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "event", "topic": event.get("topic"), "payload": event.get("payload", {})}
        )
