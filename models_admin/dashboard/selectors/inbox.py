"""Reads of the widget areas of the dashboard: the widget sites with what
happens on them, and the inbox of widget conversations that need a
person (asked for one, with one, or lately closed) with each one's
thread and visitor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import Conversation, Message, WidgetSite, WidgetVisitor

Handoff = Conversation.Handoff
#: Handoff states in which a conversation waits for or is with a person.
OPEN_STATES = (Handoff.REQUESTED, Handoff.ACTIVE)
#: The states the inbox lists, in the order it lists them.
INBOX_STATES = (Handoff.REQUESTED, Handoff.ACTIVE, Handoff.CLOSED)
#: Closed conversations stay in the inbox this long, at most this many.
CLOSED_KEPT = timedelta(days=7)
CLOSED_LIMIT = 25


def _count(rows: QuerySet[Any], *, group: str) -> Coalesce:
    """A correlated count of ``rows`` (already narrowed by an OuterRef and
    grouped by ``group``); counts side by side do not multiply rows the
    way joins would."""
    counted = rows.order_by().values(group).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


# --- sites ----------------------------------------------------------------------


def widget_sites_overview() -> QuerySet[WidgetSite]:
    """Every site by name, annotated with ``conversation_count``,
    ``visitor_count`` and ``open_handoffs`` (conversations waiting for or
    with a person)."""
    conversations = Conversation.objects.filter(site=OuterRef("pk"))
    return (
        WidgetSite.objects.select_related("model_version")
        .annotate(
            conversation_count=_count(conversations, group="site_id"),
            visitor_count=_count(
                WidgetVisitor.objects.filter(site=OuterRef("pk")), group="site_id"
            ),
            open_handoffs=_count(conversations.filter(handoff__in=OPEN_STATES), group="site_id"),
        )
        .order_by("name", "id")
    )


def widget_site_get(*, pk: Any) -> WidgetSite:
    """Return a site or raise Http404."""
    try:
        return WidgetSite.objects.select_related("model_version").get(pk=int(pk))
    except (WidgetSite.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such widget site.")) from None


def widget_site_counts(*, site: WidgetSite) -> dict[str, int]:
    """``conversations``, ``visitors`` and ``open_handoffs`` of one site."""
    return {
        "conversations": Conversation.objects.filter(site=site).count(),
        "visitors": WidgetVisitor.objects.filter(site=site).count(),
        "open_handoffs": Conversation.objects.filter(site=site, handoff__in=OPEN_STATES).count(),
    }


def widget_site_choices() -> list[tuple[str, str]]:
    """``(id, name)`` of every site, for filters."""
    return [(str(pk), name) for pk, name in WidgetSite.objects.values_list("pk", "name")]


# --- the inbox ------------------------------------------------------------------


def visitor_label(visitor: WidgetVisitor | None) -> str:
    """How staff name a visitor: the id the host site identified them
    with, or ``anonymous #<visitor id>``."""
    if visitor is None:
        return "nobody"
    return visitor.external_id or f"anonymous #{visitor.pk}"


@dataclass(frozen=True)
class InboxRow:
    """A conversation as the inbox lists it. ``waiting_since`` is when the
    visitor started waiting for a person: the request, or (with a person)
    their first message that no answer followed; None when nobody waits."""

    conversation: Conversation
    visitor: str
    waiting_since: datetime | None
    last_message: Message | None

    @property
    def state(self) -> str:
        return self.conversation.handoff

    @property
    def waiting_s(self) -> float | None:
        """Seconds the visitor has waited until now, or None."""
        if self.waiting_since is None:
            return None
        return max((timezone.now() - self.waiting_since).total_seconds(), 0.0)


def _widget_conversations() -> QuerySet[Conversation]:
    return Conversation.objects.filter(
        source=Conversation.Source.WIDGET, visitor__isnull=False
    ).select_related("site", "visitor", "agent")


def _with_last_messages(rows: QuerySet[Conversation]) -> QuerySet[Conversation]:
    messages = Message.objects.filter(conversation=OuterRef("pk"))
    answered_later = Message.objects.filter(
        conversation=OuterRef("conversation"),
        role=Message.Role.ASSISTANT,
        created_at__gt=OuterRef("created_at"),
    )
    unanswered = (
        messages.filter(role=Message.Role.USER)
        .exclude(Exists(answered_later))
        .order_by("created_at", "id")
        .values("created_at")[:1]
    )
    return rows.annotate(
        last_message_id=Subquery(messages.order_by("-created_at", "-id").values("id")[:1]),
        unanswered_since=Subquery(unanswered),
    )


