"""The chat page's WebSocket: actions in, live answers out.

Client frames (JSON objects with a ``type``):

- ``conversation.open {conversation, after: {message_id: seq}}``: watch a
  conversation; running answers are streamed from after ``seq`` (0 or
  absent: from the start), so a reconnecting page resumes where it was;
- ``message.send {conversation, content, client_id, parent?}``;
- ``message.regenerate {message, client_id}``;
- ``generation.stop {message}``;
- ``ping``.

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
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import close_old_connections
from django.http import Http404

from chat.db import db_apart
from chat.models import Message
from chat.selectors import (
    conversation_get_for_user,
    message_get_for_user,
    message_serialize,
    session_user_valid,
    thread_load,
)
from chat.services import widget, widget_identity, widget_sites
from chat.services.events import conversation_group, user_group
from chat.services.messages import (
    ChatError,
    generation_stop,
    message_regenerate,
    message_send,
)
from chat.services.sessions import (
    SOCKET_SLOT_TTL_S,
    auth_group,
    socket_slot_release,
    socket_slot_renew,
    socket_slot_take,
)
from chat.streams import GenerationFollower, Reset, Stored, Waiting
from inference.client import REDIS_DOWN
from inference.protocol import StreamEvent

logger = logging.getLogger(__name__)

#: Close codes: policy violation (floods) and message too big, as RFC 6455
#: defines them, and an application code for "log in first".
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHENTICATED = 4401
#: The user holds CHAT_MAX_SOCKETS_PER_USER sockets already.
CLOSE_TOO_MANY = 4429

#: Seconds between a signed-in socket's renewals of its slot and checks of
#: its session.
SESSION_RECHECK_S = SOCKET_SLOT_TTL_S / 3
#: Seconds without an event before the page is told why it waits.
WAIT_NOTICE_S = 15.0
#: Replays from the start a tail may do before it waits for the stored
#: answer instead.
MAX_RESETS = 2


class FrameBucket:
    """A token bucket on incoming frames: bursts are fine, floods are not."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _db(fn: Any) -> Any:
    """Run an ORM call in the thread pool with fresh connections."""

    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        return fn(*args, **kwargs)

    return database_sync_to_async(call)


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
def _stop(user: Any, message_id: Any) -> None:
    generation_stop(message=message_get_for_user(user=user, message_id=message_id))


@_db
def _answer(message_id: int) -> Message | None:
    return Message.objects.filter(pk=message_id).first()


_slot_take = sync_to_async(socket_slot_take, thread_sensitive=False)
_slot_renew = sync_to_async(socket_slot_renew, thread_sensitive=False)
_slot_release = sync_to_async(socket_slot_release, thread_sensitive=False)


@_db
def _session_valid(session_key: str | None, user_id: int) -> bool:
    return session_user_valid(session_key=session_key, user_id=user_id)


class SocketConsumer(AsyncJsonWebsocketConsumer):
    """A JSON socket whose sends to a connection the client is closing are
    dropped rather than raised: a notification that races a disconnect
    must not end the consumer with an error in the server log.

    A signed-in user's socket (``_account_watch``) lives only as long as
    its session: it closes with 4401 when the session logs out or the
    password changes, and counts against the user's socket limit.
    """

    account_user_id: int | None = None
    account_closed = False
    slot_renewer: asyncio.Task[None] | None = None
    #: Set once the server closed the socket: frames still queued are
    #: dropped unread.
    closing = False

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            logger.debug("Dropped a frame to a closing socket")

    async def send_json(self, content: Any, close: bool = False) -> None:
        # The base class's send_json goes past send() above.
        try:
            await super().send_json(content, close=close)
        except Disconnected:
            logger.debug("Dropped a frame to a closing socket")

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closing = True
        try:
            await super().close(code=code, reason=reason)
        except Disconnected:
            logger.debug("Closed a socket that was closing already")

    def _session_key(self) -> str | None:
        session = self.scope.get("session")
        return session.session_key if session is not None else None

    async def _account_watch(self, user: Any) -> bool:
        """Tie this accepted socket to the user's session and take one of
        the user's socket slots; return False after closing the socket
        (4429) when the user holds too many."""
        limit = settings.CHAT_MAX_SOCKETS_PER_USER
        try:
            taken = await _slot_take(user_id=user.pk, channel=self.channel_name, limit=limit)
        except REDIS_DOWN:
            # The channel layer waits for Redis anyway; counting resumes
            # with the next socket.
            logger.warning("Socket count unavailable for user %s", user.pk, exc_info=True)
            taken = True
        if not taken:
            self.account_closed = True
            await self.send_json(
                {
                    "type": "error",
                    "code": "too_many_sockets",
                    "error": f"At most {limit} connections at once; close another tab first.",
                    "fatal": True,
                }
            )
            await self.close(code=CLOSE_TOO_MANY)
            return False
        self.account_user_id = user.pk
        await self.channel_layer.group_add(auth_group(user.pk), self.channel_name)
        self.slot_renewer = asyncio.ensure_future(self._slot_renew_loop())
        return True

    async def _slot_renew_loop(self) -> None:
        """Renew the socket's slot and, on the same beat, check its session:
        one that expired or was deleted without a logout (clearsessions,
        an admin) closes the socket too."""
        while self.account_user_id is not None:
            await asyncio.sleep(SESSION_RECHECK_S)
            user_id = self.account_user_id
            if user_id is None or self.account_closed:
                return
            with contextlib.suppress(*REDIS_DOWN):
                await _slot_renew(user_id=user_id, channel=self.channel_name)
            try:
                valid = await _session_valid(self._session_key(), user_id)
            except Exception:
                # A database away for a moment is no reason to drop sockets.
                logger.warning("Session check of user %s failed", user_id, exc_info=True)
                continue
            if not valid:
                await self._session_close()
                return

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        user_id, self.account_user_id = self.account_user_id, None
        if user_id is not None:
            if self.slot_renewer is not None:
                self.slot_renewer.cancel()
            await self.channel_layer.group_discard(auth_group(user_id), self.channel_name)
            with contextlib.suppress(*REDIS_DOWN):
                await _slot_release(user_id=user_id, channel=self.channel_name)
        await super().websocket_disconnect(message)

    async def _session_close(self) -> None:
        self.account_closed = True
        await self.send_json(
            {
                "type": "error",
                "code": "auth",
                "error": "Your session has ended; log in again.",
                "fatal": True,
            }
        )
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def session_end(self, event: dict[str, Any]) -> None:
        """The session that logged out: close its sockets."""
        if not self.account_closed and event.get("session") == self._session_key():
            await self._session_close()

    async def session_check(self, event: dict[str, Any]) -> None:
        """The password changed: close unless the session still holds."""
        if self.account_closed or self.account_user_id is None:
            return
        if not await _session_valid(self._session_key(), self.account_user_id):
            await self._session_close()


