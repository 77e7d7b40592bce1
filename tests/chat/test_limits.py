"""One limiter per user across the chat page and the OpenAI-compatible
API: answers at once and answers a minute count both surfaces together,
refused with ChatError codes in the chat and a 429 with Retry-After in
the API."""

from __future__ import annotations

import json
import uuid

import pytest

from chat.models import ApiKey
from chat.services.api_keys import api_key_create
from chat.services.completions import completion_request_parse, completion_start
from chat.services.conversations import conversation_create
from chat.services.messages import ChatError, message_generation_finish, message_send
from models_admin.services import model_version_create, model_version_promote
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ASK = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


@pytest.fixture
def version(tiny_model_dir):
    version = model_version_create(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    return version


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def secret(version, user):
    _key, raw = api_key_create(user=user, name="tests")
    return raw


def _chat(user):
    return message_send(
        user=user,
        conversation=conversation_create(user=user),
        content="Where is my order?",
        client_id=uuid.uuid4(),
    )


def _api(client, secret):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(ASK),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )


def test_answers_running_in_the_chat_leave_no_room_for_an_api_call(client, settings, user, secret):
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 2
    first = _chat(user)
    _chat(user)
    response = _api(client, secret)
    assert response.status_code == 429, response.content
    assert response.json()["error"]["code"] == "too_many_concurrent_requests"
    assert int(response["Retry-After"]) >= 1
    # One answer ends: the API call goes past the limiter (to the worker check).
    message_generation_finish(
        generation_id=first.answer.generation_id, final={"finish_reason": "stop"}, text="Hi"
    )
    assert _api(client, secret).status_code == 503


@pytest.mark.parametrize("stored", [True, False])
def test_api_calls_in_flight_leave_no_room_for_a_chat_answer(settings, user, secret, stored):
    """Whether the API stores its calls as conversations or not."""
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 2
    settings.API_STORE_CONVERSATIONS = stored
    key = ApiKey.objects.get()
    for _ in range(2):
        completion_start(key=key, request=completion_request_parse(key=key, body=ASK))
    with pytest.raises(ChatError) as caught:
        _chat(user)
    assert caught.value.code == "too_many_running"
    # Another user is not affected.
    other = UserFactory()
    _chat(other)


def test_answers_a_minute_count_the_chat_and_the_api_together(client, settings, user, secret):
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 10
    _chat(user)
    _chat(user)
    response = _api(client, secret)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "x-should-retry" not in response
