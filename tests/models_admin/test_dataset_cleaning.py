"""Cleaning a dataset with the content filter rules: the preview says what
each rule drops, masks or flags and where; the cleaned copy is a new
dataset naming its original; near duplicates are found."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from models_admin.filters import filter_rule_save
from models_admin.models import Dataset, DatasetExample
from models_admin.services.dataset_cleaning import (
    dataset_clean,
    dataset_clean_preview,
    near_duplicates,
)
from models_admin.services.datasets import dataset_create

pytestmark = pytest.mark.django_db


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


CONVERSATIONS = [
    _chat("How do returns work?", "Send it back within 30 days for a full refund."),
    _chat("What is my card number 4111 1111 1111 1111 for?", "I cannot see card numbers."),
    _chat("Tell me about the blorkfest sale", "The sale starts on Monday."),
    _chat("Where is my parcel?", "Your parcel ships from our zorbex warehouse."),
    _chat("Where is my parcel?", "Your parcel ships from our warehouse in Leeds."),
    _chat("Do you ship abroad?", "Yes, we ship to most countries in Europe."),
    _chat("Do you ship abroad??", "Yes, we ship to most countries in Europe!"),
]


@pytest.fixture
def dataset():
    return dataset_create(name="Shop", conversations=CONVERSATIONS, source="upload")


@pytest.fixture
def rules():
    filter_rule_save(
        data={"name": "cards", "kind": "preset", "preset": "card", "scope": "input",
              "action": "mask"},
        by=None,
    )  # fmt: skip
    filter_rule_save(
        data={"name": "banned event", "kind": "keywords", "keywords": "blorkfest",
              "scope": "input", "action": "block"},
        by=None,
    )  # fmt: skip
    filter_rule_save(
        data={"name": "internal site", "kind": "keywords", "keywords": "zorbex",
              "scope": "output", "action": "block"},
        by=None,
    )  # fmt: skip
    filter_rule_save(
        data={"name": "refunds", "kind": "keywords", "keywords": "refund", "scope": "output",
              "action": "flag"},
        by=None,
    )  # fmt: skip


def test_the_preview_says_what_each_rule_does_to_which_turn(dataset, rules):
    preview = dataset_clean_preview(dataset=dataset)
    by_index = {e.index: e for e in preview.examples}
    assert preview.counts == {"keep": 4, "mask": 1, "drop": 2}
    # An input rule masks the question; the answer is untouched.
    masked = by_index[1]
    assert masked.action == "mask"
    assert "4111" not in masked.messages[0]["content"]
    assert masked.messages[1] == CONVERSATIONS[1][1]
    assert [(r.turn, r.role, r.rule, r.action) for r in masked.reasons] == [
        (0, "user", "cards", "mask")
    ]
    # A blocked question or a blocked answer drops the example.
    assert by_index[2].action == "drop" and by_index[2].reasons[0].rule == "banned event"
    assert by_index[3].action == "drop" and by_index[3].reasons[0].role == "assistant"
    # An output rule does not run on questions, nor an input rule on answers.
    assert by_index[4].action == "keep" and not by_index[4].reasons
    # A flag is listed and kept.
    assert by_index[0].action == "keep" and by_index[0].reasons[0].action == "flag"
    assert [e.index for e in preview.changed] == [0, 1, 2, 3]


def test_the_cleaned_copy_is_a_new_dataset_that_names_its_original(dataset, rules):
    cleaned = dataset_clean(dataset=dataset, name="Shop (clean)")
    assert cleaned.source == Dataset.Source.CLEAN and cleaned.parent == dataset
    assert cleaned.filters["cleaned_from"] == dataset.pk
    assert (cleaned.filters["masked"], cleaned.filters["dropped"]) == (1, 2)
    texts = [
        " ".join(m["content"] for m in row.messages)
        for row in DatasetExample.objects.filter(dataset=cleaned).order_by("index")
    ]
    assert len(texts) == 5 and not any("blorkfest" in t or "zorbex" in t for t in texts)
    assert not any("4111 1111" in t for t in texts)
    # The original is left as it was.
    assert DatasetExample.objects.filter(dataset=dataset).count() == len(CONVERSATIONS)
    assert list(dataset.derived.all()) == [cleaned]


def test_near_duplicates_are_grouped_and_can_be_left_out(dataset):
    groups = near_duplicates(CONVERSATIONS)
    # Punctuation and case do not make examples different.
    assert groups == [[5, 6]]
    preview = dataset_clean_preview(dataset=dataset)
    assert preview.duplicates == [[5, 6]]
    cleaned = dataset_clean(dataset=dataset, name="Shop (dedup)", drop_duplicates=True)
    assert cleaned.stats["examples"] == len(CONVERSATIONS) - 1
    assert cleaned.filters["duplicates_dropped"] == 1


def test_an_unknown_surface_is_refused(dataset):
    with pytest.raises(ValidationError):
        dataset_clean_preview(dataset=dataset, surface="email")


def test_the_command_previews_then_stores_the_cleaned_copy(dataset, rules):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("dataset", "clean", "Shop", stdout=out)
    text = out.getvalue()
    assert "4 kept, 1 masked, 2 dropped by the chat rules" in text
    assert "example 2 (drop): turn 1 (user) banned event -> block" in text
    assert "near duplicates: examples 5, 6" in text
    assert not Dataset.objects.filter(source=Dataset.Source.CLEAN).exists()
    call_command("dataset", "clean", "Shop", "--name", "Shop clean", stdout=StringIO())
    assert Dataset.objects.get(name="Shop clean").parent == dataset
