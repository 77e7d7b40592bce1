"""CHAT_MAX_CONVERSATIONS_PER_USER bounds the conversations one user
holds: the chat page refuses new ones past it; API calls are still
answered and recorded but no longer stored as conversations."""

from __future__ import annotations

import json

import pytest

from chat.models import ApiKey, ApiRequest, Conversation
from chat.services.api_keys import api_key_create
from chat.services.completions import completion_request_parse, completion_start
from models_admin.services import model_version_create, model_version_promote
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _new(client):
    return client.post("/api/conversations/", data=json.dumps({}), content_type="application/json")


def test_the_chat_page_refuses_a_conversation_past_the_cap(client, settings):
    settings.CHAT_MAX_CONVERSATIONS_PER_USER = 2
    user = UserFactory()
    client.force_login(user)
    first = _new(client)
    assert first.status_code == 201 and _new(client).status_code == 201
    refused = _new(client)
    assert refused.status_code == 400
    assert "2 conversations" in refused.json()["error"]
    assert Conversation.objects.filter(user=user).count() == 2
    # Deleting one makes room; other users are not affected.
    client.delete(f"/api/conversations/{first.json()['id']}/")
    assert _new(client).status_code == 201
    client.force_login(UserFactory())
    assert _new(client).status_code == 201


def test_api_calls_past_the_cap_are_answered_but_not_stored(settings, tiny_model_dir):
    settings.CHAT_MAX_CONVERSATIONS_PER_USER = 1
    model_version_promote(version=model_version_create(name="tiny", folder=tiny_model_dir))
    key, _raw = api_key_create(user=UserFactory(), name="tests")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}

    def start():
        key_now = ApiKey.objects.get(pk=key.pk)
        return completion_start(
            key=key_now, request=completion_request_parse(key=key_now, body=body)
        )

    assert start().stored
    later = start()
    assert not later.stored
    assert Conversation.objects.filter(user=key.user).count() == 1
    record = ApiRequest.objects.get(pk=later.record_id)
    assert record.conversation is None and record.generation_id == later.generation_id
