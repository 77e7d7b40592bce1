"""Datasets: uploaded JSONL, the demo, and appending examples; exports of
stored conversations are ``chat.services.exports``."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils.translation import gettext

from models_admin.dataset_format import (
    DatasetFormatError,
    LineError,
    jsonl_parse,
    pair_parse,
    split_indices,
)
from models_admin.demo_data import demo_conversations, demo_preference_pairs
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


def _examples_build(
    conversations: list[Conversation],
    *,
    start: int,
    eval_offsets: set[int],
    tokenizer: Any | None,
    rejected: list[str] | None = None,
    origins: list[dict[str, Any]] | None = None,
) -> tuple[list[DatasetExample], int, int]:
    """Unsaved examples numbered from start, with their split and token
    counts (and a pair's rejected answer and origin); return them with the
    total and assistant token counts."""
    rows = []
    tokens = assistant_tokens = 0
    for offset, messages in enumerate(conversations):
        count = None
        if tokenizer is not None:
            count, trained = _token_counts(tokenizer, messages)
            tokens += count
            assistant_tokens += trained
        split = DatasetExample.Split.EVAL if offset in eval_offsets else DatasetExample.Split.TRAIN
        rows.append(
            DatasetExample(
                index=start + offset,
                split=split,
                messages=messages,
                tokens=count,
                rejected=rejected[offset] if rejected else "",
                origin=origins[offset] if origins else {},
            )
        )
    return rows, tokens, assistant_tokens


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
    kind: str = Dataset.Kind.CONVERSATIONS,
    rejected: list[str] | None = None,
    origins: list[dict[str, Any]] | None = None,
) -> Dataset:
    """Store the conversations with a train/eval split and statistics, all
    or nothing. A preference dataset's conversations end with the chosen
    answers; ``rejected`` holds the other answer of each."""
    if not conversations:
        raise ValidationError(
            {"conversations": [gettext("A dataset needs at least one example.")]}
        )
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
        kind=kind,
    )
    dataset.full_clean()
    tokenizer = _tokenizer()
    rows, tokens, assistant_tokens = _examples_build(
        conversations,
        start=0,
        eval_offsets=set(evaluation),
        tokenizer=tokenizer,
        rejected=rejected,
        origins=origins,
    )
    dataset.stats = {
        "examples": len(conversations),
        "train": len(train),
        "eval": len(evaluation),
        "messages": sum(len(m) for m in conversations),
        "tokens": tokens if tokenizer is not None else None,
        "assistant_tokens": assistant_tokens if tokenizer is not None else None,
    }
    if kind == Dataset.Kind.PREFERENCES:
        dataset.stats["pairs"] = len(conversations)
        dataset.stats["origins"] = dict(
            Counter((o.get("kind") or "upload") for o in (origins or [{}] * len(conversations)))
        )
    with transaction.atomic():
        dataset.save()
        for row in rows:
            row.dataset = dataset
        DatasetExample.objects.bulk_create(rows, batch_size=500)
    return dataset


def _nul_lines(data: bytes, items: list[Any], has_nul: Callable[[Any], bool]) -> list[LineError]:
    """Return the lines whose example (a conversation, a pair) holds a NUL
    character, which JSON may spell (``\\u0000``) but PostgreSQL cannot
    store.

    ``jsonl_parse`` accepted the file, so its n-th non-blank line is the
    n-th example.
    """
    text = data.decode("utf-8-sig")
    numbers = [number for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    return [
        LineError(number, "a message holds a NUL character (\\u0000), which cannot be stored")
        for number, item in zip(numbers, items, strict=True)
        if has_nul(item)
    ]


def _conversation_has_nul(messages: Conversation) -> bool:
    return any("\x00" in message["content"] for message in messages)


def dataset_upload(
    *,
    name: str,
    data: bytes,
    description: str = "",
    eval_fraction: float = 0.1,
    seed: int = 0,
    user: AbstractBaseUser | None = None,
    kind: str = Dataset.Kind.CONVERSATIONS,
) -> Dataset:
    """Store an uploaded JSONL file: conversations, or preference pairs
    (one ``{"prompt": [...], "chosen": "...", "rejected": "..."}`` a line)
    for a ``kind`` of preferences. Raise DatasetFormatError naming every
    bad line; nothing is stored from a file that fails."""
    pairs = kind == Dataset.Kind.PREFERENCES
    items = jsonl_parse(data, parse_line=pair_parse) if pairs else jsonl_parse(data)
    unstorable = _nul_lines(data, items, _pair_has_nul if pairs else _conversation_has_nul)
    if unstorable:
        raise DatasetFormatError(unstorable)
    common: dict[str, Any] = {
        "name": name,
        "source": Dataset.Source.UPLOAD,
        "description": description,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "user": user,
    }
    if pairs:
        return dataset_pairs_create(pairs=items, **common)
    return dataset_create(conversations=items, **common)


def _pair_has_nul(pair: dict[str, Any]) -> bool:
    texts = [pair["chosen"], pair["rejected"], *(m["content"] for m in pair["prompt"])]
    return any("\x00" in text for text in texts)


def dataset_pairs_create(
    *,
    name: str,
    pairs: list[dict[str, Any]],
    source: str,
    origins: list[dict[str, Any]] | None = None,
    description: str = "",
    eval_fraction: float = 0.1,
    seed: int = 0,
    filters: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
) -> Dataset:
    """Store preference pairs (``{"prompt", "chosen", "rejected"}``) as a
    preference dataset, all or nothing; origins says where each came from."""
    if any(_pair_has_nul(pair) for pair in pairs):
        raise ValidationError(
            {"pairs": [gettext("A pair holds a NUL character, which cannot be stored.")]}
        )
    return dataset_create(
        name=name,
        conversations=[
            [*pair["prompt"], {"role": "assistant", "content": pair["chosen"]}] for pair in pairs
        ],
        rejected=[pair["rejected"] for pair in pairs],
        origins=origins,
        kind=Dataset.Kind.PREFERENCES,
        source=source,
        description=description,
        eval_fraction=eval_fraction,
        seed=seed,
        filters=filters,
        user=user,
    )


def dataset_pairs(dataset: Dataset, split: str) -> list[dict[str, Any]]:
    """A preference dataset's pairs of one split, in index order."""
    rows = DatasetExample.objects.filter(dataset=dataset, split=split).order_by("index")
    return [
        {
            "prompt": row.messages[:-1],
            "chosen": row.messages[-1]["content"],
            "rejected": row.rejected,
        }
        for row in rows
        if row.messages  # a person's deleted data leaves a lineage mark only
    ]


DEMO_NAME = "Demo: shop customer service"
DEMO_PREFERENCES_NAME = "Demo: shop answers, right vs wrong"


def dataset_demo_preferences_create(
    *, name: str = DEMO_PREFERENCES_NAME, count: int = 240
) -> Dataset:
    """The demo preference set; an existing one of that name is returned as is."""
    existing = Dataset.objects.filter(name=name).first()
    if existing is not None:
        return existing
    return dataset_pairs_create(
        name=name,
        pairs=demo_preference_pairs(count=count),
        source=Dataset.Source.DEMO,
        description=(
            "The demo shop's questions with the correct answer chosen over a plausible "
            "wrong one (a fact changed), written for the demo."
        ),
    )


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


def _dataset_lock(*, dataset: Dataset) -> Dataset:
    """Lock the dataset row until the end of the caller's transaction, so
    concurrent appends take consecutive indexes one after the other."""
    return Dataset.objects.select_for_update().get(pk=dataset.pk)


def _fingerprint(messages: Conversation) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def _append_eval_count(*, dataset: Dataset, existing_eval: int, total: int, added: int) -> int:
    """How many of ``added`` new examples go to eval so that the whole
    dataset keeps its eval fraction, with the same rounding as
    ``split_indices``; examples already stored keep their split."""
    fraction = dataset.eval_fraction
    target = round(total * fraction)
    if fraction > 0 and total >= 2:
        target = max(target, 1)
    target = min(target, max(total - 1, 0))
    return min(max(target - existing_eval, 0), added)


def dataset_append(
    *,
    dataset: Dataset,
    conversations: list[Conversation],
    skip_existing: bool = True,
    filters: dict[str, Any] | None = None,
    origins: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Append examples to a dataset after its last index, all or nothing,
    and update its statistics. Return the positions in ``conversations``
    that were stored.

    New examples go to eval so that the dataset as a whole keeps its eval
    fraction; which ones is drawn from the dataset's seed and its size, so
    the same append gives the same split. With ``skip_existing`` an example
    whose messages the dataset already holds (or that appears twice in
    ``conversations``) is stored once; ``origins`` says where each came
    from. ``filters`` is added to the
    dataset's ``filters["additions"]`` to record where the examples came
    from.
    """
    tokenizer = _tokenizer()
    with transaction.atomic():
        locked = _dataset_lock(dataset=dataset)
        stored = DatasetExample.objects.filter(dataset=locked)
        seen: set[str] = set()
        if skip_existing:
            seen = {_fingerprint(m) for m in stored.values_list("messages", flat=True)}
        positions: list[int] = []
        for position, messages in enumerate(conversations):
            fingerprint = _fingerprint(messages)
            if skip_existing and fingerprint in seen:
                continue
            seen.add(fingerprint)
            positions.append(position)
        if not positions:
            return []
        last = stored.aggregate(last=Max("index"))["last"]
        start = 0 if last is None else last + 1
        existing = stored.count()
        existing_eval = stored.filter(split=DatasetExample.Split.EVAL).count()
        eval_count = _append_eval_count(
            dataset=locked,
            existing_eval=existing_eval,
            total=existing + len(positions),
            added=len(positions),
        )
        order = list(range(len(positions)))
        # Reproducible shuffling, not security, as in split_indices.
        random.Random(f"{locked.seed}:{start}").shuffle(order)  # noqa: S311
        rows, tokens, assistant_tokens = _examples_build(
            [conversations[position] for position in positions],
            start=start,
            eval_offsets=set(order[:eval_count]),
            tokenizer=tokenizer,
            origins=[origins[position] for position in positions] if origins else None,
        )
        for row in rows:
            row.dataset = locked
        DatasetExample.objects.bulk_create(rows, batch_size=500)
        stats = dict(locked.stats or {})
        train_count = len(rows) - eval_count
        stats["examples"] = existing + len(rows)
        stats["train"] = existing - existing_eval + train_count
        stats["eval"] = existing_eval + eval_count
        stats["messages"] = (stats.get("messages") or 0) + sum(len(r.messages) for r in rows)
        # Token totals stay known only while every example has been counted.
        for key, added in (("tokens", tokens), ("assistant_tokens", assistant_tokens)):
            known = tokenizer is not None and (existing == 0 or stats.get(key) is not None)
            stats[key] = (stats.get(key) or 0) + added if known else None
        locked.stats = stats
        update = ["stats"]
        if filters is not None:
            locked.filters = dict(locked.filters or {})
            locked.filters.setdefault("additions", []).append(filters)
            update.append("filters")
        locked.full_clean()
        locked.save(update_fields=update)
    dataset.stats, dataset.filters = locked.stats, locked.filters
    return positions
