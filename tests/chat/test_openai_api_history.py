"""What API callers send as conversation history: their "assistant"
turns are stored as client-supplied text, never as a model version's
answer, stay out of datasets, feedback and version usage; and every turn
the model reads, system prompts and assistant turns included, goes
through the input rules."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.exceptions import ValidationError

from chat.models import ApiKey, ApiRequest, Conversation, Message
from chat.services.api_keys import api_key_create
from chat.services.completions import ApiError, completion_request_parse, completion_start
from chat.services.conversations import conversation_create
from chat.services.exports import dataset_export
from chat.services.messages import (
    ChatError,
    feedback_set,
    message_generation_finish,
    message_send,
)
from inference.connection import requests_stream_key
from models_admin.dashboard.selectors.figures import version_stats
from models_admin.filters import filter_rule_save
from models_admin.models import FilterHit
from models_admin.services import model_version_create, model_version_promote
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Lyon, of course."},
    {"role": "user", "content": "Are you sure?"},
]


@pytest.fixture
def version(tiny_model_dir):
    version = model_version_create(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    return version


@pytest.fixture
def key(version):
    key, _raw = api_key_create(user=UserFactory(), name="tests")
    return key


def _start(key: ApiKey, messages: list[dict[str, str]]):
    body = {"model": "tiny", "messages": messages, "max_tokens": 8}
    return completion_start(key=key, request=completion_request_parse(key=key, body=body))


def test_assistant_turns_of_api_callers_are_stored_as_supplied_history(key, version):
    started = _start(key, HISTORY)
    conversation = Conversation.objects.get(source=Conversation.Source.API)
    supplied = Message.objects.get(conversation=conversation, content="Lyon, of course.")
    assert supplied.role == Message.Role.ASSISTANT
    assert supplied.status == Message.Status.SUPPLIED
    assert supplied.model_version is None and supplied.model_version_name == ""
    # The model's own answer is the version's.
    message_generation_finish(
        generation_id=started.generation_id,
        final={
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 20, "completion_tokens": 3},
            "model_version_id": version.pk,
        },
        text="Paris.",
    )
    answer = Message.objects.get(generation_id=started.generation_id)
    assert answer.model_version == version and answer.status == Message.Status.DONE

    # Nobody can rate the caller's text as the model's, and it is no
    # version's answer in the usage figures.
    with pytest.raises(ChatError):
        feedback_set(user=key.user, message=supplied, rating=1)
    feedback_set(user=key.user, message=answer, rating=1)
    assert version_stats(version_ids=[version.pk])[version.pk]["answers"] == 1
    # A dataset never holds the caller's text as an assistant turn.
    for thumbs_up_only in (True, False):
        try:
            exported = dataset_export(
                name=f"api {thumbs_up_only}", thumbs_up_only=thumbs_up_only, eval_fraction=0.0
            )
        except ValidationError:
            continue  # nothing could be exported: no empty datasets
        for example in exported.examples.all():
            assert {"role": "assistant", "content": "Lyon, of course."} not in example.messages


@pytest.fixture
def rule():
    return filter_rule_save(
        data={"name": "secret", "kind": "keywords", "keywords": "zylophin", "scope": "input"},
        by=None,
    )


@pytest.mark.parametrize(
    ("index", "role"), [(0, "system"), (2, "assistant")]
)  # fmt: skip
def test_a_blocked_system_prompt_or_assistant_turn_refuses_the_api_call(key, rule, index, role):
    messages = [dict(m) for m in HISTORY]
    assert messages[index]["role"] == role
    messages[index]["content"] += " Also, zylophin."
    with pytest.raises(ApiError) as caught:
        _start(key, messages)
    assert (caught.value.status, caught.value.code) == (400, "content_filter")
    assert caught.value.param == f"messages[{index}]"
    assert not ApiRequest.objects.exists() and not Conversation.objects.exists()
    hit = FilterHit.objects.get()
    assert (hit.surface, hit.scope) == ("api", "input")


def test_a_blocked_system_prompt_is_refused_when_a_conversation_is_made_or_edited(client, rule):
    user = UserFactory()
    client.force_login(user)
    made = client.post(
        "/api/conversations/",
        data=json.dumps({"system_prompt": "You love zylophin."}),
        content_type="application/json",
    )
    assert made.status_code == 400
    assert "system_prompt" in made.json()["fields"]
    assert not Conversation.objects.exists()
    made = client.post(
        "/api/conversations/",
        data=json.dumps({"system_prompt": "Be brief."}),
        content_type="application/json",
    )
    assert made.status_code == 201
    edited = client.patch(
        f"/api/conversations/{made.json()['id']}/",
        data=json.dumps({"system_prompt": "Talk about zylophin."}),
        content_type="application/json",
    )
    assert edited.status_code == 400
    assert Conversation.objects.get().system_prompt == "Be brief."
    assert FilterHit.objects.filter(surface="chat", scope="input").count() == 2


def test_a_system_prompt_saved_before_a_rule_is_checked_again_on_every_turn(
    redis_conn, django_capture_on_commit_callbacks
):
    """Rules made after a system prompt was saved still apply to what the
    model reads: a mask changes the queued prompt, a block refuses the
    turn with nothing stored."""
    redis_conn.delete(requests_stream_key())
    user = UserFactory()
    conversation = conversation_create(user=user, system_prompt="You love zylophin and qorbex.")
    filter_rule_save(
        data={"name": "mask", "kind": "keywords", "keywords": "qorbex", "scope": "input",
              "action": "mask", "mask_with": "[x]"},
        by=None,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        message_send(user=user, conversation=conversation, content="Hi", client_id=uuid.uuid4())
    [(_id, fields)] = redis_conn.xrange(requests_stream_key(), "-", "+")
    assert json.loads(fields["payload"])["messages"][0] == {
        "role": "system",
        "content": "You love zylophin and [x].",
    }
    Message.objects.filter(conversation=conversation).update(status=Message.Status.DONE)
    filter_rule_save(
        data={"name": "secret", "kind": "keywords", "keywords": "zylophin", "scope": "input"},
        by=None,
    )
    stored = Message.objects.count()
    with pytest.raises(ChatError) as caught:
        message_send(user=user, conversation=conversation, content="Again", client_id=uuid.uuid4())
    assert caught.value.code == "blocked"
    assert Message.objects.count() == stored
    assert FilterHit.objects.filter(conversation_id=conversation.pk, surface="chat").exists()
