"""People's control over their data: whether their chats may train models,
deleting an account with everything it owns, and the audit of both.

Deleting an account removes its conversations (every branch), messages,
feedback, API keys, exports and the widget identities that carry its
email address. What outlives it holds no text of theirs: dataset examples
built from their conversations keep a lineage mark and nothing else, filter
hits lose their excerpts, and API usage rows lose the caller's name.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.models import (
    ApiRequest,
    Conversation,
    DataExport,
    PrivacyChoice,
    PrivacyEvent,
    WidgetVisitor,
)

logger = logging.getLogger(__name__)

#: What a redacted dataset example says instead of its text.
REDACTED_NOTE = "Removed: the person it came from deleted their data."


def training_default() -> bool:
    """Whether chats train models when nobody chose (``TRAINING_OPT_IN_DEFAULT``)."""
    return bool(settings.TRAINING_OPT_IN_DEFAULT)


def training_choice(*, user: AbstractBaseUser) -> bool | None:
    """The user's own choice, or None where they made none."""
    return (
        PrivacyChoice.objects.filter(user_id=user.pk)
        .values_list("train_on_chats", flat=True)
        .first()
    )


def training_allowed(*, user: AbstractBaseUser) -> bool:
    """Whether the user's chats may be used for training now."""
    choice = training_choice(user=user)
    return training_default() if choice is None else choice


def training_choice_set(*, user: AbstractBaseUser, allowed: bool) -> None:
    """Record the user's choice; it applies to every export made after."""
    with transaction.atomic():
        PrivacyChoice.objects.update_or_create(
            user_id=user.pk, defaults={"train_on_chats": allowed}
        )
        privacy_event_record(
            actor=user,
            subject=user,
            action=PrivacyEvent.Action.TRAINING_CHOICE,
            detail="may train models" if allowed else "not for training",
        )


def training_allowed_q(prefix: str = "") -> Q:
    """A filter on conversations (through ``prefix``, e.g. ``"conversation__"``
    for messages) keeping those that may be used for training: a user's
    per their choice or the default, a widget visitor's per the site's
    switch or the default. Temporary chats never are, nor conversations
    retention anonymised (their person can no longer say)."""
    default = training_default()
    user_ok = Q(**{f"{prefix}user__privacy__train_on_chats": True})
    site_ok = Q(**{f"{prefix}site__train_on_conversations": True})
    if default:
        user_ok |= Q(**{f"{prefix}user__privacy__isnull": True}) | Q(
            **{f"{prefix}user__privacy__train_on_chats__isnull": True}
        )
        site_ok |= Q(**{f"{prefix}site__train_on_conversations__isnull": True})
    owned = (Q(**{f"{prefix}user__isnull": False}) & user_ok) | (
        Q(**{f"{prefix}user__isnull": True}) & site_ok
    )
    return owned & Q(**{f"{prefix}temporary": False, f"{prefix}anonymised_at__isnull": True})


def privacy_event_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    subject: AbstractBaseUser | None = None,
    subject_id: int | None = None,
    subject_name: str = "",
    detail: str = "",
    counts: dict[str, int] | None = None,
    actor_name: str = "",
) -> PrivacyEvent:
    """Add a row to the privacy log. ``actor`` None is the system unless
    ``actor_name`` names who it was."""
    return PrivacyEvent.objects.create(
        actor_id=actor.pk if actor is not None else None,
        actor_name=actor.get_username() if actor is not None else (actor_name or "system"),
        subject_id=subject.pk if subject is not None else subject_id,
        subject_name=subject.get_username() if subject is not None else subject_name,
        action=action,
        detail=detail[:500],
        counts=counts or {},
    )


def user_visitors(*, user: AbstractBaseUser) -> Any:
    """Widget identities that are this account's: visitors a site
    identified with the account's email address."""
    email = (getattr(user, "email", "") or "").strip()
    if not email:
        return WidgetVisitor.objects.none()
    return WidgetVisitor.objects.filter(email__iexact=email)


def user_conversations(*, user: AbstractBaseUser) -> Any:
    """Every conversation the account owns, its widget identities' included."""
    return Conversation.objects.filter(
        Q(user_id=user.pk) | Q(visitor__in=user_visitors(user=user))
    )


