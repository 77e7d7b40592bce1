"""Preference pairs from stored feedback: ratings, regenerations and
staff replies in handoffs, through the chat's own services."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command

from chat.models import Message
from chat.services.answers import message_regenerate
from chat.services.conversations import conversation_create, conversation_update
from chat.services.messages import (
    feedback_set,
    message_generation_finish,
    message_send,
)
from chat.services.preferences import preference_pairs
from models_admin.dataset_format import jsonl_parse, pair_parse
from models_admin.models import Dataset
from models_admin.services import model_version_register
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def production(tiny_model_dir, settings):
    settings.MODEL_DIR = tiny_model_dir.parent
    return model_version_register(name="tiny", folder=tiny_model_dir)


def _finish(answer: Message, text: str, reason: str = "stop") -> Message:
    return message_generation_finish(
        generation_id=answer.generation_id, final={"finish_reason": reason}, text=text
    )


def _ask(user, conversation, question: str, answer: str) -> Message:
    sent = message_send(
        user=user, conversation=conversation, content=question, client_id=uuid.uuid4()
    )
    return _finish(sent.answer, answer)


def _again(user, answer: Message, text: str) -> Message:
    sent = message_regenerate(
        user=user, conversation=answer.conversation, message=answer, client_id=uuid.uuid4()
    )
    return _finish(sent.answer, text)


def test_ratings_and_regenerations_make_pairs_with_the_conversation_as_prompt():
    user = UserFactory()
    conversation = conversation_create(user=user)
    conversation_update(conversation=conversation, system_prompt="You work for a tea shop.")
    _ask(user, conversation, "Hi", "Hello! How can I help?")
    wrong = _ask(user, conversation, "Can I return opened tea?", "Yes, anything, any time.")
    vague = _again(user, wrong, "Maybe.")
    right = _again(user, wrong, "Unopened tea within 30 days; opened tea cannot be returned.")
    feedback_set(user=user, message=wrong, rating=-1)
    feedback_set(user=user, message=right, rating=1)
    pairs = preference_pairs()
    assert {(p.kind, p.chosen_id, p.rejected_id) for p in pairs} == {
        ("rating", right.pk, wrong.pk),
        # Regenerated away from, never rated: the person wanted another.
        ("regenerated", right.pk, vague.pk),
    }
    pair = next(p for p in pairs if p.kind == "rating")
    assert pair.prompt == [
        {"role": "system", "content": "You work for a tea shop."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Can I return opened tea?"},
    ]
    assert (pair.chosen, pair.rejected) == (right.content, wrong.content)
    # The pairs read back as an upload would.
    text = "\n".join(json.dumps(p.as_dict()) for p in pairs).encode()
    assert len(jsonl_parse(text, parse_line=pair_parse)) == 2

    # `manage.py dataset preferences` stores them, each with its origin.
    call_command("dataset", "preferences", "--name", "from feedback", stdout=io.StringIO())
    dataset = Dataset.objects.get(name="from feedback")
    assert (dataset.kind, dataset.source) == ("preferences", "feedback")
    assert dataset.stats["pairs"] == 2
    assert dataset.stats["origins"] == {"rating": 1, "regenerated": 1}
    rows = {row.origin["kind"]: row for row in dataset.examples.all()}
    # Each names its conversation and person too, so deleting their data finds it.
    assert rows["rating"].origin == {
        "kind": "rating", "chosen_id": right.pk, "rejected_id": wrong.pk,
        "conversation_id": conversation.pk, "user_id": user.pk,
    }  # fmt: skip
    answer = {"role": "assistant", "content": right.content}
    assert rows["rating"].messages == [*pair.prompt, answer]
    assert rows["rating"].rejected == wrong.content
    with pytest.raises(CommandError, match="No conversation in the range"):
        call_command(
            "dataset", "preferences", "--name", "empty", "--from", "2999-01-01",
            stdout=io.StringIO(),
        )  # fmt: skip


def test_no_rating_up_no_pair_and_a_later_version_is_not_regenerated_away():
    user = UserFactory()
    conversation = conversation_create(user=user)
    first = _ask(user, conversation, "Do you ship abroad?", "Yes, to Europe.")
    later = _again(user, first, "We ship to most countries in Europe.")
    assert preference_pairs() == []
    feedback_set(user=user, message=first, rating=1)
    # The later version came after the liked one: not a rejection.
    assert preference_pairs() == []
    feedback_set(user=user, message=later, rating=-1)
    assert [(p.kind, p.chosen_id) for p in preference_pairs()] == [("rating", first.pk)]


def test_a_staff_reply_is_preferred_to_the_answer_it_replaced():
    user, agent = UserFactory(), UserFactory(is_staff=True)
    conversation = conversation_create(user=user)
    sent = message_send(
        user=user, conversation=conversation, content="Is the kettle used?", client_id=uuid.uuid4()
    )
    bot = _finish(sent.answer, "It is brand", "cancelled")
    parent = bot
    for text in ("It was opened once.", "It cannot be returned."):
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=Message.Role.ASSISTANT,
            status=Message.Status.DONE, content=text, author=agent,
        )  # fmt: skip
    (pair,) = preference_pairs()
    assert pair.kind == "handoff" and pair.rejected == "It is brand"
    assert pair.chosen == "It was opened once.\n\nIt cannot be returned."
    assert pair.prompt == [{"role": "user", "content": "Is the kettle used?"}]
