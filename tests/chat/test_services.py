"""Chat services and selectors, called directly."""

from __future__ import annotations

import uuid

import pytest
from django.http import Http404

from chat.models import Conversation, Feedback, Message
from chat.selectors import (
    conversation_export,
    conversation_export_markdown,
    conversation_get_for_user,
    conversation_list_for_user,
    message_get_for_user,
    prompt_messages,
    thread_load,
    thread_serialize,
)
from chat.services.answers import message_regenerate
from chat.services.conversations import (
    conversation_branch_select,
    conversation_create,
    conversation_delete,
    conversation_update,
)
from chat.services.messages import (
    ChatError,
    feedback_set,
    generation_stop,
    message_generation_finish,
    message_send,
)
from inference.connection import cancel_key, generation_key
from inference.protocol import event_encode
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def conversation(user):
    return conversation_create(user=user, system_prompt="Be brief.")


def _send(user, conversation, content="Where is my order?", **kwargs):
    return message_send(
        user=user,
        conversation=conversation,
        content=content,
        client_id=kwargs.pop("client_id", uuid.uuid4()),
        **kwargs,
    )


def _finish(answer, text="Here you are.", reason="stop", version=None):
    final = {"finish_reason": reason, "usage": {"prompt_tokens": 12, "completion_tokens": 4}}
    if version is not None:
        final.update(model_version_id=version.pk, model_version=version.name)
    return message_generation_finish(generation_id=answer.generation_id, final=final, text=text)


def test_send_stores_the_question_and_a_pending_answer_and_queues_it_after_commit(
    user, conversation, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sent = _send(user, conversation)
    assert sent.created
    assert sent.question.role == "user" and sent.question.content == "Where is my order?"
    assert sent.answer.status == Message.Status.PENDING and sent.answer.parent == sent.question
    conversation.refresh_from_db()
    assert conversation.current_leaf == sent.answer
    [request] = queued()
    assert request["id"] == sent.answer.generation_id
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order?"},
    ]
    assert request["params"] == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 512,
        "top_k": 0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        # Kept with the answer for its token view.
        "logprobs": 5,
    }
    assert request["message"] == sent.answer.pk


def test_a_resent_client_id_is_a_no_op(
    user, conversation, queued, django_capture_on_commit_callbacks
):
    client_id = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        first = _send(user, conversation, client_id=client_id)
        again = _send(user, conversation, client_id=str(client_id))
    assert not again.created
    assert (again.question.pk, again.answer.pk) == (first.question.pk, first.answer.pk)
    assert Message.objects.count() == 2
    assert len(queued()) == 1


def test_the_first_question_titles_the_conversation_unless_the_user_named_it(user):
    untitled = conversation_create(user=user)
    _send(user, untitled, content="How long does shipping to Norway take these days, roughly?")
    untitled.refresh_from_db()
    assert untitled.title == "How long does shipping to Norway take these…"
    named = conversation_create(user=user, title="Shipping")
    _send(user, named, content="How long does shipping take?")
    named.refresh_from_db()
    assert named.title == "Shipping"


@pytest.mark.parametrize(
    ("content", "code"),
    [("", "empty"), ("   ", "empty"), (None, "empty"), ("x" * 101, "too_long")],
)
def test_empty_and_oversized_messages_are_refused_with_a_reason(
    user, conversation, settings, content, code
):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    with pytest.raises(ChatError) as caught:
        _send(user, conversation, content=content)
    assert caught.value.code == code
    assert Message.objects.count() == 0


def test_a_bad_client_id_is_refused(user, conversation):
    with pytest.raises(ChatError) as caught:
        _send(user, conversation, client_id="not-a-uuid")
    assert caught.value.code == "invalid"


def test_messages_per_minute_are_limited_with_a_retry_time(user, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 10
    for _ in range(2):
        _send(user, conversation_create(user=user))
    with pytest.raises(ChatError) as caught:
        _send(user, conversation_create(user=user))
    assert caught.value.code == "rate_limited"
    assert 0 < caught.value.retry_after <= 60
    assert "2 messages a minute" in caught.value.message


def test_concurrent_generations_per_user_are_limited(user, settings):
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 1
    first = _send(user, conversation_create(user=user))
    with pytest.raises(ChatError) as caught:
        _send(user, conversation_create(user=user))
    assert caught.value.code == "too_many_running"
    _finish(first.answer)
    _send(user, conversation_create(user=user))
    # Another user is not affected by this user's running answers.
    _send(UserFactory(), conversation_create(user=UserFactory()))


def test_a_question_waits_for_the_running_answer_in_its_conversation(user, conversation):
    _send(user, conversation)
    with pytest.raises(ChatError) as caught:
        _send(user, conversation, content="And another thing")
    assert caught.value.code == "busy"


def test_finishing_stores_text_usage_and_version_once(user, conversation):
    version = ModelVersionFactory()
    sent = _send(user, conversation)
    stored = _finish(sent.answer, text="It ships Monday.", version=version)
    assert stored.status == Message.Status.DONE
    assert stored.content == "It ships Monday."
    assert (stored.prompt_tokens, stored.completion_tokens) == (12, 4)
    assert stored.model_version == version and stored.model_version_name == version.name
    # A second report (a socket that read the final event) changes nothing.
    again = _finish(sent.answer, text="Something else", reason="length")
    assert again.content == "It ships Monday." and again.finish_reason == "stop"


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("cancelled", "cancelled"),
        ("error", "error"),
        ("content_filter", "blocked"),
        ("length", "done"),
    ],
)
def test_finish_reasons_map_to_answer_states(user, conversation, reason, status):
    sent = _send(user, conversation)
    assert _finish(sent.answer, text="partial", reason=reason).status == status