def examples_redact(*, user_id: int | None, conversation_ids: list[int]) -> int:
    """Strip the text of every dataset example made from the user's
    conversations, keeping the row as a lineage mark; return how many."""
    from models_admin.models import DatasetExample

    match = Q(origin__conversation_id__in=conversation_ids) if conversation_ids else Q(pk=None)
    if user_id is not None:
        match |= Q(origin__user_id=user_id)
    now = timezone.now().isoformat()
    redacted = 0
    for example in DatasetExample.objects.filter(match):
        if example.origin.get("redacted"):
            continue
        origin = {
            key: example.origin.get(key)
            for key in ("kind", "conversation_id", "user_id", "site_id")
            if example.origin.get(key) is not None
        }
        example.origin = {**origin, "redacted": True, "redacted_at": now, "note": REDACTED_NOTE}
        example.messages = []
        example.rejected = ""
        example.tokens = None
        example.save(update_fields=["origin", "messages", "rejected", "tokens"])
        redacted += 1
    return redacted


def conversations_erase(*, conversation_ids: list[int]) -> dict[str, int]:
    """Remove what outlives the conversations' rows and holds their text:
    dataset examples (kept as lineage marks), filter-hit excerpts and the
    streams of their answers in Redis. The caller deletes the rows."""
    from models_admin.models import FilterHit

    hits = FilterHit.objects.filter(conversation_id__in=conversation_ids).update(
        excerpt="", visitor=""
    )
    _streams_forget(conversation_ids)
    return {
        "dataset_examples": examples_redact(user_id=None, conversation_ids=conversation_ids),
        "filter_hits": hits,
    }


def _streams_forget(conversation_ids: list[int]) -> None:
    """Drop the streamed answers still held in Redis for these conversations."""
    from chat.models import Message
    from inference.connection import cancel_key, generation_key, redis_client

    ids = [
        generation_id
        for generation_id in Message.objects.filter(
            conversation_id__in=conversation_ids, generation_id__isnull=False
        )
        .values_list("generation_id", flat=True)
        .iterator()
        if generation_id
    ]
    if ids:
        try:
            client = redis_client()
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                client.delete(*(generation_key(g) for g in batch), *(cancel_key(g) for g in batch))
        except Exception:  # Redis down: the streams expire on their own
            logger.warning("Could not drop %s answer streams from Redis", len(ids), exc_info=True)


def user_delete(
    *, user: AbstractBaseUser, actor: AbstractBaseUser | None, reason: str = ""
) -> dict[str, int]:
    """Delete the account and everything it owns (see the module); record
    who did it. Return counts of what went."""
    from chat.models import ApiKey, Feedback
    from models_admin.models import FilterHit

    user_id, username = user.pk, user.get_username()
    by_self = actor is not None and actor.pk == user_id
    exports = list(DataExport.objects.filter(user_id=user_id).values_list("file_name", flat=True))
    with transaction.atomic():
        conversation_ids = list(user_conversations(user=user).values_list("pk", flat=True))
        counts = conversations_erase(conversation_ids=conversation_ids)
        counts["dataset_examples"] += examples_redact(user_id=user_id, conversation_ids=[])
        counts["filter_hits"] += FilterHit.objects.filter(user_id=user_id).update(
            excerpt="", visitor=""
        )
        counts["api_requests"] = ApiRequest.objects.filter(user_id=user_id).update(
            end_user="", error=""
        )
        counts["conversations"] = len(conversation_ids)
        counts["feedback"] = Feedback.objects.filter(user_id=user_id).count()
        counts["api_keys"] = ApiKey.objects.filter(user_id=user_id).count()
        visitors = user_visitors(user=user)
        counts["widget_identities"] = visitors.count()
        Conversation.objects.filter(pk__in=conversation_ids).delete()
        visitors.delete()
        get_user_model().objects.filter(pk=user_id).delete()
        # The account is gone: one acting on their own is named, not linked.
        privacy_event_record(
            actor=None if by_self else actor,
            actor_name=username if by_self else "",
            action=PrivacyEvent.Action.ACCOUNT_DELETED,
            subject_id=user_id,
            subject_name=username,
            detail=("by themselves" if by_self else "on request")
            + (f": {reason}" if reason else ""),
            counts=counts,
        )
    from chat.services.data_export import export_file_remove

    for name in exports:
        export_file_remove(name)
    logger.info("Account %s deleted (%s)", user_id, "by themselves" if by_self else "on request")
    return counts
