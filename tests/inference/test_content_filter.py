"""The content filter matcher: evasions caught, innocent words left alone,
presets that mask only what they should, bounded regular expressions, and
a streaming filter that never lets a split term through."""

from __future__ import annotations

import random

import pytest
import regex

from inference.content_filter import (
    REGEX_TIMEOUT_S,
    Rule,
    RuleBook,
    RuleError,
    RuleSet,
    StreamFilter,
    luhn_valid,
    pattern_check,
    rule_compile,
)


def _rules(*specs, scope="output", surface="chat") -> RuleSet:
    full = [
        {"id": i, "name": f"rule {i}", "action": "mask", **spec} for i, spec in enumerate(specs)
    ]
    return RuleSet.from_specs(full, scope=scope, surface=surface, notice="Blocked here.")


WORDS = _rules(
    {"kind": "keywords", "keywords": ["badword", "ass", "scum", "hell", "bad word"]},
)

CAUGHT = [
    "what a badword",
    "BADWORD!",
    "b a d w o r d",
    "b.a.d.w.o.r.d",
    "b-a-d-w-o-r-d",
    "b@dw0rd",
    "8adw0rd",
    "bаdwоrd",  # Cyrillic а and о
    "ｂａｄｗｏｒｄ",  # fullwidth
    "𝐛𝐚𝐝𝐰𝐨𝐫𝐝",  # mathematical bold
    "bàdwörd",  # accents
    "bad\u200bword",  # zero-width space
    "you a$$",
    "go to he11",
    "kick his ass.",
    "the bad word here",
    "SCUM",
]

INNOCENT = [
    "a classic passage to assess the class",
    "Scunthorpe and scumbles",  # whole words only
    "hello, shell company, hellos",
    "bad words are fine",  # "bad word" + s is another word
    "b ad word",  # only some letters apart: two innocent words
    "badwords",
    "assassin massive embassy",
    "The 1000 ways to bake",
    "wow!",
]


@pytest.mark.parametrize("text", CAUGHT)
def test_evasions_by_spacing_look_alikes_and_leetspeak_are_caught(text):
    verdict = WORDS.check(text)
    assert verdict.hits, text
    assert "*" in verdict.text


@pytest.mark.parametrize("text", INNOCENT)
def test_whole_word_rules_leave_innocent_words_alone(text):
    verdict = WORDS.check(text)
    assert verdict.hits == [], text
    assert verdict.text == text


def test_a_rule_that_is_not_whole_word_matches_inside_words():
    rules = _rules({"kind": "keywords", "keywords": ["scum"], "whole_word": False})
    assert rules.check("Scunthorpe scumbles").text == "Scunthorpe ****bles"


def test_emails_phone_numbers_and_luhn_valid_cards_only_are_masked():
    rules = _rules(
        {"kind": "preset", "preset": "email"},
        {"kind": "preset", "preset": "card"},
        {"kind": "preset", "preset": "phone"},
        {"kind": "preset", "preset": "url", "action": "flag"},
    )
    text = (
        "Mail jane.doe+shop@example.co.uk, call +44 20 7946 0958 or (555) 123-4567; "
        "card 4111 1111 1111 1111 or 5500-0000-0000-0004, not 4111 1111 1111 1112. "
        "Order 12345, year 2026, total 1,299.00, see https://example.com/help."
    )
    verdict = rules.check(text)
    assert verdict.text == (
        "Mail [email], call [phone] or [phone]; "
        "card [card] or [card], not 4111 1111 1111 1112. "
        "Order 12345, year 2026, total 1,299.00, see https://example.com/help."
    )
    assert [h.action for h in verdict.hits].count("flag") == 1
    # The audit never keeps the personal data itself.
    assert all("4111 1111 1111 1111" not in h.excerpt for h in verdict.hits)


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112") and not luhn_valid("1234")


def test_block_replaces_the_whole_text_with_the_rule_notice():
    rules = _rules(
        {"kind": "keywords", "keywords": ["project x"], "action": "block", "notice": "Nope."},
        {"kind": "keywords", "keywords": ["secret"], "action": "block"},
    )
    assert rules.check("tell me about Project-X").notice == "Nope."
    verdict = rules.check("a secret")
    assert verdict.blocked and verdict.text == "" and verdict.notice == "Blocked here."


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a+)+$", "too long"),
        ("(x+x+)+y", "too long"),
        ("(a|aa)+$", "too long"),
        ("a*", "empty text"),
        ("[", "not a valid regular expression"),
        ("", "Write a regular expression"),
    ],
)
def test_bad_and_catastrophic_patterns_are_refused_when_saved(pattern, message):
    with pytest.raises(RuleError, match=message) as caught:
        pattern_check(pattern)
    assert caught.value.field == "pattern"


def test_a_pattern_that_runs_out_of_time_fails_closed():
    slow = Rule(
        id=9, name="slow", kind="regex", action="mask", scope="both", surface="all",
        priority=0, replacement="", notice="", compiled=regex.compile(r"(a|aa)+$"),
    )  # fmt: skip
    rules = RuleSet([slow], notice="Blocked here.")
    verdict = rules.check("a" * 60 + "b")
    assert verdict.blocked and verdict.hits[0].timed_out
    assert REGEX_TIMEOUT_S <= 0.05


