"""Staff review of users' conversations: the audit trail, flags, and
adding conversations to training datasets. Every write here records who
did it in a ReviewEvent."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext, pgettext

from chat.models import Conversation, Feedback
from chat.services.exports import conversation_origin, conversation_training_messages
from chat.services.privacy import training_allowed_q
from models_admin.models import Dataset, FilterHit, ReviewEvent
from models_admin.services.datasets import dataset_append, dataset_create

logger = logging.getLogger(__name__)

_DETAIL_CHARS = ReviewEvent._meta.get_field("detail").max_length or 500


def review_event_record(
    *,
    staff: AbstractBaseUser,
    conversation: Conversation | None,
    action: str,
    detail: str = "",
) -> ReviewEvent:
    """Store one audit row: ``staff`` did ``action`` to ``conversation``.
    A detail longer than the column is cut, never refused: the audit row
    matters more than its last words."""
    if len(detail) > _DETAIL_CHARS:
        detail = detail[: _DETAIL_CHARS - 1] + "…"
    event = ReviewEvent(staff_id=staff.pk, conversation=conversation, action=action, detail=detail)
    # The column takes no conversation (a view of API hits that were not
    # stored as one), though the field is not blank=True.
    event.full_clean(exclude=["conversation"] if conversation is None else None)
    event.save()
    return event


def filter_hit_excerpts_viewed(
    *, staff: AbstractBaseUser, hits: Iterable[FilterHit]
) -> list[ReviewEvent]:
    """Record that ``staff`` read the excerpts of ``hits``: one view per
    conversation, naming the hits, and one for the hits of no
    conversation (API calls that were not stored)."""
    by_conversation: dict[int | None, list[int]] = {}
    for hit in hits:
        by_conversation.setdefault(hit.conversation_id, []).append(hit.pk)
    conversations = Conversation.objects.in_bulk([pk for pk in by_conversation if pk is not None])
    events = []
    with transaction.atomic():
        for conversation_id, hit_ids in by_conversation.items():
            numbers = ", ".join(f"#{pk}" for pk in sorted(hit_ids))
            events.append(
                review_event_record(
                    staff=staff,
                    conversation=conversations.get(conversation_id)
                    if conversation_id is not None
                    else None,
                    action=ReviewEvent.Action.VIEW,
                    detail=f"filter hit excerpts {numbers}",
                )
            )
    return events


def _flag_save(
    *, conversation: Conversation, by: AbstractBaseUser, action: str, detail: str
) -> None:
    """Store the conversation's flag as set on it, with its audit row."""
    conversation.full_clean()
    with transaction.atomic():
        conversation.save(update_fields=["flagged_at", "flag_reason"])
        review_event_record(staff=by, conversation=conversation, action=action, detail=detail)


def conversation_flag(
    *, conversation: Conversation, by: AbstractBaseUser, reason: str
) -> Conversation:
    """Flag the conversation for attention with a reason; flagging again
    replaces the reason. The conversation's ``updated_at`` is left alone so
    its owner's list keeps its order."""
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": [gettext("Say why the conversation is flagged.")]})
    conversation.flagged_at = timezone.now()
    conversation.flag_reason = reason
    _flag_save(conversation=conversation, by=by, action=ReviewEvent.Action.FLAG, detail=reason)
    logger.info("Conversation %s flagged by %s", conversation.pk, by.pk)
    return conversation


def conversation_unflag(
    *, conversation: Conversation, by: AbstractBaseUser, reason: str = ""
) -> Conversation:
    """Clear the conversation's flag; ``reason`` goes into the audit row
    together with the reason the flag had. Raise ValidationError when the
    conversation is not flagged."""
    if conversation.flagged_at is None:
        raise ValidationError(gettext("This conversation is not flagged."))
    previous = conversation.flag_reason
    conversation.flagged_at = None
    conversation.flag_reason = ""
    detail = reason.strip()
    if previous:
        detail = f"{detail} (was: {previous})" if detail else f"was: {previous}"
    _flag_save(conversation=conversation, by=by, action=ReviewEvent.Action.UNFLAG, detail=detail)
    logger.info("Conversation %s unflagged by %s", conversation.pk, by.pk)
    return conversation


