"""Dataset services: uploads, the demo, exports of stored conversations."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from chat.services.conversations import conversation_create
from chat.services.exports import dataset_export
from chat.services.messages import feedback_set, message_generation_finish, message_send
from models_admin.dataset_format import jsonl_dump
from models_admin.models import Dataset, DatasetExample
from models_admin.selectors import dataset_preview
from models_admin.services import model_version_register
from models_admin.services.datasets import dataset_demo_create, dataset_upload
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def production(tiny_model_dir, settings):
    settings.MODEL_DIR = tiny_model_dir.parent
    return model_version_register(name="tiny", folder=tiny_model_dir)


def _exchange(user, conversation, question, answer, reason="stop"):
    sent = message_send(
        user=user, conversation=conversation, content=question, client_id=uuid.uuid4()
    )
    return message_generation_finish(
        generation_id=sent.answer.generation_id, final={"finish_reason": reason}, text=answer
    )


def _export_or_none(**kwargs):
    """An export that matches nothing is refused: no empty datasets."""
    try:
        return dataset_export(**kwargs)
    except ValidationError:
        return None


def test_an_upload_is_split_and_counted_in_tokens(production):
    conversations = [
        [{"role": "user", "content": f"Question {n}"}, {"role": "assistant", "content": "Answer"}]
        for n in range(20)
    ]
    dataset = dataset_upload(
        name="mine", data=jsonl_dump(conversations).encode(), eval_fraction=0.25
    )
    assert dataset.stats["examples"] == 20
    assert (dataset.stats["train"], dataset.stats["eval"]) == (15, 5)
    assert dataset.stats["tokens"] > dataset.stats["assistant_tokens"] > 0
    assert DatasetExample.objects.filter(dataset=dataset, split="eval").count() == 5
    preview = dataset_preview(dataset=dataset, limit=2)
    assert [row["index"] for row in preview] == [0, 1]
    assert preview[0]["messages"] == conversations[0] and preview[0]["tokens"] > 0
    with pytest.raises(ValidationError):
        dataset_upload(name="mine", data=jsonl_dump(conversations).encode())
    assert Dataset.objects.count() == 1


def test_the_demo_dataset_is_created_once(production):
    first = dataset_demo_create(count=40)
    again = dataset_demo_create(count=40)
    assert first.pk == again.pk and first.stats["examples"] == 40
    assert first.source == Dataset.Source.DEMO


def test_export_takes_clean_answers_and_can_keep_only_liked_ones(production):
    user = UserFactory()
    plain = conversation_create(user=user, system_prompt="Be kind.")
    _exchange(user, plain, "Hello", "Hi there!")
    _exchange(user, plain, "Open today?", "Until six.")
    liked = conversation_create(user=user)
    first = _exchange(user, liked, "Return policy?", "Thirty days.")
    feedback_set(user=user, message=first, rating=1)
    _exchange(user, liked, "Thanks", "Anything else?")
    stopped = conversation_create(user=user)
    _exchange(user, stopped, "Tell me more", "Half a", reason="cancelled")
    blocked = conversation_create(user=user)
    _exchange(user, blocked, "Hi", "Hello!")
    _exchange(user, blocked, "Something rude", "[blocked]", reason="content_filter")

    everything = dataset_export(name="all", eval_fraction=0.0)
    rows = [e.messages for e in everything.examples.order_by("index")]
    assert rows == [
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there!"},
            {"role": "user", "content": "Open today?"},
            {"role": "assistant", "content": "Until six."},
        ],
        [
            {"role": "user", "content": "Return policy?"},
            {"role": "assistant", "content": "Thirty days."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Anything else?"},
        ],
        # The stopped answer is left out, and with it the conversation;
        # the blocked one cuts its conversation before it.
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    ]
    liked_only = dataset_export(name="liked", thumbs_up_only=True, eval_fraction=0.0)
    assert [e.messages for e in liked_only.examples.all()] == [
        [
            {"role": "user", "content": "Return policy?"},
            {"role": "assistant", "content": "Thirty days."},
        ]
    ]
    assert liked_only.filters["thumbs_up_only"] is True
    assert not _export_or_none(name="api-only", source="api")
    # A conversation flagged for review stays out unless asked for.
    plain.flagged_at, plain.flag_reason = timezone.now(), "check the tone"
    plain.save(update_fields=["flagged_at", "flag_reason"])
    assert dataset_export(name="unflagged", eval_fraction=0.0).examples.count() == 2
    with_flagged = dataset_export(name="flagged too", eval_fraction=0.0, exclude_flagged=False)
    assert with_flagged.examples.count() == 3


def test_the_dataset_command_imports_shows_and_reports_bad_lines(production, tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(
        jsonl_dump(
            [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]] * 3
        )
    )
    call_command("dataset", "import", str(good), "--name", "cmd")
    call_command("dataset", "show", "cmd", "--examples", "1")
    assert '"examples": 3' in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="line 1"):
        call_command("dataset", "import", str(bad), "--name", "bad")
    assert not Dataset.objects.filter(name="bad").exists()


def test_exports_run_the_filter_rules_unless_told_not_to(production):
    from models_admin.filters import filter_rule_save

    filter_rule_save(
        data={"name": "internal", "kind": "keywords", "keywords": "zorbex", "scope": "output",
              "action": "block"},
        by=None,
    )  # fmt: skip
    filter_rule_save(
        data={"name": "mail", "kind": "preset", "preset": "email", "scope": "output",
              "action": "mask"},
        by=None,
    )  # fmt: skip
    user = UserFactory()
    for question, answer in (
        ("Where is it?", "In the zorbex warehouse."),
        ("Who do I write to?", "Write to help@shop.example for returns."),
        ("Hello", "Hello! How can I help?"),
    ):
        _exchange(user, conversation_create(user=user), question, answer)
    cleaned = dataset_export(name="clean", eval_fraction=0.0)
    answers = [row.messages[-1]["content"] for row in cleaned.examples.order_by("index")]
    assert len(answers) == 2 and not any("zorbex" in a for a in answers)
    assert "help@shop.example" not in answers[0] and answers[1] == "Hello! How can I help?"
    assert (cleaned.filters["masked"], cleaned.filters["dropped"]) == (1, 1)
    raw = dataset_export(name="raw", eval_fraction=0.0, apply_rules=False)
    assert raw.examples.count() == 3 and raw.filters["rules_applied"] is False


def test_a_staff_reply_in_a_handoff_exports_as_the_answer_it_replaced(production):
    from chat.models import Message

    user, agent = UserFactory(), UserFactory(is_staff=True)
    conversation = conversation_create(user=user)
    # The bot's answer was stopped when a person took over; the person's
    # reply (as ``agent_reply`` stores it) follows it, in two messages.
    bot = _exchange(user, conversation, "Can I return a used kettle?", "Sure, any", "cancelled")
    parent = bot
    for text in ("Only unused kettles can be returned.", "Used ones can be repaired."):
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=Message.Role.ASSISTANT,
            status=Message.Status.DONE, content=text, author=agent,
        )  # fmt: skip
    conversation.current_leaf = parent
    conversation.save(update_fields=["current_leaf"])
    exported = dataset_export(name="handoffs", eval_fraction=0.0)
    assert exported.examples.get().messages == [
        {"role": "user", "content": "Can I return a used kettle?"},
        {
            "role": "assistant",
            "content": "Only unused kettles can be returned.\n\nUsed ones can be repaired.",
        },
    ]