def test_an_unknown_generation_is_ignored():
    assert message_generation_finish(generation_id="nope", final={}, text="x") is None


def test_regenerate_adds_a_sibling_answer_that_becomes_the_active_path(
    user, conversation, queued, django_capture_on_commit_callbacks
):
    sent = _send(user, conversation)
    _finish(sent.answer, text="First answer")
    with django_capture_on_commit_callbacks(execute=True):
        again = message_regenerate(
            user=user, conversation=conversation, message=sent.answer, client_id=uuid.uuid4()
        )
    assert again.answer.parent == sent.question
    thread = thread_load(conversation=Conversation.objects.get(pk=conversation.pk))
    assert [m.pk for m in thread.path] == [sent.question.pk, again.answer.pk]
    assert thread.children[sent.question.pk] == [sent.answer.pk, again.answer.pk]
    # The new answer's prompt does not contain the answer it replaces.
    assert [m["content"] for m in queued()[-1]["messages"]] == ["Be brief.", "Where is my order?"]


def test_a_pending_answer_cannot_be_regenerated(user, conversation):
    sent = _send(user, conversation)
    with pytest.raises(ChatError) as caught:
        message_regenerate(
            user=user, conversation=conversation, message=sent.answer, client_id=uuid.uuid4()
        )
    assert caught.value.code == "busy"


def test_editing_a_question_branches_and_the_user_can_switch_back(user, conversation):
    first = _send(user, conversation, content="Question one")
    _finish(first.answer, text="Answer one")
    second = _send(user, conversation, content="Question two")
    _finish(second.answer, text="Answer two")
    # Edit "Question two": a sibling under the same answer.
    edited = _send(user, conversation, content="Question two, edited", parent_id=first.answer.pk)
    _finish(edited.answer, text="Answer two, edited")
    conversation.refresh_from_db()
    thread = thread_load(conversation=conversation)
    assert [m.content for m in thread.path] == [
        "Question one",
        "Answer one",
        "Question two, edited",
        "Answer two, edited",
    ]
    data = thread_serialize(thread=thread, user_id=user.pk)
    assert data["messages"][2]["siblings"] == [second.question.pk, edited.question.pk]
    assert data["messages"][2]["sibling_index"] == 1
    # The model saw only the active path.
    prompt = prompt_messages(thread=thread, upto=edited.question)
    assert [m["content"] for m in prompt][1:] == [
        "Question one",
        "Answer one",
        "Question two, edited",
    ]
    # Switch back to the first version: its own continuation comes back.
    conversation_branch_select(conversation=conversation, message=second.question)
    thread = thread_load(conversation=conversation)
    assert [m.content for m in thread.path][-2:] == ["Question two", "Answer two"]


def test_switching_a_question_back_shows_the_answer_selected_under_it(user, conversation):
    """Question one has answers A, B, C (two regenerations); the person
    picks B, edits the question, then switches back to the first version:
    B comes back, not the newest answer C."""
    first = _send(user, conversation, content="Question one")
    _finish(first.answer, text="A")
    answers = [first.answer]
    for text in ("B", "C"):
        conversation.refresh_from_db()
        regenerated = message_regenerate(
            user=user, conversation=conversation, message=answers[-1], client_id=uuid.uuid4()
        ).answer
        _finish(regenerated, text=text)
        answers.append(regenerated)
    conversation.refresh_from_db()
    conversation_branch_select(conversation=conversation, message=answers[1])
    edited = _send(user, conversation, content="Question one, edited", parent_id=None)
    _finish(edited.answer, text="D")
    conversation.refresh_from_db()
    assert [m.content for m in thread_load(conversation=conversation).path] == [
        "Question one, edited",
        "D",
    ]
    conversation_branch_select(conversation=conversation, message=first.question)
    thread = thread_load(conversation=conversation)
    assert [m.content for m in thread.path] == ["Question one", "B"]
    # And forward again: the edited version's own answer.
    conversation_branch_select(conversation=conversation, message=edited.question)
    assert [m.content for m in thread_load(conversation=conversation).path][-1] == "D"


def test_editing_the_first_question_makes_a_new_root(user, conversation):
    first = _send(user, conversation, content="Hi")
    _finish(first.answer)
    edited = _send(user, conversation, content="Hello", parent_id=None)
    assert edited.question.parent is None
    thread = thread_load(conversation=Conversation.objects.get(pk=conversation.pk))
    assert thread.children[None] == [first.question.pk, edited.question.pk]


