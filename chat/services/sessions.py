"""Open sockets against the sessions and accounts behind them.

A socket is authenticated once, when it connects. Logging out and changing
a password end sessions, so the consumers of those sessions are told over
the channel layer (the account's ``auth_group``) and close with 4401. Each
user may also hold only ``CHAT_MAX_SOCKETS_PER_USER`` sockets at once: the
open ones are members of a Redis sorted set scored by when their claim runs
out, renewed while they live, so a process that dies leaks none for longer
than ``SOCKET_SLOT_TTL_S``.
"""

from __future__ import annotations

import time

from chat.services.events import notify_on_commit
from inference.connection import key, redis_client

#: Seconds a socket's slot lasts unless renewed; consumers renew it at a
#: third of this.
SOCKET_SLOT_TTL_S = 120.0


def auth_group(user_id: int) -> str:
    return f"chat.auth.{int(user_id)}"


def session_ended_notify(*, user_id: int, session_key: str | None) -> None:
    """Have the sockets of the session that logged out close."""
    notify_on_commit(auth_group(user_id), {"type": "session.end", "session": session_key or ""})


def sessions_recheck_notify(*, user_id: int) -> None:
    """Have every socket of the user check that its session still holds
    (after a password change, only the session that made it does)."""
    notify_on_commit(auth_group(user_id), {"type": "session.check"})


def _slots_key(user_id: int) -> str:
    return key("sockets", "user", str(int(user_id)))


def socket_slot_take(*, user_id: int, channel: str, limit: int) -> bool:
    """Count channel among the user's open sockets; return False, and
    count nothing, when the user already holds limit of them."""
    slots = _slots_key(user_id)
    now = time.time()
    pipe = redis_client().pipeline(transaction=True)
    pipe.zremrangebyscore(slots, "-inf", now)
    pipe.zadd(slots, {channel: now + SOCKET_SLOT_TTL_S})
    pipe.zcard(slots)
    pipe.expire(slots, int(SOCKET_SLOT_TTL_S) + 1)
    _removed, _added, count, _expiry = pipe.execute()
    if count > limit:
        redis_client().zrem(slots, channel)
        return False
    return True


def socket_slot_renew(*, user_id: int, channel: str) -> None:
    """Extend the claim of an open socket's slot."""
    slots = _slots_key(user_id)
    pipe = redis_client().pipeline(transaction=True)
    pipe.zadd(slots, {channel: time.time() + SOCKET_SLOT_TTL_S}, xx=True)
    pipe.expire(slots, int(SOCKET_SLOT_TTL_S) + 1)
    pipe.execute()


def socket_slot_release(*, user_id: int, channel: str) -> None:
    """Stop counting a closed socket."""
    redis_client().zrem(_slots_key(user_id), channel)
