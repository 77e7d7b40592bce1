"""Cleaning a dataset with the content filter rules before it trains a
model: a preview of what each rule would drop or mask and why, then a
cleaned copy stored as a new dataset that names its original. Near
duplicates (MinHash over word shingles, datasketch) are reported beside.

Each turn is checked by the rules that guard it in use: a user's (and a
system prompt's) by the input rules of the surface, an answer by its
output rules. A turn a rule blocks drops its whole example; masked text
is kept masked; flags are listed and kept.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext

from models_admin.filters import compiled_rules
from models_admin.models import Dataset, DatasetExample
from models_admin.services.datasets import dataset_create

#: Examples whose word shingles overlap this much (Jaccard) are near
#: duplicates.
NEAR_DUPLICATE_THRESHOLD = 0.8
SHINGLE_WORDS = 3
MINHASH_PERMUTATIONS = 64
#: Reasons listed per example in a preview.
MAX_REASONS = 8

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class CleanReason:
    turn: int
    role: str
    rule: str
    action: str
    excerpt: str


@dataclass
class CleanedExample:
    index: int
    #: "keep" (unchanged or only flagged), "mask" or "drop".
    action: str
    messages: Messages
    reasons: list[CleanReason] = field(default_factory=list)


@dataclass
class CleanPreview:
    dataset: Dataset
    surface: str
    examples: list[CleanedExample]
    #: Groups of example indexes that are near duplicates of each other.
    duplicates: list[list[int]]

    @property
    def counts(self) -> dict[str, int]:
        counts = {"keep": 0, "mask": 0, "drop": 0}
        for example in self.examples:
            counts[example.action] += 1
        return counts

    @property
    def changed(self) -> list[CleanedExample]:
        return [e for e in self.examples if e.action != "keep" or e.reasons]


def example_clean(index: int, messages: Messages, book: Any, surface: str) -> CleanedExample:
    """One conversation through the rules of surface (see the module)."""
    cleaned: Messages = []
    reasons: list[CleanReason] = []
    action = "keep"
    for turn, message in enumerate(messages):
        scope = "output" if message.get("role") == "assistant" else "input"
        verdict = book.rule_set(scope=scope, surface=surface).check(message.get("content", ""))
        for hit in verdict.hits:
            reasons.append(
                CleanReason(turn, message.get("role", ""), hit.rule_name, hit.action, hit.excerpt)
            )
        if verdict.blocked:
            action = "drop"
        elif verdict.text != message.get("content", "") and action == "keep":
            action = "mask"
        cleaned.append({**message, "content": verdict.text})
    return CleanedExample(index, action, cleaned if action != "drop" else messages, reasons)


def _words(messages: Messages) -> list[str]:
    text = unicodedata.normalize("NFKC", " ".join(m.get("content", "") for m in messages))
    return re.findall(r"\w+", text.casefold())


def near_duplicates(conversations: list[Messages]) -> list[list[int]]:
    """Groups (2 or more, by position) of conversations whose words are
    near duplicates: their word shingles' Jaccard similarity is about
    NEAR_DUPLICATE_THRESHOLD or more, as MinHash LSH estimates it."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=NEAR_DUPLICATE_THRESHOLD, num_perm=MINHASH_PERMUTATIONS)
    hashes: list[Any] = []
    for position, messages in enumerate(conversations):
        words = _words(messages)
        shingles = {
            " ".join(words[i : i + SHINGLE_WORDS])
            for i in range(max(len(words) - SHINGLE_WORDS + 1, 1))
        }
        signature = MinHash(num_perm=MINHASH_PERMUTATIONS, seed=1)
        signature.update_batch([s.encode() for s in shingles])
        hashes.append(signature)
        lsh.insert(position, signature)
    # Union the candidate pairs the index finds into groups.
    parent = list(range(len(conversations)))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for position, signature in enumerate(hashes):
        for other in lsh.query(signature):
            if other != position and signature.jaccard(hashes[other]) >= NEAR_DUPLICATE_THRESHOLD:
                parent[root(other)] = root(position)
    groups: dict[int, list[int]] = {}
    for position in range(len(conversations)):
        groups.setdefault(root(position), []).append(position)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def dataset_clean_preview(*, dataset: Dataset, surface: str = "chat") -> CleanPreview:
    """What the enabled rules of ``surface`` (chat, widget, api) would do
    to each example, and the near-duplicate groups (by example index)."""
    if surface not in ("chat", "widget", "api"):
        raise ValidationError({"surface": [gettext("Pick chat, widget or api.")]})
    book = compiled_rules()
    # Rows whose person deleted their data are lineage marks without text.
    rows = [
        (index, messages)
        for index, messages in DatasetExample.objects.filter(dataset=dataset)
        .order_by("index")
        .values_list("index", "messages")
        if messages
    ]
    examples = [example_clean(index, messages, book, surface) for index, messages in rows]
    groups = near_duplicates([messages for _index, messages in rows])
    duplicates = [[rows[p][0] for p in group] for group in groups]
    return CleanPreview(dataset, surface, examples, duplicates)


def dataset_clean(
    *,
    dataset: Dataset,
    name: str,
    surface: str = "chat",
    drop_duplicates: bool = False,
    user: AbstractBaseUser | None = None,
) -> Dataset:
    """Store the cleaned copy of dataset as a new dataset (masked text
    masked, blocked examples left out, and with ``drop_duplicates`` all but
    the first of each near-duplicate group), naming its original and what
    was done in its ``filters``."""
    preview = dataset_clean_preview(dataset=dataset, surface=surface)
    repeats = {index for group in preview.duplicates for index in group[1:]}
    kept = [
        e
        for e in preview.examples
        if e.action != "drop" and not (drop_duplicates and e.index in repeats)
    ]
    counts = preview.counts
    with transaction.atomic():
        return _clean_store(dataset, name, kept, counts, surface, repeats, drop_duplicates, user)


def _clean_store(
    dataset: Dataset,
    name: str,
    kept: list[CleanedExample],
    counts: dict[str, int],
    surface: str,
    repeats: set[int],
    drop_duplicates: bool,
    user: AbstractBaseUser | None,
) -> Dataset:
    origins = dict(DatasetExample.objects.filter(dataset=dataset).values_list("index", "origin"))
    cleaned = dataset_create(
        name=name,
        conversations=[e.messages for e in kept],
        origins=[origins.get(e.index) or {} for e in kept],
        source=Dataset.Source.CLEAN,
        description=f"{dataset.name}, cleaned with the {surface} filter rules.",
        eval_fraction=dataset.eval_fraction,
        seed=dataset.seed,
        filters={
            "cleaned_from": dataset.pk,
            "surface": surface,
            "masked": counts["mask"],
            "dropped": counts["drop"],
            "duplicates_dropped": len(repeats) if drop_duplicates else 0,
        },
        user=user,
    )
    cleaned.parent = dataset
    cleaned.save(update_fields=["parent"])
    return cleaned
