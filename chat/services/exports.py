"""Stored conversations as training data: a conversation's active path in
the dataset format, and datasets exported from the conversations a filter
selects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser

from chat.models import Conversation, Feedback, Message
from chat.selectors import thread_load
from chat.services.privacy import training_allowed_q
from models_admin.filters import compiled_rules
from models_admin.models import Dataset
from models_admin.services.dataset_cleaning import example_clean
from models_admin.services.datasets import dataset_create

#: One conversation in the training format: ``{"role", "content"}`` dicts.
TrainingMessages = list[dict[str, str]]


def conversation_training_messages(
    *,
    conversation: Conversation,
    liked: set[int] | None = None,
    thumbs_up_only: bool = False,
    exclude_blocked: bool = True,
) -> TrainingMessages:
    """Return a stored conversation's active path in the training format,
    or an empty list when nothing in it can be trained on.

    The path is cut before the first answer that did not finish cleanly
    (stopped, failed, blocked) and, with ``thumbs_up_only``, after its last
    answer rated up. ``liked`` holds the ids of messages rated up; without
    it the conversation's own feedback is read.
    """
    path = thread_load(conversation=conversation).path
    if liked is None:
        liked = set(
            Feedback.objects.filter(
                rating=Feedback.Rating.UP, message__conversation=conversation
            ).values_list("message_id", flat=True)
        )
    messages: TrainingMessages = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt})
    keep_until = len(messages)
    for position, message in enumerate(path):
        following = path[position + 1] if position + 1 < len(path) else None
        staff_next = (
            following is not None
            and following.role == Message.Role.ASSISTANT
            and following.author_id is not None
        )
        if message.role == Message.Role.ASSISTANT and message.author_id is None and staff_next:
            # A person took over from here: their reply is the answer to
            # train on, not the model's that it replaced.
            continue
        if message.role == Message.Role.ASSISTANT and message.author_id is not None:
            if messages and messages[-1]["role"] == "assistant":
                # Several replies in a row are one answer.
                messages[-1]["content"] += "\n\n" + message.content
            elif message.content.strip():
                messages.append({"role": "assistant", "content": message.content})
            answered = bool(messages) and messages[-1]["role"] == "assistant"
            if answered and (not thumbs_up_only or message.pk in liked):
                keep_until = len(messages)
            continue
        if message.role == Message.Role.ASSISTANT:
            # Only a version's finished answer: a stopped, failed or blocked
            # one, or text an API caller supplied as history, ends the path.
            clean = message.status == Message.Status.DONE and message.content.strip()
            if not clean or (exclude_blocked and message.status == Message.Status.BLOCKED):
                break
            messages.append({"role": "assistant", "content": message.content})
            if not thumbs_up_only or message.pk in liked:
                keep_until = len(messages)
        else:
            if messages and messages[-1]["role"] == "user":
                break  # two questions in a row: the answer between failed
            messages.append({"role": "user", "content": message.content})
    messages = messages[:keep_until]
    if not any(m["role"] == "assistant" for m in messages):
        return []
    return messages


def conversation_origin(conversation: Conversation) -> dict[str, Any]:
    """Where a dataset example came from, so that deleting the person's
    data can find it (``chat.services.privacy.examples_redact``)."""
    return {
        "kind": "conversation",
        "conversation_id": conversation.pk,
        "user_id": conversation.user_id,
        "site_id": conversation.site_id,
    }


def dataset_export(
    *,
    name: str,
    user: AbstractBaseUser | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    thumbs_up_only: bool = False,
    source: str = "",
    site_id: int | None = None,
    exclude_flagged: bool = True,
    apply_rules: bool = True,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Turn stored conversations into a dataset: each conversation's active
    path as ``conversation_training_messages`` cuts it; conversations left
    without an answer, and flagged ones with ``exclude_flagged``, are
    skipped, and so are those whose people chose not to have their chats
    used for training (``training_allowed_q``). With ``apply_rules`` (the
    default) the content filter rules of each conversation's surface run on
    it as ``dataset clean`` runs them: what they block is left out, what
    they mask stays masked."""
    rows = Conversation.objects.filter(training_allowed_q())
    if date_from is not None:
        rows = rows.filter(updated_at__gte=date_from)
    if date_to is not None:
        rows = rows.filter(updated_at__lte=date_to)
    if source:
        rows = rows.filter(source=source)
    if site_id is not None:
        rows = rows.filter(site_id=site_id)
    if exclude_flagged:
        # Marked for review by staff or a filter rule: not training data.
        rows = rows.filter(flagged_at__isnull=True)
    liked = set(
        Feedback.objects.filter(rating=Feedback.Rating.UP).values_list("message_id", flat=True)
    )
    conversations: list[TrainingMessages] = []
    origins: list[dict[str, Any]] = []
    cleaned = {"mask": 0, "drop": 0}
    book = compiled_rules() if apply_rules else None
    for conversation in rows.order_by("pk").iterator():
        messages = conversation_training_messages(
            conversation=conversation,
            liked=liked,
            thumbs_up_only=thumbs_up_only,
            exclude_blocked=exclude_flagged,
        )
        if messages and book is not None:
            # The rules of the surface it came from, as the cleaning of a
            # dataset applies them.
            example = example_clean(0, messages, book, conversation.source)
            if example.action in cleaned:
                cleaned[example.action] += 1
            messages = [] if example.action == "drop" else example.messages
        if messages:
            conversations.append(messages)
            origins.append(conversation_origin(conversation))
    filters = {
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
        "thumbs_up_only": thumbs_up_only,
        "source": source or None,
        "site": site_id,
        "exclude_flagged": exclude_flagged,
        "rules_applied": apply_rules,
        "masked": cleaned["mask"],
        "dropped": cleaned["drop"],
    }
    return dataset_create(
        name=name,
        conversations=conversations,
        source=Dataset.Source.EXPORT,
        eval_fraction=eval_fraction,
        seed=seed,
        filters=filters,
        user=user,
        origins=origins,
    )