def test_regular_expressions_match_as_written():
    rules = _rules({"kind": "regex", "pattern": r"(?i)order\s*#?\d{6}", "mask_with": "[order]"})
    assert rules.check("Order #123456 shipped").text == "[order] shipped"


def test_scope_and_surface_select_rules():
    spec = {"id": 1, "name": "w", "kind": "keywords", "keywords": ["zap"], "action": "mask"}
    widget_input = {**spec, "scope": "input", "surface": "widget"}
    assert not RuleSet.from_specs([widget_input], scope="output", surface="widget", notice="")
    assert not RuleSet.from_specs([widget_input], scope="input", surface="chat", notice="")
    assert RuleSet.from_specs([widget_input], scope="input", surface="widget", notice="")


def test_a_book_compiles_each_rule_once_and_shares_equal_rule_sets():
    """Scopes, surfaces and sites that run the same rules share one rule
    set; a site with a rule of its own gets its own; a spec that does not
    compile is reported once and left out."""
    everywhere = {"id": 1, "name": "w", "kind": "keywords", "keywords": ["zap"], "action": "mask"}
    shop = {**everywhere, "id": 2, "keywords": ["zip"], "surface": "widget", "site": 7}
    broken = {"id": 3, "name": "broken", "kind": "regex", "pattern": "("}
    errors: list = []
    book = RuleBook(
        [everywhere, shop, broken],
        notice="Blocked here.",
        on_error=lambda spec, exc: errors.append((spec["id"], exc.field)),
    )
    assert errors == [(3, "pattern")]
    chat = book.rule_set(scope="input", surface="chat")
    assert book.rule_set(scope="output", surface="chat") is chat
    assert book.rule_set(scope="input", surface="widget", site=8) is chat
    assert book.rule_set(scope="input", surface="widget", site=7) is not chat
    assert book.check("zap zip", surface="widget", site=7).text == "*** ***"
    assert book.check("zap zip", surface="widget", site=8).text == "*** zip"
    stream = book.stream(surface="api")
    assert stream is not None and stream.push("zap ").text + stream.finish().text == "*** "
    assert RuleBook([shop], notice="").stream(surface="chat") is None


def test_rules_that_do_not_compile_name_the_field():
    with pytest.raises(RuleError) as caught:
        rule_compile({"kind": "keywords", "keywords": ["  ", "..."]})
    assert caught.value.field == "keywords"
    with pytest.raises(RuleError) as caught:
        rule_compile({"kind": "preset", "preset": "ssn"})
    assert caught.value.field == "preset"


def _stream(rules: RuleSet, pieces: list[str]) -> tuple[list[str], bool, StreamFilter]:
    stream = StreamFilter(rules)
    shown = []
    for piece in pieces:
        result = stream.push(piece)
        shown.append(result.text)
        if result.block:
            return shown, True, stream
    end = stream.finish()
    shown.append(end.text)
    return shown, end.block, stream


def _splits(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, min(8, len(text) - 1))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("seed", range(40))
def test_a_term_split_across_pieces_never_shows_in_any_piece(seed):
    rng = random.Random(seed)
    text = rng.choice(
        [
            "Well, badword is what I said.",
            "Sure: b a d w o r d, spaced out.",
            "Write to jane@example.com today",
            "Card 4111 1111 1111 1111 on file",
        ]
    )
    rules = _rules(
        {"kind": "keywords", "keywords": ["badword"]},
        {"kind": "preset", "preset": "email"},
        {"kind": "preset", "preset": "card"},
    )
    shown, blocked, _stream_filter = _stream(rules, _splits(text, rng))
    assert not blocked
    whole = "".join(shown)
    for secret in ("badword", "b a d w o r d", "jane@example.com", "4111 1111 1111 1111"):
        assert secret not in whole
        # Not even a prefix of it was shown before the rest was known.
        assert all(secret not in "".join(shown[: i + 1]) for i in range(len(shown)))
    assert whole == rules.check(text).text


def test_a_block_in_the_stream_shows_nothing_of_the_term_and_keeps_the_notice():
    rules = _rules({"kind": "keywords", "keywords": ["project x"], "action": "block"})
    shown, blocked, stream = _stream(rules, ["Sure, Pro", "ject", " X is", " fine"])
    assert blocked
    assert "Project" not in "".join(shown)
    assert stream.notice == "Blocked here."
    assert stream.report()["hits"][0]["action"] == "block"


def test_text_that_cannot_start_a_match_is_not_held_back():
    rules = _rules({"kind": "keywords", "keywords": ["badword"]})
    stream = StreamFilter(rules)
    assert stream.push("Hello there, ").text == "Hello there, "
    assert stream.push("my b").text == "my "  # "b" may start the word
    assert stream.push("est friend").text == "best friend"