def test_answers_without_text_are_left_out_of_the_prompt(user, conversation):
    failed = _send(user, conversation, content="One")
    _finish(failed.answer, text="", reason="error")
    second = _send(user, conversation, content="Two")
    thread = thread_load(conversation=Conversation.objects.get(pk=conversation.pk))
    roles = [m["role"] for m in prompt_messages(thread=thread, upto=second.question)]
    assert roles == ["system", "user", "user"]


def test_another_users_conversation_and_message_look_missing(user, conversation):
    sent = _send(user, conversation)
    stranger = UserFactory()
    for lookup in (
        lambda: conversation_get_for_user(user=stranger, conversation_id=conversation.pk),
        lambda: conversation_get_for_user(user=stranger, conversation_id=999_999),
        lambda: conversation_get_for_user(user=stranger, conversation_id="abc"),
        lambda: message_get_for_user(user=stranger, message_id=sent.answer.pk),
        lambda: message_get_for_user(user=stranger, message_id=999_999),
    ):
        with pytest.raises(Http404):
            lookup()
    assert (
        conversation_get_for_user(user=user, conversation_id=str(conversation.pk)) == conversation
    )


def test_the_list_is_newest_first_paginated_and_searches_titles_and_text(user):
    older = conversation_create(user=user, title="Returns policy")
    newer = conversation_create(user=user, title="Opening hours")
    _send(user, newer, content="Are you open on Sunday?")
    conversation_create(user=UserFactory(), title="Returns elsewhere")
    page = conversation_list_for_user(user=user)
    assert [c.pk for c in page.object_list] == [newer.pk, older.pk]
    assert [c.pk for c in conversation_list_for_user(user=user, query="returns")] == [older.pk]
    assert [c.pk for c in conversation_list_for_user(user=user, query="SUNDAY")] == [newer.pk]
    paged = conversation_list_for_user(user=user, per_page=1, page=2)
    assert [c.pk for c in paged.object_list] == [older.pk] and not paged.has_next()


def test_settings_are_bounded(conversation):
    from django.core.exceptions import ValidationError

    for field, value in (
        ("temperature", 2.5),
        ("top_p", 0),
        ("max_tokens", 0),
        ("max_tokens", 10**6),
    ):
        with pytest.raises(ValidationError) as caught:
            conversation_update(
                conversation=Conversation.objects.get(pk=conversation.pk), **{field: value}
            )
        assert field in caught.value.message_dict
    updated = conversation_update(conversation=conversation, temperature=0.2, title="Mine")
    assert updated.temperature == 0.2 and updated.title == "Mine" and not updated.title_is_auto


def test_feedback_is_stored_with_the_version_that_wrote_the_answer(user, conversation):
    version = ModelVersionFactory()
    sent = _send(user, conversation)
    with pytest.raises(ChatError):
        feedback_set(user=user, message=sent.answer, rating=1)
    answer = _finish(sent.answer, version=version)
    feedback = feedback_set(user=user, message=answer, rating=-1, reason="Wrong date")
    assert (feedback.rating, feedback.reason, feedback.model_version) == (
        -1,
        "Wrong date",
        version,
    )
    feedback_set(user=user, message=answer, rating=1)
    assert Feedback.objects.get().rating == 1
    feedback_set(user=user, message=answer, rating=0)
    assert not Feedback.objects.exists()
    with pytest.raises(ChatError):
        feedback_set(user=user, message=answer, rating=5)
    with pytest.raises(ChatError):
        feedback_set(user=user, message=sent.question, rating=1)


def test_exports_hold_the_active_path(user, conversation):
    sent = _send(user, conversation, content="Where is **my** order?")
    _finish(sent.answer, text="On its way.", version=ModelVersionFactory(name="smol"))
    thread = thread_load(conversation=Conversation.objects.get(pk=conversation.pk))
    assert conversation_export(thread=thread) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is **my** order?"},
            {"role": "assistant", "content": "On its way."},
        ]
    }
    markdown = conversation_export_markdown(thread=thread)
    assert markdown.startswith("# Where is **my** order?\n")
    assert "**Assistant** (smol)\n\nOn its way." in markdown


def test_delete_stops_running_generations(user, conversation, redis_conn):
    sent = _send(user, conversation)
    conversation_delete(conversation=conversation)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert redis_conn.get(cancel_key(sent.answer.generation_id)) == "1"


def test_stop_without_any_worker_ends_the_answer_keeping_its_text(user, conversation, redis_conn):
    sent = _send(user, conversation)
    key = generation_key(sent.answer.generation_id)
    redis_conn.xadd(key, event_encode("start", model_version="tiny"), id="0-1")
    redis_conn.xadd(key, event_encode("text", text="Half an"), id="0-2")
    assert generation_stop(message=sent.answer)
    answer = Message.objects.get(pk=sent.answer.pk)
    assert (answer.status, answer.content) == (Message.Status.CANCELLED, "Half an")
    assert redis_conn.get(cancel_key(sent.answer.generation_id)) == "1"
    assert not generation_stop(message=answer)
