"""Reads for conversation review: every user's conversations with their
feedback and flags, one conversation's whole message tree, and the audit
trail of what staff looked at and did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.contrib.auth import get_user_model
from django.core.paginator import Page
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils.translation import gettext

from chat.models import Conversation, Feedback, Message, WidgetSite
from chat.selectors import Thread, thread_load
from models_admin.dashboard.paging import page_get
from models_admin.models import Dataset, ReviewEvent

CONVERSATIONS_PER_PAGE = 50
EVENTS_PER_PAGE = 50
#: How many audit rows the detail page shows for one conversation.
TRAIL_LIMIT = 100


class Feedbacks:
    """Values of the feedback filter."""

    UP = "up"
    DOWN = "down"
    NONE = "none"


def review_source_choices() -> list[tuple[str, str]]:
    """Values of the source filter, each understood by
    ``conversations_for_review(source=...)``.

    A value is a conversation source (``chat``, ``widget``, ``api``) or a
    widget site (``site:<id>``).
    """
    sites = [
        (f"site:{pk}", gettext("Widget: %(name)s") % {"name": name})
        for pk, name in WidgetSite.objects.order_by("name").values_list("pk", "name")
    ]
    sources = [(value, str(label)) for value, label in Conversation.Source.choices]
    return [*sources, *sites]


def _source_q(source: str) -> Q:
    if source in Conversation.Source.values:
        return Q(source=source)
    kind, _colon, number = source.partition(":")
    if kind == "site" and number.isdigit():
        return Q(site_id=int(number))
    raise ValueError(f"unknown source filter {source!r}")


def _count(rows: QuerySet[Any], *, group: str) -> Coalesce:
    """A correlated count of ``rows``, already narrowed to one conversation
    and grouped by ``group``; unlike a join it does not multiply the outer
    rows, so several counts can sit side by side."""
    counted = rows.order_by().values(group).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def conversations_for_review(
    *,
    feedback: str = "",
    flagged: bool | None = None,
    source: str = "",
    username: str = "",
    query: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet[Conversation]:
    """Every user's conversations, newest activity first, annotated with
    ``message_count``, ``thumbs_up`` and ``thumbs_down``.

    ``feedback`` is ``up`` or ``down`` (at least one answer rated so) or
    ``none`` (no rating at all); ``flagged`` keeps flagged (True) or
    unflagged (False) conversations; ``source`` is a value of
    ``review_source_choices``; ``username`` and ``query`` match part of
    the owner's username and of any message's text, ignoring case; the
    dates bound the last activity, both days included. Raise ValueError
    for an unknown ``feedback`` or ``source``.
    """
    messages = Message.objects.filter(conversation=OuterRef("pk"))
    ratings = Feedback.objects.filter(message__conversation=OuterRef("pk"))
    by_conversation = "message__conversation_id"
    rows = Conversation.objects.select_related("user", "visitor", "site").annotate(
        message_count=_count(messages, group="conversation_id"),
        thumbs_up=_count(ratings.filter(rating=Feedback.Rating.UP), group=by_conversation),
        thumbs_down=_count(ratings.filter(rating=Feedback.Rating.DOWN), group=by_conversation),
    )
    if feedback == Feedbacks.UP:
        rows = rows.filter(thumbs_up__gt=0)
    elif feedback == Feedbacks.DOWN:
        rows = rows.filter(thumbs_down__gt=0)
    elif feedback == Feedbacks.NONE:
        rows = rows.filter(thumbs_up=0, thumbs_down=0)
    elif feedback:
        raise ValueError(f"unknown feedback filter {feedback!r}")
    if flagged is not None:
        rows = rows.filter(flagged_at__isnull=not flagged)
    if source:
        rows = rows.filter(_source_q(source))
    if username.strip():
        rows = rows.filter(user__username__icontains=username.strip())
    if query.strip():
        matching = Message.objects.filter(content__icontains=query.strip())
        rows = rows.filter(pk__in=matching.values("conversation_id"))
    if date_from is not None:
        rows = rows.filter(updated_at__date__gte=date_from)
    if date_to is not None:
        rows = rows.filter(updated_at__date__lte=date_to)
    return rows.order_by("-updated_at", "-id")


def conversation_model_versions(*, conversation_ids: list[int]) -> dict[int, list[str]]:
    """The names of the model versions that answered in each conversation,
    sorted."""
    pairs = (
        Message.objects.filter(conversation_id__in=conversation_ids, role=Message.Role.ASSISTANT)
        .exclude(model_version_name="")
        .values_list("conversation_id", "model_version_name")
        .distinct()
    )
    names: dict[int, set[str]] = {}
    for conversation_id, name in pairs:
        names.setdefault(conversation_id, set()).add(name)
    return {pk: sorted(found) for pk, found in names.items()}


def conversations_review_page(*, rows: QuerySet[Conversation], page: Any = 1) -> Page[Any]:
    """One page of ``rows``; each conversation on it gets
    ``model_versions``, the names of the versions that answered in it."""
    shown = page_get(rows, per_page=CONVERSATIONS_PER_PAGE, number=page)
    versions = conversation_model_versions(conversation_ids=[c.pk for c in shown])
    for conversation in shown:
        # Read by the list template beside the annotated counts.
        conversation.model_versions = versions.get(conversation.pk, [])  # type: ignore[attr-defined]
    return shown


def conversation_review_get(*, pk: Any) -> Conversation:
    """Return any user's conversation for review or raise Http404."""
    try:
        return Conversation.objects.select_related("user", "visitor", "site").get(pk=int(pk))
    except (Conversation.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such conversation.")) from None


@dataclass(frozen=True)
class ReviewMessage:
    """A message as the review page shows it."""

    message: Message
    depth: int = 0
    feedback: list[Feedback] = field(default_factory=list)

    @property
    def ttft_s(self) -> float | None:
        return (self.message.timings or {}).get("ttft_s")

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: completion tokens over the time after the first."""
        timings = self.message.timings or {}
        total, ttft = timings.get("total_s"), timings.get("ttft_s")
        tokens = self.message.completion_tokens
        if not tokens or total is None or ttft is None or total <= ttft:
            return None
        return tokens / (total - ttft)


@dataclass(frozen=True)
class Branch:
    """Messages off the active path that grow from ``parent`` (None: a
    different first question), depth first, ``depth`` counted from the
    branch's first message."""

    parent: Message | None
    messages: list[ReviewMessage]


@dataclass(frozen=True)
class ConversationReview:
    conversation: Conversation
    thread: Thread
    path: list[ReviewMessage]
    branches: list[Branch]
    events: list[ReviewEvent]

    @property
    def message_count(self) -> int:
        return len(self.thread.messages)


def _branches(thread: Thread, feedback: dict[int, list[Feedback]]) -> list[Branch]:
    on_path = {m.pk for m in thread.path}
    # Fork points in path order: the root first, then each path message.
    parents: list[Message | None] = [None, *thread.path]
    branches: list[Branch] = []
    for parent in parents:
        key = parent.pk if parent is not None else None
        for child_id in thread.children.get(key, []):
            if child_id in on_path:
                continue
            shown: list[ReviewMessage] = []
            stack = [(child_id, 0)]
            while stack:
                node_id, depth = stack.pop()
                shown.append(
                    ReviewMessage(
                        message=thread.messages[node_id],
                        depth=depth,
                        feedback=feedback.get(node_id, []),
                    )
                )
                # Reversed so the oldest child comes out of the stack first.
                for grandchild in reversed(thread.children.get(node_id, [])):
                    stack.append((grandchild, depth + 1))
            branches.append(Branch(parent=parent, messages=shown))
    return branches


def conversation_review_load(*, pk: Any) -> ConversationReview:
    """Load a conversation for review: its active path, the branches off
    it, every rating with its reason, and the latest audit rows. Raise
    Http404 for an unknown id."""
    conversation = conversation_review_get(pk=pk)
    thread = thread_load(conversation=conversation)
    feedback: dict[int, list[Feedback]] = {}
    for row in (
        Feedback.objects.filter(message__conversation=conversation)
        .select_related("user")
        .order_by("created_at", "id")
    ):
        feedback.setdefault(row.message_id, []).append(row)
    path = [ReviewMessage(message=m, feedback=feedback.get(m.pk, [])) for m in thread.path]
    events = list(
        ReviewEvent.objects.filter(conversation=conversation).select_related("staff")[:TRAIL_LIMIT]
    )
    return ConversationReview(
        conversation=conversation,
        thread=thread,
        path=path,
        branches=_branches(thread, feedback),
        events=events,
    )


def review_events_list(*, staff_id: int | None = None, action: str = "") -> QuerySet[ReviewEvent]:
    """Audit rows, newest first, optionally of one staff member and one
    action."""
    rows = ReviewEvent.objects.select_related("staff", "conversation")
    if staff_id is not None:
        rows = rows.filter(staff_id=staff_id)
    if action:
        rows = rows.filter(action=action)
    return rows.order_by("-created_at", "-id")


def review_events_page(*, rows: QuerySet[ReviewEvent], page: Any = 1) -> Page[Any]:
    return page_get(rows, per_page=EVENTS_PER_PAGE, number=page)


def review_staff_list() -> QuerySet[Any]:
    """The accounts that appear in the audit log, by username."""
    staff_ids = ReviewEvent.objects.exclude(staff=None).values("staff_id")
    return get_user_model().objects.filter(pk__in=staff_ids).order_by("username")


def review_datasets_list() -> QuerySet[Dataset]:
    """Datasets that conversations can be added to, newest first."""
    return Dataset.objects.order_by("-created_at", "-id")
