"""Incremental detokenization never shows half a character; stop strings
are held back until they can be ruled out."""

from __future__ import annotations

import pytest

from inference.detokenize import MAX_HOLD_TOKENS, REPLACEMENT, IncrementalDetokenizer, StopMatcher
from inference.engine import Engine
from inference.loading import model_load
from inference.protocol import SamplingParams
from tests.tiny_models import tokenizer_load

TEXT = "Grüße aus Köln! 日本語のテキスト 🙂👍🏽 naïve café — ça va?"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return tokenizer_load(default_model_dir)


def test_multibyte_characters_split_across_tokens_never_show_as_replacement(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert any(REPLACEMENT in piece for piece in pieces), "the text must split some characters"
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert all(REPLACEMENT not in delta for delta in deltas)
    assert "".join(deltas) == TEXT


def test_the_hold_back_is_bounded(tokenizer):
    # A lone lead byte of a 4-byte character never completes.
    emoji_ids = tokenizer.encode("🙂", add_special_tokens=False)
    word_ids = tokenizer.encode(" hello there my friend", add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    out = [detok.push(emoji_ids[0])]
    for token in word_ids:
        out.append(detok.push(token))
    assert len(word_ids) >= MAX_HOLD_TOKENS or len(emoji_ids) == 1
    assert "hello" in "".join(out) + detok.flush()
    assert REPLACEMENT not in "".join(out)


def test_random_sampling_on_a_byte_level_model_streams_no_replacement_character(
    tiny_model_dir,
):
    loaded = model_load(tiny_model_dir, device="cpu", dtype="float32")
    engine = Engine(loaded, slots=4, max_context=512)
    for i in range(4):
        engine.submit(
            f"r{i}",
            prompt=[5, 6, 7 + i],
            params=SamplingParams(temperature=1.5, seed=i, max_new_tokens=120),
        )
    texts: dict[str, str] = {}
    while engine.has_work():
        for event in engine.step():
            texts[event.request_id] = texts.get(event.request_id, "") + event.text
    assert sum(len(t) for t in texts.values()) > 100
    assert all(REPLACEMENT not in text for text in texts.values())


@pytest.mark.parametrize(
    ("chunks", "stops", "shown", "stopped"),
    [
        (["Hello wor", "ld. END", "ING"], ("END",), "Hello world. ", True),
        (["a<", "|", "st", "op|>b"], ("<|stop|>",), "a", True),
        (["x <", "y"], ("<|stop|>",), "x <y", False),
        (["no stop here"], (), "no stop here", False),
        (["ab", "cd"], ("bcx", "cd"), "ab", True),
    ],
)
def test_stop_strings_are_cut_and_partial_ones_held_back(chunks, stops, shown, stopped):
    matcher = StopMatcher(stops)
    out = ""
    for chunk in chunks:
        out += matcher.push(chunk)
        if matcher.stopped:
            break
        for stop in stops:
            assert stop not in out
    if not matcher.stopped:
        out += matcher.flush()
    assert out == shown
    assert matcher.stopped is stopped
