"""Reads for the knowledge pages: a base and its sources by id, every base
with its counts and index state, and how often the answers grounded in a
base found a passage (per widget site, the chat and the API) with the
questions it had nothing on.

The answers of a base are those whose ``Message.knowledge`` names it;
the lookups on that JSON work alike on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from chat.models import ApiKey, Conversation, Message, WidgetSite
from models_admin.demo_knowledge import DEMO_KNOWLEDGE_NAME
from models_admin.models import KnowledgeBase, KnowledgeIndex, KnowledgeSource
from models_admin.selectors.knowledge import (
    knowledge_bases_overview,
    knowledge_index_describe,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: Days the hit rate and the gaps look back.
HIT_RATE_DAYS = 30
#: Questions with no good passage a gaps page lists at most.
GAPS_SHOWN = 50
#: Answers that are the outcome of a question (not still generating, not
#: history an API caller supplied); listing them lets the database use its
#: (status, created_at) index.
_ANSWERED = [
    Message.Status.DONE,
    Message.Status.CANCELLED,
    Message.Status.ERROR,
    Message.Status.BLOCKED,
]
_SURFACE_LABELS: dict[str, StrOrPromise] = {
    Conversation.Source.CHAT: gettext_lazy("Chat"),
    Conversation.Source.API: gettext_lazy("API"),
}


def knowledge_base_get(*, pk: Any) -> KnowledgeBase:
    """Return a base or raise Http404."""
    try:
        return KnowledgeBase.objects.select_related("created_by").get(pk=int(pk))
    except (KnowledgeBase.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such knowledge base.")) from None


def knowledge_demo_get() -> KnowledgeBase | None:
    """The demo help center, when it exists."""
    return KnowledgeBase.objects.filter(name=DEMO_KNOWLEDGE_NAME).first()


def knowledge_source_get(*, base: KnowledgeBase, pk: Any) -> KnowledgeSource:
    """Return a source of ``base`` or raise Http404 (a source of another
    base is as missing as one that never was)."""
    try:
        return KnowledgeSource.objects.select_related("base").get(base=base, pk=int(pk))
    except (KnowledgeSource.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such source in this knowledge base.")) from None


def knowledge_sources(*, base: KnowledgeBase) -> QuerySet[KnowledgeSource]:
    """The base's sources by title."""
    return KnowledgeSource.objects.filter(base=base).order_by("title", "filename", "url", "id")


def knowledge_bases_list() -> list[dict[str, Any]]:
    """Every base by name: ``base``, its sources ``ready``, ``failed`` and
    ``pending`` (queued or fetching), ``passages`` of its ready sources,
    and ``index`` (``knowledge_index_describe``)."""
    # The counts come from the domain's annotations, which the stubs do
    # not follow through a second annotate().
    bases: QuerySet[Any] = knowledge_bases_overview().annotate(
        passage_total=Sum(
            "sources__chunk_count", filter=Q(sources__status=KnowledgeSource.Status.READY)
        )
    )
    rows = []
    for base in bases.order_by("name"):
        index = getattr(base, "index", None) if _has_index(base) else None
        rows.append(
            {
                "base": base,
                "ready": base.source_total - base.source_failed - base.source_pending,
                "failed": base.source_failed,
                "pending": base.source_pending,
                "passages": base.passage_total or 0,
                "index": knowledge_index_describe(base, index),
            }
        )
    return rows


def _has_index(base: KnowledgeBase) -> bool:
    try:
        base.index  # noqa: B018 (the reverse one-to-one raises when missing)
    except KnowledgeIndex.DoesNotExist:
        return False
    return True