def conversations_dataset_add(
    *,
    conversations: Iterable[Conversation],
    by: AbstractBaseUser,
    dataset: Dataset | None = None,
    new_name: str = "",
    thumbs_up_only: bool = False,
    exclude_flagged: bool = True,
    eval_fraction: float = 0.1,
) -> tuple[Dataset, int, int]:
    """Add the conversations' active paths to ``dataset``, or to a new
    dataset named ``new_name``, and return ``(dataset, conversations
    added, examples added)``.

    Each conversation is cut as ``conversation_training_messages`` cuts
    it (answers blocked by a filter always end it); with
    ``thumbs_up_only`` only the turns up to its last answer rated up are
    kept, and with ``exclude_flagged`` flagged conversations are skipped.
    Conversations that leave nothing to train on, and those whose example
    the dataset already holds, are skipped. Raise ValidationError when
    nothing at all can be trained on, or when the target is missing,
    doubled or its new name is taken.
    """
    if (dataset is None) == (not new_name.strip()):
        raise ValidationError(gettext("Choose an existing dataset or name a new one (not both)."))
    chosen = sorted({c.pk: c for c in conversations}.values(), key=lambda c: c.pk)
    if not chosen:
        raise ValidationError(gettext("Select at least one conversation."))
    allowed = set(
        Conversation.objects.filter(
            training_allowed_q(), pk__in=[c.pk for c in chosen]
        ).values_list("pk", flat=True)
    )
    candidates = [
        c for c in chosen if c.pk in allowed and not (exclude_flagged and c.flagged_at is not None)
    ]
    liked = set(
        Feedback.objects.filter(
            rating=Feedback.Rating.UP, message__conversation__in=candidates
        ).values_list("message_id", flat=True)
    )
    sources: list[Conversation] = []
    examples: list[list[dict[str, str]]] = []
    for conversation in candidates:
        messages = conversation_training_messages(
            conversation=conversation, liked=liked, thumbs_up_only=thumbs_up_only
        )
        if messages:
            sources.append(conversation)
            examples.append(messages)
    if not examples:
        refused = len(chosen) - len(allowed)
        if thumbs_up_only and exclude_flagged:
            text = gettext(
                "None of the selected conversations has an answer to train on (rated up) "
                "that is not flagged"
            )
        elif thumbs_up_only:
            text = gettext(
                "None of the selected conversations has an answer to train on (rated up)"
            )
        elif exclude_flagged:
            text = gettext(
                "None of the selected conversations has an answer to train on that is not flagged"
            )
        else:
            text = gettext("None of the selected conversations has an answer to train on")
        if refused:
            text += gettext(
                "; %(count)s of them belong to people who chose not to have their chats used "
                "for training."
            ) % {"count": refused}
        else:
            text += pgettext("end of a sentence", ".")
        raise ValidationError(text)
    options = {
        "conversations": [c.pk for c in sources],
        "thumbs_up_only": thumbs_up_only,
        "exclude_flagged": exclude_flagged,
        "by": by.get_username(),
    }
    with transaction.atomic():
        if dataset is None:
            dataset = dataset_create(
                name=new_name,
                conversations=examples,
                source=Dataset.Source.EXPORT,
                description="Conversations chosen in review.",
                eval_fraction=eval_fraction,
                filters={"review": options},
                user=by,
                origins=[conversation_origin(c) for c in sources],
            )
            added = list(range(len(examples)))
        else:
            options["at"] = timezone.now().isoformat()
            added = dataset_append(
                dataset=dataset,
                conversations=examples,
                filters=options,
                origins=[conversation_origin(c) for c in sources],
            )
        for position in added:
            review_event_record(
                staff=by,
                conversation=sources[position],
                action=ReviewEvent.Action.DATASET_ADD,
                detail=f"dataset {dataset.name} (#{dataset.pk})",
            )
    logger.info(
        "%s added %s of %s conversations to dataset %s",
        by.pk,
        len(added),
        len(chosen),
        dataset.pk,
    )
    # One example per conversation today; the two counts are kept apart so
    # callers need not change if a conversation ever yields several.
    return dataset, len(added), len(added)
