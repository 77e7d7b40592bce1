"""The dashboard's WebSocket: live notifications for staff pages.

Client frames: ``subscribe {topics: [...]}`` replaces the subscription
set; topics are ``jobs``, ``job.<id>``, ``versions``, ``usage`` and
``filters``.
``ping`` answers ``pong``. Server frames: ``event {topic, payload}``,
``subscribed {topics}`` and ``error {error}``.

Only active staff connect; others are closed with 4401 (not signed in)
or 4403 (not staff).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from models_admin.services.events import dashboard_group

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_BIG = 1009
MAX_FRAME_BYTES = 4096
MAX_TOPICS = 32


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        self.groups_joined: set[str] = set()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not (user.is_active and user.is_staff):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None or text_data is None:
            await self.send_json({"type": "error", "error": "Frames are JSON text."})
            return
        if len(text_data) > MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_json({"type": "error", "error": "Frames are JSON objects."})
            return
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": "Frames are JSON objects."})
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe":
            await self._subscribe(content.get("topics"))
        else:
            await self.send_json({"type": "error", "error": f"Unknown frame type {kind!r}."})

    async def _subscribe(self, topics: Any) -> None:
        if not isinstance(topics, list) or len(topics) > MAX_TOPICS:
            await self.send_json(
                {"type": "error", "error": f"topics is a list of at most {MAX_TOPICS} names."}
            )
            return
        wanted: dict[str, str] = {}
        for topic in topics:
            try:
                wanted[dashboard_group(str(topic))] = str(topic)
            except ValueError:
                await self.send_json({"type": "error", "error": f"Unknown topic {topic!r}."})
                return
        for group in self.groups_joined - wanted.keys():
            await self.channel_layer.group_discard(group, self.channel_name)
        for group in wanted.keys() - self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = set(wanted)
        await self.send_json({"type": "subscribed", "topics": sorted(wanted.values())})

    async def dashboard_event(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "event", "topic": event.get("topic"), "payload": event.get("payload", {})}
        )
