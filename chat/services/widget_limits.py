"""Caps on widget traffic across visitors: messages a minute per client
address and per site, visitors created an hour per address, and answers
generating at once per address and per site.

A visitor's own limit (``WidgetSite.messages_per_minute``) resets with
every new visitor; these caps do not. Windows and running answers of an
address are counted in Redis (with expiry), so every web process sees
the same totals; a site's running answers are counted in the database.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import Message, WidgetSite
from chat.services.messages import ChatError
from inference.client import REDIS_DOWN
from inference.connection import key, redis_client

logger = logging.getLogger(__name__)

MINUTE_S = 60
HOUR_S = 3600


def client_subject(*, address: Any) -> str:
    """Return what the per-address caps count by: the IPv4 address, or the
    IPv6 /64 network (one host commonly holds a whole /64). Return "" when
    there is no IP address (a Unix socket, a test client): the per-address
    caps then do not apply, the per-site ones still do."""
    if not isinstance(address, str):
        return ""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _refuse(message: str, retry_after: float) -> ChatError:
    return ChatError(
        "rate_limited",
        gettext("%(refusal)s Try again in %(seconds)s s.")
        % {"refusal": message, "seconds": max(1, round(retry_after))},
        retry_after=max(retry_after, 1.0),
    )


def _window_take(*, name: str, subject: str, limit: int, window_s: int) -> float | None:
    """Count one event of ``name`` for ``subject`` in the current fixed
    window. Return the seconds until the window ends when the count went
    over ``limit``, else None."""
    now = time.time()
    window = int(now // window_s)
    counter = key("widget", "limit", name, subject, str(window))
    pipe = redis_client().pipeline()
    pipe.incr(counter)
    pipe.expire(counter, window_s * 2)
    count, _ = pipe.execute()
    if int(count) > limit:
        return (window + 1) * window_s - now
    return None


def _running_key(subject: str) -> str:
    return key("widget", "running", subject)


def _running_count(subject: str) -> int:
    """The answers of ``subject`` still pending, forgetting finished and
    stale ones."""
    client = redis_client()
    running = _running_key(subject)
    stale_s = settings.CHAT_GENERATION_STALE_S
    client.zremrangebyscore(running, "-inf", time.time() - stale_s)
    members = cast(list[str], client.zrange(running, 0, -1))
    ids = [int(member) for member in members]
    if not ids:
        return 0
    pending = set(
        Message.objects.filter(pk__in=ids, status=Message.Status.PENDING).values_list(
            "pk", flat=True
        )
    )
    ended = [pk for pk in ids if pk not in pending]
    if ended:
        client.zrem(running, *ended)
    return len(pending)


def _site_running_count(site: WidgetSite) -> int:
    stale = timezone.now() - timedelta(seconds=settings.CHAT_GENERATION_STALE_S)
    return Message.objects.filter(
        conversation__site=site,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        created_at__gte=stale,
    ).count()


def widget_message_limits_check(*, site: WidgetSite, address: Any, answer: bool) -> None:
    """Count a visitor's message against the caps of its client address
    and its site; raise ChatError ``rate_limited`` naming the cap that is
    reached. With ``answer`` the message starts an answer, which must fit
    under the caps on answers generating at once."""
    subject = client_subject(address=address)
    if answer:
        per_site = settings.WIDGET_GENERATIONS_PER_SITE
        if _site_running_count(site) >= per_site:
            raise _refuse(
                gettext("This site is answering %(count)s questions at once already.")
                % {"count": per_site},
                5.0,
            )
    try:
        if answer and subject:
            per_address = settings.WIDGET_GENERATIONS_PER_ADDRESS
            if _running_count(subject) >= per_address:
                raise _refuse(
                    gettext(
                        "At most %(count)s answers can be generated at once from one "
                        "network address; wait for one to finish or stop it."
                    )
                    % {"count": per_address},
                    5.0,
                )
        if subject:
            limit = settings.WIDGET_MESSAGES_PER_MINUTE_PER_ADDRESS
            wait = _window_take(name="msg", subject=subject, limit=limit, window_s=MINUTE_S)
            if wait is not None:
                raise _refuse(
                    gettext(
                        "At most %(limit)s messages a minute can come from one network address."
                    )
                    % {"limit": limit},
                    wait,
                )
        limit = settings.WIDGET_MESSAGES_PER_MINUTE_PER_SITE
        wait = _window_take(name="msg", subject=f"site{site.pk}", limit=limit, window_s=MINUTE_S)
        if wait is not None:
            raise _refuse(
                gettext("This site takes at most %(limit)s messages a minute.") % {"limit": limit},
                wait,
            )
    except REDIS_DOWN:
        # Answers need Redis anyway, and the per-visitor and per-site
        # limits in the database still hold: counting is skipped rather
        # than every message refused.
        logger.warning("Widget caps not counted: Redis is unreachable")


def widget_answer_running(*, address: Any, message_id: int) -> None:
    """Count an answer just started against its client address until it
    ends (or grows stale)."""
    subject = client_subject(address=address)
    if not subject:
        return
    try:
        client = redis_client()
        running = _running_key(subject)
        client.zadd(running, {str(message_id): time.time()})
        client.expire(running, settings.CHAT_GENERATION_STALE_S)
    except REDIS_DOWN:
        logger.warning("Widget answer %s not counted: Redis is unreachable", message_id)


def widget_visitor_limits_check(*, address: Any) -> None:
    """Count a new visitor against its client address; raise ChatError
    ``rate_limited`` once the address created too many this hour."""
    subject = client_subject(address=address)
    if not subject:
        return
    limit = settings.WIDGET_VISITORS_PER_HOUR_PER_ADDRESS
    try:
        wait = _window_take(name="visitor", subject=subject, limit=limit, window_s=HOUR_S)
    except REDIS_DOWN:
        logger.warning("Widget visitor not counted: Redis is unreachable")
        return
    if wait is not None:
        raise _refuse(
            gettext("At most %(limit)s new visitors an hour can come from one network address.")
            % {"limit": limit},
            wait,
        )
