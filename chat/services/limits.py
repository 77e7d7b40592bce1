"""One limiter per user across every surface that generates for them:
the chat page and the OpenAI-compatible API. A user's answers at once
(``CHAT_MAX_CONCURRENT_GENERATIONS``) and answers started a minute
(``CHAT_MESSAGES_PER_MINUTE``) count the chat's answers and the API's
calls together, whether the API stores its calls as conversations or not.

Widget visitors are not users; each widget site limits its visitors.
Per-key API limits and quotas (``chat.services.api_keys``) apply on top.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.translation import gettext

from chat.selectors import generations_running_count, generations_started_times

WINDOW = timedelta(minutes=1)


class LimitError(Exception):
    """A user may not start another answer now. ``code`` is
    ``rate_limited`` (``retry_after`` says when) or ``too_many_running``."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def user_generation_check(*, user_id: int, lock: bool = False) -> None:
    """Raise LimitError when the user may not start another answer now.

    With ``lock``, take the user's row lock first so that two surfaces
    starting answers at once are counted one after the other; call it so
    inside the transaction that stores the new answer.
    """
    if lock:
        list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk"))
    now = timezone.now()
    per_minute = settings.CHAT_MESSAGES_PER_MINUTE
    started = generations_started_times(user_id=user_id, since=now - WINDOW)
    if len(started) >= per_minute:
        wait = (min(started) + WINDOW - now).total_seconds()
        raise LimitError(
            "rate_limited",
            gettext("You can send %(limit)s messages a minute. Try again in %(seconds)s s.")
            % {"limit": per_minute, "seconds": max(1, round(wait))},
            retry_after=max(wait, 1.0),
        )
    running_limit = settings.CHAT_MAX_CONCURRENT_GENERATIONS
    # Older answers no longer count: a crash left them pending.
    stale = now - timedelta(seconds=settings.CHAT_GENERATION_STALE_S)
    if generations_running_count(user_id=user_id, since=stale) >= running_limit:
        raise LimitError(
            "too_many_running",
            gettext(
                "At most %(limit)s answers can be generated at once. "
                "Wait for one to finish or stop it."
            )
            % {"limit": running_limit},
        )
