"""The compiled rules of a process: built once per epoch of the rules and
shared by input and output checks; a rule change, from any process, moves
the epoch and applies from the next check on."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import DatabaseError, transaction

from models_admin import filters
from models_admin.filters import content_filter_input, content_filter_output, filter_rule_save
from models_admin.models import FilterRulesEpoch
from tests.conftest import REPO_ROOT, child_env, database_url_for_children

RULE = {"name": "words", "kind": "keywords", "keywords": "zylophin", "action": "mask"}


def _shown(payload: dict, text: str) -> str:
    stream = content_filter_output(payload)
    if stream is None:
        return text
    return stream.push(text).text + stream.finish().text


@pytest.fixture
def builds(monkeypatch) -> list:
    """Every rule book the domain compiles from now on."""
    built: list = []
    real = filters.RuleBook

    def counting(*args, **kwargs):
        book = real(*args, **kwargs)
        built.append(book)
        return book

    monkeypatch.setattr(filters, "RuleBook", counting)
    return built


@pytest.mark.django_db
def test_the_rules_compile_once_per_epoch_for_messages_and_answers(builds):
    rule = filter_rule_save(data=RULE, by=None)
    content_filter_input(text="warm up", surface="chat")
    assert len(builds) == 1
    for _ in range(3):
        assert content_filter_input(text="a zylophin", surface="chat").text == "a ********"
        assert _shown({"surface": "widget"}, "a zylophin") == "a ********"
    assert len(builds) == 1
    filter_rule_save(data={"mask_with": "[hidden]"}, rule=rule, by=None)
    for _ in range(3):
        assert content_filter_input(text="a zylophin", surface="api").text == "a [hidden]"
        assert _shown({"surface": "chat"}, "a zylophin") == "a [hidden]"
    assert len(builds) == 2


@pytest.mark.django_db
def test_every_rule_change_moves_the_epoch_in_its_own_transaction():
    rule = filter_rule_save(data=RULE, by=None)
    first = FilterRulesEpoch.objects.get().token
    filter_rule_save(data={"enabled": False}, rule=rule, by=None)
    second = FilterRulesEpoch.objects.get().token
    with pytest.raises(ValueError), transaction.atomic():
        filter_rule_save(data={"enabled": True}, rule=rule, by=None)
        raise ValueError("rolled back")
    assert len({first, second}) == 2
    assert FilterRulesEpoch.objects.get().token == second


@pytest.mark.django_db(transaction=True)
def test_a_rule_saved_by_another_process_applies_to_the_next_check():
    assert content_filter_input(text="a zylophin", surface="chat").text == "a zylophin"
    assert content_filter_output({"surface": "chat"}) is None
    save = (
        "from models_admin.filters import filter_rule_save\n"
        f"filter_rule_save(data={RULE!r}, by=None)\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", save],
        cwd=REPO_ROOT,
        env=child_env(DATABASE_URL=database_url_for_children()),
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert content_filter_input(text="a zylophin", surface="chat").text == "a ********"
    assert _shown({"surface": "chat"}, "a zylophin") == "a ********"


@pytest.mark.django_db
def test_answers_keep_the_last_rules_while_the_database_does_not_answer(monkeypatch, builds):
    filter_rule_save(data=RULE, by=None)
    assert _shown({"surface": "chat"}, "a zylophin") == "a ********"

    def down() -> str:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(filters, "filter_rules_epoch", down)
    assert _shown({"surface": "chat"}, "a zylophin") == "a ********"
    with pytest.raises(DatabaseError):
        content_filter_input(text="a zylophin", surface="chat")
    assert len(builds) == 1
