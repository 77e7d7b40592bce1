"""Datasets: uploaded JSONL, exports of stored conversations, the demo."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from models_admin.dataset_format import jsonl_parse, split_indices
from models_admin.demo_data import demo_conversations
from models_admin.models import Dataset, DatasetExample
from models_admin.selectors import model_version_get_production

logger = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


def _tokenizer() -> Any | None:
    """The production model's tokenizer, for token statistics."""
    version = model_version_get_production()
    if version is None:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(version.path))
    except Exception:
        logger.warning("No tokenizer for dataset statistics", exc_info=True)
        return None


def _token_counts(tokenizer: Any, messages: Conversation) -> tuple[int, int]:
    """Tokens of the rendered conversation and of its assistant turns."""
    from models_admin.training.data import encode

    encoded = encode(tokenizer, messages, max_length=1_000_000)
    return len(encoded.input_ids), encoded.trained_tokens


def dataset_create(
    *,
    name: str,
    conversations: list[Conversation],
    source: str,
    description: str = "",
    eval_fraction: float = 0.1,
    seed: int = 0,
    filters: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
) -> Dataset:
    """Store the conversations with a train/eval split and statistics, all
    or nothing."""
    if not conversations:
        raise ValidationError({"conversations": ["A dataset needs at least one example."]})
    try:
        train, evaluation = split_indices(
            len(conversations), eval_fraction=eval_fraction, seed=seed
        )
    except ValueError as exc:
        raise ValidationError({"eval_fraction": [str(exc)]}) from None
    dataset = Dataset(
        name=name.strip(),
        description=description,
        source=source,
        eval_fraction=eval_fraction,
        seed=seed,
        filters=filters or {},
        created_by_id=user.pk if user is not None else None,
    )
    dataset.full_clean()
    tokenizer = _tokenizer()
    eval_set = set(evaluation)
    rows = []
    tokens = assistant_tokens = 0
    for index, messages in enumerate(conversations):
        count = None
        if tokenizer is not None:
            count, trained = _token_counts(tokenizer, messages)
            tokens += count
            assistant_tokens += trained
        rows.append(
            DatasetExample(
                index=index,
                split=DatasetExample.Split.EVAL
                if index in eval_set
                else DatasetExample.Split.TRAIN,
                messages=messages,
                tokens=count,
            )
        )
    dataset.stats = {
        "examples": len(conversations),
        "train": len(train),
        "eval": len(evaluation),
        "messages": sum(len(m) for m in conversations),
        "tokens": tokens if tokenizer is not None else None,
        "assistant_tokens": assistant_tokens if tokenizer is not None else None,
    }
    with transaction.atomic():
        dataset.save()
        for row in rows:
            row.dataset = dataset
        DatasetExample.objects.bulk_create(rows, batch_size=500)
    return dataset


def dataset_upload(
    *,
    name: str,
    data: bytes,
    description: str = "",
    eval_fraction: float = 0.1,
    seed: int = 0,
    user: AbstractBaseUser | None = None,
) -> Dataset:
    """Store an uploaded JSONL file. Raise DatasetFormatError naming every
    bad line; nothing is stored from a file that fails."""
    conversations = jsonl_parse(data)
    return dataset_create(
        name=name,
        conversations=conversations,
        source=Dataset.Source.UPLOAD,
        description=description,
        eval_fraction=eval_fraction,
        seed=seed,
        user=user,
    )


DEMO_NAME = "Demo: shop customer service"


def dataset_demo_create(*, name: str = DEMO_NAME, count: int = 300) -> Dataset:
    """The demo dataset; an existing one of that name is returned as is."""
    existing = Dataset.objects.filter(name=name).first()
    if existing is not None:
        return existing
    return dataset_create(
        name=name,
        conversations=demo_conversations(count=count),
        source=Dataset.Source.DEMO,
        description="Customer-service conversations of a fictional shop, written for the demo.",
    )


def dataset_export(
    *,
    name: str,
    user: AbstractBaseUser | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    thumbs_up_only: bool = False,
    source: str = "",
    exclude_flagged: bool = True,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Turn stored conversations into a dataset: each conversation's active
    path, cut before the first answer that did not finish cleanly (stopped,
    failed, blocked) and, with ``thumbs_up_only``, after its last answer
    rated up; conversations left without an answer are skipped."""
    from chat.models import Conversation as ChatConversation
    from chat.models import Feedback, Message
    from chat.selectors import thread_load

    rows = ChatConversation.objects.all()
    if date_from is not None:
        rows = rows.filter(updated_at__gte=date_from)
    if date_to is not None:
        rows = rows.filter(updated_at__lte=date_to)
    if source:
        rows = rows.filter(source=source)
    liked = set(
        Feedback.objects.filter(rating=Feedback.Rating.UP).values_list("message_id", flat=True)
    )
    conversations: list[Conversation] = []
    for conversation in rows.order_by("pk").iterator():
        path = thread_load(conversation=conversation).path
        messages: Conversation = []
        if conversation.system_prompt.strip():
            messages.append({"role": "system", "content": conversation.system_prompt})
        keep_until = len(messages)
        for message in path:
            if message.role == Message.Role.ASSISTANT:
                clean = message.status == Message.Status.DONE and message.content.strip()
                if not clean or (exclude_flagged and message.status == Message.Status.BLOCKED):
                    break
                messages.append({"role": "assistant", "content": message.content})
                if not thumbs_up_only or message.pk in liked:
                    keep_until = len(messages)
            else:
                if messages and messages[-1]["role"] == "user":
                    break  # two questions in a row: the answer between failed
                messages.append({"role": "user", "content": message.content})
        messages = messages[:keep_until]
        if any(m["role"] == "assistant" for m in messages):
            conversations.append(messages)
    filters = {
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
        "thumbs_up_only": thumbs_up_only,
        "source": source or None,
        "exclude_flagged": exclude_flagged,
    }
    return dataset_create(
        name=name,
        conversations=conversations,
        source=Dataset.Source.EXPORT,
        eval_fraction=eval_fraction,
        seed=seed,
        filters=filters,
        user=user,
    )
