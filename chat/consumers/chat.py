"""The chat page's WebSocket: actions in, live answers out.

Client frames (JSON objects with a ``type``):

- ``conversation.open {conversation, after: {message_id: seq}}``: watch a
  conversation; running answers are streamed from after ``seq`` (0 or
  absent: from the start), so a reconnecting page resumes where it was;
- ``message.send {conversation, content, client_id, parent?}``;
- ``message.regenerate {message, client_id}``;
- ``message.continue {message, client_id}``: go on with a stopped or
  length-cut answer (the same message; new text is added to its end);
- ``message.branch {message, index, token, client_id}``: a new version of
  an answer that keeps its tokens before ``index``, takes ``token`` (one
  of the alternatives listed there) and goes on from it;
- ``generation.stop {message}``;
- ``ping``;
- ``dictation.start``/``.stop``/``.cancel`` and binary audio frames
  (``chat/consumers/dictation.py``).

Server frames: ``message.created`` (question and pending answer, to every
page watching the conversation), ``generation.queued {message, seq,
position}``, ``generation.start {message, seq, model_version}``,
``generation.text {message, seq, text}``, ``message.finished {answer}``
(the stored answer), ``generation.waiting {message, reason}``,
``generation.reset {message, reason}`` (events were lost in transit: forget
the text shown and take it again from seq 1),
``conversation.changed``, ``conversations.changed``, ``pong`` and
``error {code, error, client_id?}``.

Text is read from the generation's own Redis stream, never from the
channel layer: every socket tails it from its last sequence number.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from django.conf import settings
from django.http import Http404
from django.utils.formats import number_format
from django.utils.translation import gettext

from chat.consumers.base import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    FrameBucket,
    SocketConsumer,
    _db,
)
from chat.consumers.dictation import DictationMixin
from chat.db import db_apart
from chat.models import Message
from chat.selectors import (
    conversation_get_for_user,
    message_get_for_user,
    message_serialize,
)
from chat.services import widget_identity
from chat.services.answers import message_branch, message_continue, message_regenerate
from chat.services.events import conversation_group, user_group
from chat.services.messages import (
    ChatError,
    generation_stop,
    message_send,
)
from chat.streams import GenerationFollower, Reset, Stored, Waiting
from inference.protocol import StreamEvent

logger = logging.getLogger(__name__)

#: Seconds without an event before the page is told why it waits.
WAIT_NOTICE_S = 15.0
#: Replays from the start a tail may do before it waits for the stored
#: answer instead.
MAX_RESETS = 2


@_db
def _open(user: Any, conversation_id: Any) -> list[tuple[int, str]]:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    return [
        (m.pk, str(m.generation_id))
        for m in conversation.messages.filter(status=Message.Status.PENDING).exclude(
            generation_id=None
        )
    ]


@db_apart
def _send(user: Any, content: dict[str, Any]) -> dict[str, Any]:
    conversation = conversation_get_for_user(
        user=user, conversation_id=content.get("conversation")
    )
    kwargs: dict[str, Any] = {}
    if "parent" in content:
        kwargs["parent_id"] = content["parent"]
    sent = message_send(
        user=user,
        conversation=conversation,
        content=content.get("content"),
        client_id=content.get("client_id"),
        **kwargs,
    )
    return _sent_frame(conversation.pk, sent, content.get("client_id"))


@_db
def _regenerate(user: Any, content: dict[str, Any]) -> dict[str, Any]:
    message = message_get_for_user(user=user, message_id=content.get("message"))
    sent = message_regenerate(
        user=user,
        conversation=message.conversation,
        message=message,
        client_id=content.get("client_id"),
    )
    return _sent_frame(message.conversation_id, sent, content.get("client_id"))


def _sent_frame(conversation_id: int, sent: Any, client_id: Any) -> dict[str, Any]:
    if sent.answer is not None:
        sent.answer.refresh_from_db()
    return {
        "type": "message.accepted",
        "client_id": str(client_id),
        "conversation": conversation_id,
        "created": sent.created,
        "question": message_serialize(sent.question) if sent.question else None,
        "answer": message_serialize(sent.answer) if sent.answer else None,
    }


@_db
def _continue(user: Any, content: dict[str, Any]) -> dict[str, Any]:
    message = message_get_for_user(user=user, message_id=content.get("message"))
    sent = message_continue(
        user=user,
        conversation=message.conversation,
        message=message,
        client_id=content.get("client_id"),
    )
    return _sent_frame(message.conversation_id, sent, content.get("client_id"))


@_db
def _branch(user: Any, content: dict[str, Any]) -> dict[str, Any]:
    message = message_get_for_user(user=user, message_id=content.get("message"))
    sent = message_branch(
        user=user,
        conversation=message.conversation,
        message=message,
        index=content.get("index"),
        token=content.get("token"),
        client_id=content.get("client_id"),
    )
    return _sent_frame(message.conversation_id, sent, content.get("client_id"))


@_db
def _stop(user: Any, message_id: Any) -> None:
    generation_stop(message=message_get_for_user(user=user, message_id=message_id))


@_db
def _answer(message_id: int) -> Message | None:
    return Message.objects.filter(pk=message_id).first()


class ChatConsumer(DictationMixin, SocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.tails: dict[int, asyncio.Task[None]] = {}
        self.tail_generations: dict[int, str] = {}
        self.conversation_id: int | None = None
        self.bucket = FrameBucket(rate=10.0, burst=30.0)
        self.groups_joined: list[str] = []
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.send_json(
                {
                    "type": "error",
                    "code": "auth",
                    "error": gettext("Log in to chat."),
                    "fatal": True,
                }
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self._account_watch(self.user):
            return
        await self._join(user_group(self.user.pk))
        await self.send_json({"type": "hello", "user": self.user.get_username()})

    async def disconnect(self, code: int) -> None:
        await self._dictation_disconnect()
        for task in getattr(self, "tails", {}).values():
            task.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def _leave(self, group: str) -> None:
        await self.channel_layer.group_discard(group, self.channel_name)
        if group in self.groups_joined:
            self.groups_joined.remove(group)

    # --- frames from the page ---------------------------------------------

    def _accepting(self) -> bool:
        """Whether frames are read at all (a refused socket is closing)."""
        return bool(self.user and self.user.is_authenticated) and not self.account_closed

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing or not self._accepting():
            return
        binary = bytes_data is not None and text_data is None
        if binary and self.dictation is not None and self._audio_accepting():
            if len(bytes_data or b"") > settings.CHAT_MAX_FRAME_BYTES:
                await self._frame_parse(None, bytes_data)
            else:
                await self._on_audio(bytes_data or b"")
            return
        if not self.bucket.take():
            await self._error("flood", gettext("Too many frames; slow down."))
            await self.close(code=CLOSE_POLICY)
            return
        if binary and self.audio_refused:
            # A recorder still sending after its dictation ended: told once.
            return
        content = await self._frame_parse(text_data, bytes_data)
        if content is not None:
            await self.receive_json(content)

    async def _frame_parse(
        self, text_data: str | None, bytes_data: bytes | None = None
    ) -> dict[str, Any] | None:
        """The frame as a JSON object, or None after telling the page why
        not (closing the socket for an oversized one)."""
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.CHAT_MAX_FRAME_BYTES:
            await self._error(
                "too_big",
                gettext("Frames are limited to %(bytes)s bytes.")
                % {"bytes": number_format(settings.CHAT_MAX_FRAME_BYTES, force_grouping=True)},
            )
            await self.close(code=CLOSE_TOO_BIG)
            return None
        if text_data is None:
            await self._error(
                "invalid",
                gettext("Frames are JSON text; binary frames are audio, during a dictation."),
            )
            return None
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self._error("bad_json", gettext("The frame is not valid JSON."))
            return None
        if not isinstance(content, dict):
            await self._error("bad_json", gettext("A frame is a JSON object with a type."))
            return None
        return content

    def _audio_accepting(self) -> bool:
        """Whether binary frames are dictation audio (else refused)."""
        return True

    def _handlers(self) -> dict[str, Any]:
        """The frame types this socket takes, with their handlers."""
        return {
            **self._dictation_handlers(),
            "conversation.open": self._on_open,
            "message.send": self._on_send,
            "message.regenerate": self._on_regenerate,
            "message.continue": self._on_continue,
            "message.branch": self._on_branch,
            "generation.stop": self._on_stop,
            "ping": self._on_ping,
        }

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        handler = self._handlers().get(kind if isinstance(kind, str) else "")
        client_id = content.get("client_id")
        if handler is None:
            await self._error(
                "unknown_type", gettext("Unknown frame type %(type)r.") % {"type": kind}, client_id
            )
            return
        try:
            await handler(content)
        except Http404 as exc:
            await self._error("not_found", str(exc) or gettext("Not found."), client_id)
        except widget_identity.WidgetError as exc:
            await self._error(exc.code, exc.message, client_id)
        except ChatError as exc:
            await self.send_json({"type": "error", **exc.as_dict(), "client_id": client_id})
        except Exception:
            logger.exception("%s frame %s failed", type(self).__name__, kind)
            await self._error("internal", gettext("Something went wrong; try again."), client_id)

    async def _error(self, code: str, message: str, client_id: Any = None) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "error": message}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send_json(frame)

    async def _on_ping(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def _on_open(self, content: dict[str, Any]) -> None:
        running = await _open(self.user, content.get("conversation"))
        conversation_id = int(content["conversation"])
        await self._watch(conversation_id)
        after_raw = content.get("after")
        after: dict[str, Any] = after_raw if isinstance(after_raw, dict) else {}
        for message_id, generation_id in running:
            try:
                seq = max(int(after.get(str(message_id), 0)), 0)
            except (TypeError, ValueError):
                seq = 0
            self._tail_start(message_id, generation_id, seq, restart=True)
        await self.send_json({"type": "conversation.opened", "conversation": conversation_id})

    async def _watch(self, conversation_id: int) -> None:
        """Follow one conversation (a page shows one at a time)."""
        if self.conversation_id == conversation_id:
            return
        if self.conversation_id is not None:
            await self._leave(conversation_group(self.conversation_id))
        for task in self.tails.values():
            task.cancel()
        self.tails.clear()
        self.conversation_id = conversation_id
        await self._join(conversation_group(conversation_id))

    async def _on_send(self, content: dict[str, Any]) -> None:
        frame = await _send(self.user, content)
        await self._accepted(frame)

    async def _on_regenerate(self, content: dict[str, Any]) -> None:
        frame = await _regenerate(self.user, content)
        await self._accepted(frame)

    async def _on_continue(self, content: dict[str, Any]) -> None:
        frame = await _continue(self.user, content)
        await self._accepted(frame)

    async def _on_branch(self, content: dict[str, Any]) -> None:
        frame = await _branch(self.user, content)
        await self._accepted(frame)

    async def _accepted(self, frame: dict[str, Any]) -> None:
        # Sending in a conversation means watching it.
        await self._watch(frame["conversation"])
        await self.send_json(frame)
        answer = frame["answer"]
        if answer is not None and answer["status"] == "pending":
            await self._tail_for(answer["id"])

    async def _on_stop(self, content: dict[str, Any]) -> None:
        await _stop(self.user, content.get("message"))

    # --- events from the channel layer ------------------------------------

    async def message_created(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
        answer = event.get("answer")
        if event["conversation"] == self.conversation_id and answer is not None:
            await self._tail_for(answer["id"])

    async def message_finished(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def conversation_changed(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def conversations_changed(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    # --- tailing answers ---------------------------------------------------

    async def _tail_for(self, message_id: int) -> None:
        answer = await _answer(message_id)
        if answer is not None and answer.generation_id:
            self._tail_start(message_id, str(answer.generation_id), 0, restart=False)

    def _tail_start(
        self, message_id: int, generation_id: str, after: int, *, restart: bool
    ) -> None:
        task = self.tails.get(message_id)
        if task is not None and not task.done():
            # A continued answer is the same message with a new generation.
            same = self.tail_generations.get(message_id) == generation_id
            if same and not restart:
                return
            task.cancel()
        self.tail_generations[message_id] = generation_id
        self.tails[message_id] = asyncio.ensure_future(
            self._tail(message_id, generation_id, after)
        )

    async def _tail(self, message_id: int, generation_id: str, after: int) -> None:
        """Forward the answer's events after ``after``, then the stored
        answer. Tell the page when nothing arrives for a while, and why;
        when the stream lost events, have the page start again from the
        first one."""
        follower = GenerationFollower(
            generation_id,
            after_seq=after,
            idle_timeout_s=WAIT_NOTICE_S,
            waiting=True,
            max_resets=MAX_RESETS,
            message_id=message_id,
        )
        try:
            async with follower:
                async for item in follower:
                    if isinstance(item, StreamEvent):
                        await self._forward(message_id, item)
                    else:
                        await self.send_json(_notice_frame(message_id, item))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Streaming answer %s failed", message_id)
            await self._error(
                "stream", gettext("The live stream broke; reload to see the answer.")
            )
        finally:
            if self.tails.get(message_id) is asyncio.current_task():
                self.tails.pop(message_id, None)

    async def _forward(self, message_id: int, event: StreamEvent) -> None:
        frame: dict[str, Any] = {"message": message_id, "seq": event.seq}
        if event.type == "text":
            frame.update(type="generation.text", text=event.text)
        elif event.type == "queued":
            frame.update(type="generation.queued", position=event.data.get("position"))
        elif event.type == "start":
            frame.update(type="generation.start", model_version=event.data.get("model_version"))
        else:
            return
        await self.send_json(frame)


def _notice_frame(message_id: int, notice: Reset | Waiting | Stored) -> dict[str, Any]:
    if isinstance(notice, Stored):
        return {"type": "message.finished", "answer": message_serialize(notice.answer)}
    if isinstance(notice, Reset):
        return {
            "type": "generation.reset",
            "message": message_id,
            "reason": gettext("Part of the answer was lost in transit; reloading it."),
        }
    return {"type": "generation.waiting", "message": message_id, "reason": _waiting_reason(notice)}


def _waiting_reason(waiting: Waiting) -> str:
    if waiting.workers is None:
        return gettext("The message service is unreachable; reconnecting…")
    if waiting.workers == 0:
        return gettext("No model worker is running; the message waits in the queue.")
    return gettext("Still waiting for the model.")
