"""The demo dataset: reproducible, valid, varied, and true to the shop's
facts, so that a model fine-tuned on it learns one consistent shop."""

from __future__ import annotations

import json
import re

import pytest

from models_admin.dataset_format import jsonl_dump, jsonl_parse
from models_admin.demo_data import DEMO_SYSTEM_PROMPT, SHOP, demo_conversations, demo_prompts


@pytest.fixture(scope="module")
def conversations() -> list[list[dict[str, str]]]:
    return demo_conversations()


@pytest.fixture(scope="module")
def answers(conversations) -> list[str]:
    return [m["content"] for c in conversations for m in c if m["role"] == "assistant"]


def _users(conversations) -> list[str]:
    return [m["content"] for c in conversations for m in c if m["role"] == "user"]


def test_the_same_seed_gives_the_same_conversations(conversations):
    assert demo_conversations() == conversations
    assert demo_conversations(count=50, seed=9) == demo_conversations(count=50, seed=9)
    assert demo_conversations(count=50, seed=9) != demo_conversations(count=50, seed=10)


@pytest.mark.parametrize("count", [0, 1, 37, 300, 2000])
def test_exactly_count_distinct_conversations_come_back(count):
    made = demo_conversations(count=count, seed=count)
    assert len(made) == count
    assert len({json.dumps(c) for c in made}) == count


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="count"):
        demo_conversations(count=-1)


def test_every_conversation_survives_the_training_format(conversations):
    assert jsonl_parse(jsonl_dump(conversations).encode("utf-8")) == conversations


def test_the_system_message_is_always_the_demo_prompt_and_in_about_half(conversations):
    systems = [c[0]["content"] for c in conversations if c[0]["role"] == "system"]
    assert set(systems) == {DEMO_SYSTEM_PROMPT}
    assert SHOP["name"] in DEMO_SYSTEM_PROMPT
    assert 0.35 <= len(systems) / len(conversations) <= 0.65


def test_most_conversations_are_single_turn_and_about_a_third_are_not(conversations):
    turns = [sum(m["role"] == "user" for m in c) for c in conversations]
    share = sum(t > 1 for t in turns) / len(turns)
    assert 0.15 <= share <= 0.45
    assert max(turns) <= 3


def test_users_ask_in_many_different_ways(conversations):
    users = _users(conversations)
    assert len(set(users)) >= 150
    # Without order numbers, fewer wordings remain; still plenty.
    assert len({re.sub(r"(?i)fh-?\d{6}", "#", u) for u in users}) >= 150


def test_answers_are_short(answers):
    for answer in answers:
        assert len(answer) <= 400, answer


def test_every_hours_range_mentioned_is_one_of_the_shop_hours(answers):
    known = set(SHOP["service_hours"].values()) | set(SHOP["store_hours"].values())
    mentioned = {r for a in answers for r in re.findall(r"\d\d:\d\d-\d\d:\d\d", a)}
    assert mentioned
    assert mentioned <= known


def test_per_day_hours_match_that_day_in_the_shop_facts(answers):
    checked = 0
    for answer in answers:
        for day, hours in re.findall(r"On (\w+)s our store at .+? is open (\S+)\.", answer):
            assert SHOP["store_hours"][day] == hours
            checked += 1
        for day, hours in re.findall(r"on (\w+)s our customer service is available (\S+)", answer):
            assert SHOP["service_hours"][day] == hours
            checked += 1
        if "Sunday" in answer:
            assert "closed on Sundays" in answer, answer
    assert checked >= 5


def test_every_day_count_stated_is_the_return_window(answers):
    days = [int(n) for a in answers for n in re.findall(r"(\d+) days\b", a)]
    assert days
    assert set(days) == {SHOP["return_days"]}


def test_free_shipping_is_always_stated_with_the_shop_threshold(answers):
    thresholds = {SHOP["free_shipping_over"], SHOP["return_label_free_over"]}
    free_shipping = re.compile(r"(delivery|shipping)[^.]* free|free (shipping|delivery)")
    stated = 0
    for answer in answers:
        assert {int(n) for n in re.findall(r"over £(\d+)", answer)} <= thresholds
        if free_shipping.search(answer):
            assert f"over £{SHOP['free_shipping_over']}" in answer, answer
            stated += 1
    assert stated >= 5


def test_shipping_prices_and_contacts_match_the_shop_facts(answers):
    prices = {o["name"]: o["price"] for o in SHOP["shipping"].values()}
    pattern = r"(UK standard|UK express|EU|rest of the world) shipping costs £([\d.]+)"
    quoted = [(name, float(price)) for a in answers for name, price in re.findall(pattern, a)]
    assert quoted
    assert all(prices[name] == price for name, price in quoted)
    text = "\n".join(answers)
    assert set(re.findall(r"\b0\d{3} \d{3} \d{4}\b", text)) == {SHOP["phone"]}
    assert set(re.findall(r"[\w.]+@[\w.]+\w", text)) == {SHOP["email"]}
    assert set(re.findall(r"FH-?\d+", text)) <= set(re.findall(r"FH-\d{6}\b", text))


def test_demo_prompts_are_eight_questions_the_dataset_never_asks():
    prompts = demo_prompts()
    assert len(prompts) == len(set(prompts)) == 8
    users = {
        u.lower() for seed in range(3) for u in _users(demo_conversations(count=2000, seed=seed))
    }
    for prompt in prompts:
        assert not any(prompt.lower() in u for u in users), prompt