def inbox_rows(
    *, site_id: int | None = None, state: str = "", now: datetime | None = None
) -> list[InboxRow]:
    """The inbox: conversations waiting for a person (the longest waiting
    first), then those with a person (the longest waiting reply first),
    then those closed in the last week (the latest first).

    ``site_id`` keeps one site's; ``state`` (``requested``, ``active`` or
    ``closed``) one group. Raise ValueError for another state.
    """
    if state and state not in INBOX_STATES:
        raise ValueError(f"unknown inbox state {state!r}")
    now = now or timezone.now()
    rows = _widget_conversations()
    if site_id is not None:
        rows = rows.filter(site_id=site_id)
    rows = _with_last_messages(rows)
    groups: list[list[Conversation]] = []
    if state in ("", Handoff.REQUESTED):
        groups.append(list(rows.filter(handoff=Handoff.REQUESTED).order_by("handoff_at", "id")))
    if state in ("", Handoff.ACTIVE):
        active = rows.filter(handoff=Handoff.ACTIVE)
        # Conversations where the visitor waits for a reply come first,
        # the longest waiting at the top; then the rest by takeover time.
        groups.append(
            sorted(
                active,
                key=lambda c: (
                    c.unanswered_since is None,  # type: ignore[attr-defined]
                    c.unanswered_since or c.handoff_at or c.created_at,  # type: ignore[attr-defined]
                    c.pk,
                ),
            )
        )
    if state in ("", Handoff.CLOSED):
        groups.append(
            list(
                rows.filter(handoff=Handoff.CLOSED, updated_at__gte=now - CLOSED_KEPT).order_by(
                    "-updated_at", "-id"
                )[:CLOSED_LIMIT]
            )
        )
    conversations = [c for group in groups for c in group]
    last = Message.objects.select_related("author").in_bulk(
        [c.last_message_id for c in conversations if c.last_message_id]  # type: ignore[attr-defined]
    )
    result = []
    for conversation in conversations:
        if conversation.handoff == Handoff.REQUESTED:
            waiting = conversation.handoff_at or conversation.created_at
        elif conversation.handoff == Handoff.ACTIVE:
            waiting = conversation.unanswered_since  # type: ignore[attr-defined]
        else:
            waiting = None
        result.append(
            InboxRow(
                conversation=conversation,
                visitor=visitor_label(conversation.visitor),
                waiting_since=waiting,
                last_message=last.get(conversation.last_message_id),  # type: ignore[attr-defined]
            )
        )
    return result


def inbox_counts(*, agent_id: int | None = None) -> dict[str, int]:
    """``requested`` and ``active`` widget conversations, and ``mine``:
    the active ones ``agent_id`` holds."""
    rows = Conversation.objects.filter(source=Conversation.Source.WIDGET, visitor__isnull=False)
    counts = rows.aggregate(
        requested=Count("pk", filter=Q(handoff=Handoff.REQUESTED)),
        active=Count("pk", filter=Q(handoff=Handoff.ACTIVE)),
        mine=Count("pk", filter=Q(handoff=Handoff.ACTIVE, agent_id=agent_id or -1)),
    )
    return {name: int(value or 0) for name, value in counts.items()}


def inbox_conversation_get(*, pk: Any) -> Conversation:
    """Return a widget conversation (any site's, any visitor's) or raise
    Http404; other conversations are not the inbox's to show."""
    try:
        return _widget_conversations().get(pk=int(pk))
    except (Conversation.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such widget conversation.")) from None


def inbox_messages(*, conversation: Conversation) -> list[Message]:
    """Every message of the conversation in the order it was written
    (visitors' questions, the assistant's answers, staff replies)."""
    return list(
        Message.objects.filter(conversation=conversation)
        .select_related("author")
        .order_by("created_at", "id")
    )


def inbox_visitor_facts(*, conversation: Conversation) -> dict[str, Any]:
    """What staff know of the conversation's visitor: ``label``,
    ``identified`` (bool), ``external_id``, ``email``, ``first_seen``,
    ``last_seen`` and ``conversations`` (how many they had on the site)."""
    visitor = conversation.visitor
    if visitor is None:
        raise ValueError("not a visitor's conversation")
    return {
        "label": visitor_label(visitor),
        "identified": bool(visitor.external_id),
        "external_id": visitor.external_id,
        "email": visitor.email,
        "first_seen": visitor.created_at,
        "last_seen": visitor.last_seen_at,
        "conversations": Conversation.objects.filter(visitor=visitor).count(),
    }
