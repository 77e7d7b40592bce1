"""The widget frame's socket: a visitor named by a signed token on a site
whose key and embedding origin are checked on connect."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from django.utils.translation import gettext

from chat.consumers.base import FrameBucket, _db
from chat.consumers.chat import ChatConsumer, _sent_frame
from chat.db import db_apart
from chat.languages import language_from_scope, widget_language
from chat.models import Message
from chat.selectors import (
    message_serialize,
    thread_load,
)
from chat.services import widget, widget_identity, widget_sites
from chat.services.events import conversation_group

CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN = 4404


@_db
def _widget_site(key: Any, origin: Any) -> tuple[Any, int]:
    site = widget_sites.site_get_by_key(key=key)
    if site is None:
        return None, CLOSE_UNKNOWN
    if not widget_sites.origin_allowed(site=site, origin=origin):
        return site, CLOSE_FORBIDDEN
    return site, 0


def _welcome_frame(visitor: Any, conversation: Any) -> dict[str, Any]:
    site = visitor.site
    thread = None
    if conversation is not None:
        loaded = thread_load(conversation=conversation)
        thread = {
            "conversation": {"id": conversation.pk, "title": conversation.title},
            "messages": [message_serialize(m) for m in loaded.path],
        }
    return {
        "type": "welcome",
        "token": widget_identity.visitor_token(visitor=visitor),
        "visitor": {"id": visitor.pk, "identified": bool(visitor.external_id)},
        "conversation": thread,
        "handoff": widget.handoff_state(conversation=conversation),
        "online": widget_sites.site_online(site=site),
        "offline_message": site.offline_message,
    }


@_db
def _widget_hello(
    site: Any, content: dict[str, Any], address: Any
) -> tuple[Any, dict[str, Any], list[tuple[int, str]]]:
    if content.get("revoke"):
        widget_identity.visitor_token_revoke(site=site, token=content["revoke"])
    visitor = widget_identity.visitor_start(site=site, token=content.get("token"), address=address)
    conversation = widget.visitor_conversation(visitor=visitor)
    running = []
    if conversation is not None:
        running = [
            (m.pk, str(m.generation_id))
            for m in conversation.messages.filter(status=Message.Status.PENDING).exclude(
                generation_id=None
            )
        ]
    return visitor, _welcome_frame(visitor, conversation), running


@_db
def _widget_identify(site: Any, visitor: Any, content: dict[str, Any]) -> tuple[Any, Any]:
    visitor = widget_identity.visitor_identify(
        site=site, visitor=visitor, user_id=content.get("user"), signature=content.get("signature")
    )
    conversation = widget.visitor_conversation(visitor=visitor)
    return visitor, _welcome_frame(visitor, conversation)


@_db
def _widget_reset(site: Any, visitor: Any, address: Any) -> tuple[Any, Any]:
    visitor = widget_identity.visitor_reset(site=site, visitor=visitor, address=address)
    return visitor, _welcome_frame(visitor, None)


@db_apart
def _widget_send(visitor: Any, content: dict[str, Any], address: Any) -> dict[str, Any]:
    sent = widget.widget_message_send(
        visitor=visitor,
        content=content.get("content"),
        client_id=content.get("client_id"),
        address=address,
    )
    question = sent.question or sent.answer
    conversation_id = question.conversation_id if question is not None else 0
    return _sent_frame(conversation_id, sent, content.get("client_id"))


@_db
def _widget_stop(visitor: Any, message_id: Any) -> None:
    widget.widget_generation_stop(visitor=visitor, message_id=message_id)


@_db
def _widget_handoff(visitor: Any) -> int:
    return widget.handoff_request(visitor=visitor).pk


@_db
def _widget_email(visitor: Any, email: Any) -> None:
    widget.visitor_email_leave(visitor=visitor, email=email)


class WidgetConsumer(ChatConsumer):
    """The widget frame's socket (``/ws/widget/?key=...&origin=...``).

    The same live frames as the chat page; the visitor is named by a signed
    token (``hello {token, revoke?}``; ``revoke`` names a token the host
    page's reset() forgot while no frame was connected), and the site key
    and the embedding origin are checked against the site's allowlist on
    connect.
    """

    async def connect(self) -> None:
        self.user = None
        self.visitor: Any = None
        self.tails = {}
        self.tail_generations = {}
        self.conversation_id = None
        self.bucket = FrameBucket(rate=5.0, burst=15.0)
        self.groups_joined = []
        # The caps per client address count by it.
        self.address = (self.scope.get("client") or [None])[0]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        key = (query.get("key") or [""])[0]
        origin = (query.get("origin") or [""])[0]
        self.site, refusal = await _widget_site(key, origin)
        if self.site is not None:
            # The site's language, else the visitor's browser's.
            self._language_set(
                widget_language(site=self.site, browser=language_from_scope(self.scope))
            )
        await self.accept()
        if refusal:
            message = (
                gettext("Unknown widget key %(key)r.") % {"key": key}
                if refusal == CLOSE_UNKNOWN
                else gettext("The widget may not be embedded on %(origin)s.")
                % {"origin": origin or gettext("this page")}
            )
            await self.send_json({"type": "error", "code": "refused", "error": message})
            await self.close(code=refusal)

    def _accepting(self) -> bool:
        return self.site is not None

    def _audio_accepting(self) -> bool:
        return self.visitor is not None

    def _handlers(self) -> dict[str, Any]:
        return {
            **self._dictation_handlers(),
            "hello": self._on_hello,
            "identify": self._on_identify,
            "reset": self._on_reset,
            "message.send": self._on_widget_send,
            "generation.stop": self._on_widget_stop,
            "handoff.request": self._on_handoff,
            "email.leave": self._on_email,
            "ping": self._on_ping,
        }

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if content.get("type") != "hello" and self.visitor is None:
            await self._error("hello_first", gettext("Say hello with your token first."))
            return
        await super().receive_json(content)

    async def _welcome(self, visitor: Any, frame: dict[str, Any]) -> None:
        self.visitor = visitor
        thread = frame.get("conversation")
        if thread is not None:
            await self._watch(thread["conversation"]["id"])
        elif self.conversation_id is not None:
            await self._leave(conversation_group(self.conversation_id))
            self.conversation_id = None
        await self.send_json(frame)

    async def _on_hello(self, content: dict[str, Any]) -> None:
        visitor, frame, running = await _widget_hello(self.site, content, self.address)
        await self._welcome(visitor, frame)
        for message_id, generation_id in running:
            self._tail_start(message_id, generation_id, 0, restart=True)

    async def _on_identify(self, content: dict[str, Any]) -> None:
        visitor, frame = await _widget_identify(self.site, self.visitor, content)
        await self._welcome(visitor, frame)

    async def _on_reset(self, content: dict[str, Any]) -> None:
        visitor, frame = await _widget_reset(self.site, self.visitor, self.address)
        await self._welcome(visitor, frame)

    async def _on_widget_send(self, content: dict[str, Any]) -> None:
        frame = await _widget_send(self.visitor, content, self.address)
        await self._accepted(frame)

    async def _on_widget_stop(self, content: dict[str, Any]) -> None:
        await _widget_stop(self.visitor, content.get("message"))

    async def _on_handoff(self, content: dict[str, Any]) -> None:
        conversation_id = await _widget_handoff(self.visitor)
        await self._watch(conversation_id)

    async def _on_email(self, content: dict[str, Any]) -> None:
        await _widget_email(self.visitor, content.get("email"))
        await self.send_json({"type": "email.saved"})

    async def handoff_changed(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