def _answers(*, base: KnowledgeBase, since: datetime) -> QuerySet[Message]:
    """The answers grounded in ``base`` since ``since``."""
    return Message.objects.filter(
        status__in=_ANSWERED,
        created_at__gte=since,
        role=Message.Role.ASSISTANT,
        knowledge__base=base.pk,
    )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def knowledge_hit_rates(
    *, base: KnowledgeBase, days: int = HIT_RATE_DAYS, now: datetime | None = None
) -> dict[str, Any]:
    """How the answers grounded in ``base`` over the last ``days`` went:
    ``rows`` per widget site (by name), then the chat and the API, each
    with ``label``, ``site`` (id or None), ``questions``, ``found`` (a
    passage good enough), ``cited`` (the answer cites one) and their
    shares; and ``total``, the same for all of them."""
    since = (now or timezone.now()) - timedelta(days=days)
    grouped = (
        _answers(base=base, since=since)
        .values("conversation__source", "conversation__site_id", "conversation__site__name")
        .annotate(
            questions=Count("id"),
            found=Count("id", filter=Q(knowledge__found=True)),
            # A non-empty list of cited numbers has an element 0.
            cited=Count("id", filter=Q(knowledge__cited__0__isnull=False)),
        )
        .order_by()
    )
    sites: list[dict[str, Any]] = []
    others: dict[str, dict[str, Any]] = {}
    for group in grouped:
        source = group["conversation__source"]
        if source == Conversation.Source.WIDGET:
            row: dict[str, Any] = {
                "label": group["conversation__site__name"] or gettext("Deleted site"),
                "site": group["conversation__site_id"],
            }
            sites.append(row)
        else:
            label = str(_SURFACE_LABELS.get(source, str(source).capitalize()))
            row = others.setdefault(
                label, {"label": label, "site": None, "questions": 0, "found": 0, "cited": 0}
            )
        for name in ("questions", "found", "cited"):
            row[name] = row.get(name, 0) + group[name]
    rows = sorted(sites, key=lambda row: (row["label"].lower(), row["site"] or 0))
    rows += [others[label] for label in ("Chat", "API") if label in others]
    rows += [row for label, row in others.items() if label not in ("Chat", "API")]
    total: dict[str, Any] = {
        "label": gettext("All"),
        "site": None,
        **{name: sum(row[name] for row in rows) for name in ("questions", "found", "cited")},
    }
    for row in [*rows, total]:
        row["found_share"] = _share(row["found"], row["questions"])
        row["cited_share"] = _share(row["cited"], row["questions"])
    return {"rows": rows, "total": total, "days": days, "since": since}


def knowledge_gaps(
    *,
    base: KnowledgeBase,
    days: int = HIT_RATE_DAYS,
    limit: int = GAPS_SHOWN,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest questions (at most ``limit``, over the last ``days``)
    that ``base`` had no good passage for: ``answer`` (the Message, with
    its conversation and site), ``question`` (the text asked: the
    answer's parent, else what was searched), ``surface`` (the site's
    name, "Chat" or "API") and ``match`` (how close its best passage
    came)."""
    since = (now or timezone.now()) - timedelta(days=days)
    answers = (
        _answers(base=base, since=since)
        .filter(knowledge__found=False)
        .select_related("parent", "conversation__site")
        .order_by("-created_at", "-id")[:limit]
    )
    gaps = []
    for answer in answers:
        knowledge = answer.knowledge or {}
        conversation = answer.conversation
        if conversation.source == Conversation.Source.WIDGET:
            surface = (
                conversation.site.name
                if conversation.site is not None
                else gettext("Deleted site")
            )
        else:
            surface = str(_SURFACE_LABELS.get(conversation.source, conversation.source))
        question = answer.parent.content if answer.parent is not None else ""
        gaps.append(
            {
                "answer": answer,
                "question": question or str(knowledge.get("query") or ""),
                "surface": surface,
                "match": knowledge.get("match"),
            }
        )
    return gaps


def knowledge_gap_count(
    *, base: KnowledgeBase, days: int = HIT_RATE_DAYS, now: datetime | None = None
) -> int:
    """How many questions over the last ``days`` ``base`` had no good
    passage for."""
    since = (now or timezone.now()) - timedelta(days=days)
    return _answers(base=base, since=since).filter(knowledge__found=False).count()


def knowledge_users(*, base: KnowledgeBase) -> dict[str, list[Any]]:
    """What grounds its answers in ``base``: ``sites`` (widget sites) and
    ``keys`` (API keys that are not revoked)."""
    return {
        "sites": list(WidgetSite.objects.filter(knowledge_base=base).order_by("name", "id")),
        "keys": list(
            ApiKey.objects.filter(knowledge_base=base, revoked_at__isnull=True)
            .select_related("user")
            .order_by("name", "id")
        ),
    }
