"""The keyword matcher's work grows with the text, not faster: hostile
texts (letters written apart, one endless word, repeats of a keyword's
beginning) cost look-ups in proportion to their length, and the fast
matcher finds exactly what the plain definition of a match finds."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from inference.content_filter import (
    MAX_HITS,
    RuleSet,
    StreamFilter,
    canonical,
    skeleton,
)
from inference.content_filter.keywords import _KeywordIndex

_TOKEN = re.compile(r"[^ ]+")


class _CountingDict(dict):
    lookups = 0

    def get(self, key: Any, default: Any = None) -> Any:
        type(self).lookups += 1
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        type(self).lookups += 1
        return super().__contains__(key)


class _CountingSet(set):
    def __contains__(self, key: object) -> bool:
        _CountingDict.lookups += 1
        return super().__contains__(key)


def _index(*keywords: str, whole_word: bool = True) -> _KeywordIndex:
    rules = RuleSet.from_specs(
        [{"id": 1, "name": "r", "kind": "keywords", "keywords": list(keywords),
          "whole_word": whole_word, "action": "mask"}],
        scope="input", surface="chat", notice="",
    ).rules  # fmt: skip
    return _KeywordIndex(rules)


def _lookups(index: _KeywordIndex, text: str) -> int:
    index.whole = _CountingDict(index.whole)
    index.inside = _CountingDict(index.inside)
    for name in ("prefixes", "run_prefixes"):
        if hasattr(index, name):
            setattr(index, name, _CountingSet(getattr(index, name)))
    _CountingDict.lookups = 0
    index.find(canonical(skeleton(text)[0]), partial=True)
    return _CountingDict.lookups


HOSTILE = {
    "letters apart": lambda n: ("a b " * n)[:n],
    "a keyword's beginning, spaced": lambda n: ("b a d w o r " * n)[:n],
    "one endless word": lambda n: "a" * n,
    "short words": lambda n: ("ab cd " * n)[:n],
}


@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_matcher_look_ups_grow_linearly_with_hostile_text(shape):
    """Four times the text costs about four times the look-ups (the old
    matcher tried every stretch of a run of letters: sixteen times)."""
    make = HOSTILE[shape]
    index = _index("badword", "ass", "bad word", "scum", "hellfire")
    small = _lookups(index, make(2_000))
    large = _lookups(_index("badword", "ass", "bad word", "scum", "hellfire"), make(8_000))
    assert large <= 4.5 * small + 50, (small, large)


def _reference(index: _KeywordIndex, canon: str) -> set[tuple[int, int, int]]:
    """Every match by the plain definition, trying every stretch."""
    found: set[tuple[int, int, int]] = set()
    words = [(m.start(), m.end()) for m in _TOKEN.finditer(canon)]
    for i in range(len(words)):
        for j in range(i, len(words)):
            for rule in index.whole.get(canon[words[i][0] : words[j][1]], ()):
                found.add((id(rule), words[i][0], words[j][1]))
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j][1] - words[j][0] == 1:
            j += 1
        if j - i >= 3:
            joined = "".join(canon[words[k][0]] for k in range(i, j))
            for first in range(len(joined)):
                for last in range(first + 3, len(joined) + 1):
                    for rule in index.whole.get(joined[first:last], ()):
                        found.add((id(rule), words[i + first][0], words[i + last - 1][1]))
            for form, rules in index.inside.items():
                for at in range(len(joined) - len(form) + 1):
                    if joined.startswith(form, at):
                        end = words[i + at + len(form) - 1][1]
                        found.update((id(r), words[i + at][0], end) for r in rules)
        i = max(j, i + 1)
    for form, rules in index.inside.items():
        for at in range(len(canon) - len(form) + 1):
            if canon.startswith(form, at):
                found.update((id(r), at, at + len(form)) for r in rules)
    return found


def test_the_fast_matcher_finds_what_trying_every_stretch_finds():
    rng = random.Random(7)
    whole = _index("bad", "abba", "bad word", "dab", "a b")
    inside = _index("ab", "bad", whole_word=False)
    pieces = ["a", "b", "d", "ab", "bad", "word", "dab", " ", " ", " ", ".", "-"]
    for _ in range(400):
        canon = canonical(skeleton("".join(rng.choice(pieces) for _ in range(30)))[0])
        for index in (whole, inside):
            spans, _hold = index.find(canon, partial=False)
            assert {(id(r), s, e) for r, s, e in spans} == _reference(index, canon), canon


def test_a_flood_of_matches_is_masked_whole_and_audited_in_part():
    rules = RuleSet.from_specs(
        [{"id": 1, "name": "r", "kind": "keywords", "keywords": ["ab"], "whole_word": False,
          "action": "mask"}],
        scope="input", surface="chat", notice="",
    )  # fmt: skip
    verdict = rules.check("ab" * 50_000)
    assert verdict.text == "**" * 50_000
    assert len(verdict.hits) == MAX_HITS
    stream = StreamFilter(rules)
    shown = "".join(stream.push("ab " * 100).text for _ in range(100)) + stream.finish().text
    assert shown == "** " * 10_000
    assert len(stream.hits) == MAX_HITS


def test_ascii_text_gets_the_same_skeleton_as_the_general_path():
    """ASCII text takes a faster path; it must spell the skeleton the same
    (a leading "é" forces the general path without changing the rest)."""
    rng = random.Random(3)
    alphabet = [chr(code) for code in range(128)]
    for _ in range(5_000):
        pool = alphabet if rng.random() < 0.3 else list("ab !|  .-1@$Z")
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 24)))
        letters, origin = skeleton("é" + text)
        assert skeleton(text) == (letters[1:], [at - 1 for at in origin[1:]]), repr(text)
