"""Citation marks in streamed answers: numbers that were not given are
removed however the text is cut into pieces; the content rules see the
cleaned text."""

from __future__ import annotations

import pytest

from inference.citations import CitationFilter, citations_clean, citations_used


def _stream(pieces: list[str], allowed: int, inner=None) -> str:
    cleaner = CitationFilter(allowed, inner)
    out = "".join(cleaner.push(piece).text for piece in pieces)
    return out + cleaner.finish().text


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("Refunds take 5 days [1].", "Refunds take 5 days [1]."),
        ("Refunds take 5 days [7].", "Refunds take 5 days."),
        ("See [1, 3] and [2][5].", "See [1][3] and [2]."),
        ("Both [1 and 2] say so [0].", "Both [1][2] say so."),
        ("A list [a] and a year [2024] stay.", "A list [a] and a year [2024] stay."),
        ("Numbers [1 2] and [12] and [4, 1]", "Numbers [1][2] and and [1]"),
    ],
)
def test_marks_outside_the_given_numbers_are_removed(text, clean):
    assert citations_clean(text, allowed=3) == clean


def test_used_numbers_are_listed_once_in_order_of_first_mention():
    assert citations_used("A [2]. B [1, 2]. C [9].", allowed=3) == [2, 1]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_a_mark_split_across_pieces_is_judged_whole(size):
    text = "Sale items are final [3]. Refunds take 30 days [1] and [2, 5] apply [9]."
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    assert _stream(pieces, 2) == "Sale items are final. Refunds take 30 days [1] and [2] apply."


def test_text_that_only_looks_like_a_mark_is_released():
    # An opening bracket that never closes holds text back only so long.
    text = "Array [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 and more words follow here"
    cleaner = CitationFilter(3)
    shown = "".join(cleaner.push(ch).text for ch in text)
    assert len(shown) >= len(text) - 40
    assert shown + cleaner.finish().text == text


def test_the_content_rules_see_the_cleaned_text():
    from inference.content_filter.ruleset import RuleSet
    from inference.content_filter.stream import StreamFilter

    rules = RuleSet.from_specs(
        [{"id": 1, "name": "codes", "kind": "keywords", "keywords": ["secret"], "action": "mask"}],
        scope="output",
        surface="chat",
        notice="Blocked here.",
    )
    inner = StreamFilter(rules)
    out = _stream(["The secret", " is here [", "4].", " Yes [1]"], 1, inner=inner)
    assert "secret" not in out and "[4]" not in out and out.endswith("Yes [1]")
    assert inner.hits
