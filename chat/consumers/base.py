"""What every JSON socket shares: the close codes, the flood bucket, the
ORM thread-pool wrapper and ``SocketConsumer`` (sends that race a
disconnect, socket slots, the session a signed-in socket lives by, and the
language its texts are in)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import close_old_connections
from django.utils import translation
from django.utils.translation import gettext

from chat.languages import language_from_scope
from chat.selectors import (
    session_user_valid,
)
from chat.services.languages import user_language_get
from chat.services.sessions import (
    SOCKET_SLOT_TTL_S,
    auth_group,
    socket_slot_release,
    socket_slot_renew,
    socket_slot_take,
)
from inference.client import REDIS_DOWN

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


class FrameBucket:
    """A token bucket on incoming frames: bursts are fine, floods are not."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Take cost tokens (one frame, or a frame's bytes); whether there
        were that many."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


def _db(fn: Any) -> Any:
    """Run an ORM call in the thread pool with fresh connections."""

    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        return fn(*args, **kwargs)

    return database_sync_to_async(call)


_slot_take = sync_to_async(socket_slot_take, thread_sensitive=False)
_slot_renew = sync_to_async(socket_slot_renew, thread_sensitive=False)
_slot_release = sync_to_async(socket_slot_release, thread_sensitive=False)


@_db
def _session_valid(session_key: str | None, user_id: int) -> bool:
    return session_user_valid(session_key=session_key, user_id=user_id)


@_db
def _user_language(user_id: int) -> str | None:
    return user_language_get(user_id=user_id)


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
    #: The language of the texts this socket sends: the user's choice, else
    #: the browser's (cookie, Accept-Language); read on the first frame.
    language: str | None = None
    slot_renewer: asyncio.Task[None] | None = None
    #: Set once the server closed the socket: frames still queued are
    #: dropped unread.
    closing = False

    async def dispatch(self, message: Any) -> None:
        """Handle every event (frames, group messages) in the socket's
        language; tasks started here keep it."""
        if self.language is None:
            self.language = await self._language()
        with translation.override(self.language):
            await super().dispatch(message)

    async def _language(self) -> str:
        browser = language_from_scope(self.scope)
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return await _user_language(user.pk) or browser
        return browser

    def _language_set(self, code: str) -> None:
        """Use ``code`` for this socket's texts from now on."""
        self.language = code
        translation.activate(code)

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
                    "error": gettext(
                        "At most %(limit)s connections at once; close another tab first."
                    )
                    % {"limit": limit},
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
                "error": gettext("Your session has ended; log in again."),
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