class ChatConsumer(SocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.tails: dict[int, asyncio.Task[None]] = {}
        self.conversation_id: int | None = None
        self.bucket = FrameBucket(rate=10.0, burst=30.0)
        self.groups_joined: list[str] = []
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.send_json(
                {"type": "error", "code": "auth", "error": "Log in to chat.", "fatal": True}
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self._account_watch(self.user):
            return
        await self._join(user_group(self.user.pk))
        await self.send_json({"type": "hello", "user": self.user.get_username()})

    async def disconnect(self, code: int) -> None:
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
        if not self.bucket.take():
            await self._error("flood", "Too many frames; slow down.")
            await self.close(code=CLOSE_POLICY)
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
                "too_big", f"Frames are limited to {settings.CHAT_MAX_FRAME_BYTES:,} bytes."
            )
            await self.close(code=CLOSE_TOO_BIG)
            return None
        if text_data is None:
            await self._error("invalid", "Frames are JSON text.")
            return None
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self._error("bad_json", "The frame is not valid JSON.")
            return None
        if not isinstance(content, dict):
            await self._error("bad_json", "A frame is a JSON object with a type.")
            return None
        return content

    def _handlers(self) -> dict[str, Any]:
        """The frame types this socket takes, with their handlers."""
        return {
            "conversation.open": self._on_open,
            "message.send": self._on_send,
            "message.regenerate": self._on_regenerate,
            "generation.stop": self._on_stop,
            "ping": self._on_ping,
        }

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        handler = self._handlers().get(kind if isinstance(kind, str) else "")
        client_id = content.get("client_id")
        if handler is None:
            await self._error("unknown_type", f"Unknown frame type {kind!r}.", client_id)
            return
        try:
            await handler(content)
        except Http404 as exc:
            await self._error("not_found", str(exc) or "Not found.", client_id)
        except widget_identity.WidgetError as exc:
            await self._error(exc.code, exc.message, client_id)
        except ChatError as exc:
            await self.send_json({"type": "error", **exc.as_dict(), "client_id": client_id})
        except Exception:
            logger.exception("%s frame %s failed", type(self).__name__, kind)
            await self._error("internal", "Something went wrong; try again.", client_id)

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
            if not restart:
                return
            task.cancel()
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
            await self._error("stream", "The live stream broke; reload to see the answer.")
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
            "reason": "Part of the answer was lost in transit; reloading it.",
        }
    return {"type": "generation.waiting", "message": message_id, "reason": _waiting_reason(notice)}


def _waiting_reason(waiting: Waiting) -> str:
    if waiting.workers is None:
        return "The message service is unreachable; reconnecting…"
    if waiting.workers == 0:
        return "No model worker is running; the message waits in the queue."
    return "Still waiting for the model."


# --- the widget ---------------------------------------------------------------

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
        self.conversation_id = None
        self.bucket = FrameBucket(rate=5.0, burst=15.0)
        self.groups_joined = []
        # The caps per client address count by it.
        self.address = (self.scope.get("client") or [None])[0]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        key = (query.get("key") or [""])[0]
        origin = (query.get("origin") or [""])[0]
        self.site, refusal = await _widget_site(key, origin)
        await self.accept()
        if refusal:
            message = (
                f"Unknown widget key {key!r}."
                if refusal == CLOSE_UNKNOWN
                else f"The widget may not be embedded on {origin or 'this page'}."
            )
            await self.send_json({"type": "error", "code": "refused", "error": message})
            await self.close(code=refusal)

    def _accepting(self) -> bool:
        return self.site is not None

    def _handlers(self) -> dict[str, Any]:
        return {
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
            await self._error("hello_first", "Say hello with your token first.")
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
