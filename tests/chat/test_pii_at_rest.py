"""Personal details at rest: with ``PII_MASK_AT_REST`` the stored question,
answer, API history and knowledge query hold emails, phone and card
numbers masked (and the operator's own mask rules' matches), while this
turn's prompt has them as written; filter-hit excerpts never hold them."""

from __future__ import annotations

import uuid

import pytest

from chat.models import Message
from chat.services.conversations import conversation_create
from chat.services.messages import message_generation_finish, message_send
from models_admin.filters import filter_hits_record, filter_rule_save
from models_admin.models import FilterHit
from models_admin.pii import pii_mask
from models_admin.services import model_version_register
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

RAW = "Write to jo.bloggs@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111."
MASKED = "Write to [email], call [phone], card [card]."


@pytest.fixture(autouse=True)
def production(tiny_model_dir, settings):
    settings.MODEL_DIR = tiny_model_dir.parent
    return model_version_register(name="tiny", folder=tiny_model_dir)


def test_the_presets_and_the_operators_mask_rules_mask_text():
    assert pii_mask(RAW) == MASKED
    filter_rule_save(
        data={
            "name": "order numbers",
            "kind": "regex",
            "pattern": r"ORD-\d{6}",
            "action": "mask",
            "mask_with": "[order]",
            "scope": "input",
        },
        by=None,
    )
    assert pii_mask("Order ORD-123456 for jo@example.com") == "Order [order] for [email]"


def test_stored_text_is_masked_and_only_this_turns_prompt_has_it_as_written(
    settings, queued, django_capture_on_commit_callbacks
):
    settings.PII_MASK_AT_REST = True
    user = UserFactory()
    conversation = conversation_create(user=user)
    with django_capture_on_commit_callbacks(execute=True):
        sent = message_send(
            user=user, conversation=conversation, content=RAW, client_id=uuid.uuid4()
        )
    assert Message.objects.get(pk=sent.question.pk).content == MASKED
    conversation.refresh_from_db()
    assert "example.com" not in conversation.title
    [request] = queued()
    assert request["messages"][-1] == {"role": "user", "content": RAW}

    answer = message_generation_finish(
        generation_id=sent.answer.generation_id,
        final={"finish_reason": "stop", "tokens": [{"t": "x"}]},
        text="I will email jo.bloggs@example.com today.",
    )
    assert answer.content == "I will email [email] today."
    assert answer.tokens == []  # they would spell the address

    # The next turn's history is what was stored.
    with django_capture_on_commit_callbacks(execute=True):
        message_send(
            user=user, conversation=conversation, content="Thanks", client_id=uuid.uuid4()
        )
    history = queued()[-1]["messages"]
    assert history[0]["content"] == MASKED and "[email]" in history[1]["content"]


def test_off_by_default_text_is_stored_as_written(queued, django_capture_on_commit_callbacks):
    user = UserFactory()
    conversation = conversation_create(user=user)
    sent = message_send(user=user, conversation=conversation, content=RAW, client_id=uuid.uuid4())
    assert Message.objects.get(pk=sent.question.pk).content == RAW


def test_filter_hit_excerpts_never_hold_personal_details():
    [hit] = filter_hits_record(
        hits=[{"rule_name": "angry words", "action": "flag", "excerpt": f"…awful! {RAW}"}],
        scope="input",
    )
    assert FilterHit.objects.get(pk=hit.pk).excerpt == f"…awful! {MASKED}"
