"""Retention: how long conversations, audit rows and filter hits are
kept, and the daily run (Celery beat) that removes what is due.

Per source (chat, API, widget) a number of days without activity after
which a conversation is deleted or anonymised (0 keeps it). Anonymising
keeps the conversation for statistics and review but cuts it from its
person: owner and widget identity go, the title goes, and the text of its
messages, system prompt and ratings keeps only PII-masked words. An
anonymised conversation is never used for training. Temporary chats go
after ``TEMPORARY_CHAT_HOURS``; expired data exports lose their files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext, ngettext

from chat.models import ApiRequest, Conversation, Feedback, Message, PrivacyEvent
from chat.services.data_export import exports_expire_due
from chat.services.privacy import conversations_erase, privacy_event_record
from models_admin.pii import pii_mask

logger = logging.getLogger(__name__)

DELETE, ANONYMISE = "delete", "anonymise"
#: Conversations handled per transaction.
BATCH = 200


@dataclass(frozen=True)
class Policy:
    source: str
    label: str
    days: int
    action: str

    @property
    def keeps_forever(self) -> bool:
        return self.days <= 0

    def describe(self) -> str:
        """The policy in words, in the active language (English in the
        privacy log the retention run writes)."""
        if self.keeps_forever:
            return gettext("kept until their people delete them")
        if self.action == DELETE:
            text = ngettext(
                "deleted %(days)s day after the last message",
                "deleted %(days)s days after the last message",
                self.days,
            )
        else:
            text = ngettext(
                "anonymised %(days)s day after the last message",
                "anonymised %(days)s days after the last message",
                self.days,
            )
        return text % {"days": self.days}


def retention_policies() -> list[Policy]:
    """The policy of each conversation source, from the settings."""
    return [
        Policy(source, str(label), *settings.RETENTION[source])
        for source, label in Conversation.Source.choices
    ]


def retention_next_run(now: datetime | None = None) -> datetime:
    """When the daily run comes next: ``RETENTION_HOUR`` o'clock, site time."""
    local = timezone.localtime(now or timezone.now())
    run = local.replace(hour=settings.RETENTION_HOUR, minute=0, second=0, microsecond=0)
    return run if run > local else run + timedelta(days=1)


def retention_last_run() -> PrivacyEvent | None:
    return PrivacyEvent.objects.filter(action=PrivacyEvent.Action.RETENTION).first()


def conversations_due(policy: Policy, now: datetime) -> Any:
    """The conversations of the policy's source that its days have passed."""
    if policy.keeps_forever:
        return Conversation.objects.none()
    due = Conversation.objects.filter(
        source=policy.source, updated_at__lt=now - timedelta(days=policy.days), temporary=False
    )
    if policy.action == ANONYMISE:
        due = due.filter(anonymised_at__isnull=True)
    return due


def conversations_delete(conversation_ids: list[int]) -> int:
    """Delete conversations with what outlives them (see ``conversations_erase``)."""
    with transaction.atomic():
        conversations_erase(conversation_ids=conversation_ids)
        deleted, _ = Conversation.objects.filter(pk__in=conversation_ids).delete()
    return len(conversation_ids) if deleted else 0


def _knowledge_masked(knowledge: dict[str, Any]) -> dict[str, Any]:
    if knowledge.get("query"):
        return {**knowledge, "query": pii_mask(knowledge["query"])}
    return knowledge


def conversations_anonymise(conversation_ids: list[int], now: datetime) -> int:
    """Cut conversations from their people (see the module)."""
    with transaction.atomic():
        conversations_erase(conversation_ids=conversation_ids)
        rows = list(Conversation.objects.select_for_update().filter(pk__in=conversation_ids))
        for conversation in rows:
            conversation.user = None
            conversation.visitor = None
            conversation.title = ""
            conversation.title_is_auto = False
            conversation.pinned_at = None
            conversation.system_prompt = pii_mask(conversation.system_prompt)
            conversation.flag_reason = pii_mask(conversation.flag_reason)
            conversation.anonymised_at = now
        Conversation.objects.bulk_update(
            rows,
            [
                "user",
                "visitor",
                "title",
                "title_is_auto",
                "pinned_at",
                "system_prompt",
                "flag_reason",
                "anonymised_at",
            ],
            batch_size=BATCH,
        )
        messages = list(Message.objects.filter(conversation_id__in=conversation_ids))
        for message in messages:
            message.content = pii_mask(message.content)
            message.error = ""
            message.tokens = []
            message.knowledge = _knowledge_masked(message.knowledge or {})
        Message.objects.bulk_update(
            messages, ["content", "error", "tokens", "knowledge"], batch_size=BATCH
        )
        ratings = list(Feedback.objects.filter(message__conversation_id__in=conversation_ids))
        for rating in ratings:
            rating.user = None
            rating.reason = pii_mask(rating.reason)
        Feedback.objects.bulk_update(ratings, ["user", "reason"], batch_size=BATCH)
        ApiRequest.objects.filter(conversation_id__in=conversation_ids).update(
            key=None, user=None, end_user="", error=""
        )
    return len(rows)


def _in_batches(queryset: Any, handle: Any) -> int:
    done = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return done
        done += handle(ids)


def retention_run(*, now: datetime | None = None) -> dict[str, int]:
    """Remove everything that is due; record the run and return its counts."""
    from models_admin.models import FilterHit, ReviewEvent

    now = now or timezone.now()
    counts: dict[str, int] = {}
    for policy in retention_policies():
        due = conversations_due(policy, now)
        if policy.action == ANONYMISE:
            counts[f"{policy.source}_anonymised"] = _in_batches(
                due, lambda ids: conversations_anonymise(ids, now)
            )
        else:
            counts[f"{policy.source}_deleted"] = _in_batches(due, conversations_delete)
    temporary = Conversation.objects.filter(
        temporary=True, updated_at__lt=now - timedelta(hours=settings.TEMPORARY_CHAT_HOURS)
    )
    counts["temporary_deleted"] = _in_batches(temporary, conversations_delete)
    if settings.RETENTION_FILTER_HITS_DAYS > 0:
        cutoff = now - timedelta(days=settings.RETENTION_FILTER_HITS_DAYS)
        counts["filter_hits_deleted"], _ = FilterHit.objects.filter(created_at__lt=cutoff).delete()
    if settings.RETENTION_AUDIT_DAYS > 0:
        cutoff = now - timedelta(days=settings.RETENTION_AUDIT_DAYS)
        counts["review_events_deleted"], _ = ReviewEvent.objects.filter(
            created_at__lt=cutoff
        ).delete()
        counts["privacy_events_deleted"], _ = PrivacyEvent.objects.filter(
            created_at__lt=cutoff
        ).delete()
    counts["exports_expired"] = exports_expire_due()
    # The log is written once, in the site's language, whoever reads it.
    with translation.override(settings.LANGUAGE_CODE):
        detail = "; ".join(f"{p.label}: {p.describe()}" for p in retention_policies())
    privacy_event_record(
        actor=None, action=PrivacyEvent.Action.RETENTION, detail=detail, counts=counts
    )
    logger.info("Retention run: %s", counts)
    return counts
