"""The chat page and its JSON endpoints, over HTTP."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from chat.models import Conversation, Feedback
from chat.services.conversations import conversation_create
from chat.services.messages import message_generation_finish, message_send
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def client(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def answered(user):
    """A conversation with one finished exchange."""
    conversation = conversation_create(user=user, title="Orders")
    sent = message_send(
        user=user, conversation=conversation, content="Where is it?", client_id=uuid.uuid4()
    )
    version = ModelVersionFactory(name="smol")
    message_generation_finish(
        generation_id=sent.answer.generation_id,
        final={"finish_reason": "stop", "model_version_id": version.pk},
        text="It **shipped**.",
    )
    return conversation, sent


def _json(client, method, url, body=None):
    return getattr(client, method)(
        url, data=json.dumps(body or {}), content_type="application/json"
    )


def test_the_chat_needs_a_login(answered):
    """A visitor gets the landing page at ``/`` and the login page for a
    conversation, never the chat."""
    conversation, _sent = answered
    root = Client().get(reverse("chat"))
    assert root.status_code == 200
    assert "landing.html" in [t.name for t in root.templates]
    assert b'data-testid="chat-app"' not in root.content
    response = Client().get(reverse("conversation", args=[conversation.pk]))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_the_chat_page_inlines_the_open_conversation(client, answered):
    conversation, _sent = answered
    response = client.get(reverse("conversation", args=[conversation.pk]))
    assert response.status_code == 200
    initial = response.context["initial"]
    assert [m["content"] for m in initial["messages"]] == ["Where is it?", "It **shipped**."]
    assert initial["messages"][1]["model_version"] == "smol"
    assert b'id="chat-initial"' in response.content


def test_another_users_conversation_page_is_the_same_404_as_a_missing_one(answered):
    conversation, _sent = answered
    stranger = Client()
    stranger.force_login(UserFactory())
    theirs = stranger.get(reverse("conversation", args=[conversation.pk]))
    missing = stranger.get(reverse("conversation", args=[999_999]))
    assert theirs.status_code == missing.status_code == 404
    for url in (
        reverse("api-conversation", args=[conversation.pk]),
        reverse("api-conversation-export", args=[conversation.pk, "json"]),
    ):
        theirs = stranger.get(url)
        missing = stranger.get(url.replace(str(conversation.pk), "999999"))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()
    assert (
        _json(stranger, "delete", reverse("api-conversation", args=[conversation.pk])).status_code
        == 404
    )
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_endpoints_answer_401_json_when_logged_out():
    response = Client().get(reverse("api-conversations"))
    assert response.status_code == 401 and response.json()["code"] == "auth"


def test_create_list_search_and_paginate(client, user):
    created = _json(client, "post", reverse("api-conversations"), {"system_prompt": "Be brief."})
    assert created.status_code == 201 and created.json()["system_prompt"] == "Be brief."
    for n in range(31):
        conversation_create(user=user, title=f"Chat {n}")
    first = client.get(reverse("api-conversations")).json()
    assert (
        len(first["results"]) == 30
        and first["has_next"]
        and first["results"][0]["title"] == "Chat 30"
    )
    second = client.get(reverse("api-conversations"), {"page": 2}).json()
    assert len(second["results"]) == 2 and not second["has_next"]
    found = client.get(reverse("api-conversations"), {"q": "chat 1"}).json()["results"]
    assert {c["title"] for c in found} == {"Chat 1"} | {f"Chat {n}" for n in range(10, 20)}


def test_settings_are_validated_naming_the_field(client, answered):
    conversation, _sent = answered
    url = reverse("api-conversation", args=[conversation.pk])
    for body, field in (
        ({"temperature": 9}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"title": 5}, "title"),
        ({"strategy": "greedy"}, "strategy"),
        ({"strategy": "beam", "beams": 9}, "beams"),
        ({"beams": 1}, "beams"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"presence_penalty": "a lot"}, "presence_penalty"),
    ):
        response = _json(client, "patch", url, body)
        assert response.status_code == 400, body
        assert response.json()["error"].startswith(field)
    response = _json(
        client, "patch", url, {"title": "Renamed", "temperature": 0.3, "max_tokens": 64}
    )
    assert response.status_code == 200
    assert response.json()["conversation"]["title"] == "Renamed"
    conversation.refresh_from_db()
    assert (conversation.temperature, conversation.max_tokens) == (0.3, 64)
    controls = {"strategy": "beam", "beams": 3, "top_k": 40, "frequency_penalty": 0.5,
                "presence_penalty": -0.5}  # fmt: skip
    response = _json(client, "patch", url, controls)
    assert response.status_code == 200
    assert {k: response.json()["conversation"][k] for k in controls} == controls


def test_malformed_bodies_get_a_clear_400(client, answered):
    conversation, _sent = answered
    url = reverse("api-conversation", args=[conversation.pk])
    response = client.patch(url, data="{oops", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "bad_json"
    response = client.patch(url, data="[1]", content_type="application/json")
    assert response.status_code == 400


def test_writes_need_the_csrf_token(user, answered):
    conversation, sent = answered
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    for method, url in (
        ("post", reverse("api-conversations")),
        ("patch", reverse("api-conversation", args=[conversation.pk])),
        ("delete", reverse("api-conversation", args=[conversation.pk])),
        ("post", reverse("api-feedback", args=[sent.answer.pk])),
        ("post", reverse("api-conversation-branch", args=[conversation.pk])),
    ):
        assert _json(strict, method, url).status_code == 403, url
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_feedback_round_trip(client, answered):
    _conversation, sent = answered
    url = reverse("api-feedback", args=[sent.answer.pk])
    response = _json(client, "post", url, {"rating": -1, "reason": "Too vague"})
    assert response.json() == {"message": sent.answer.pk, "rating": -1, "reason": "Too vague"}
    feedback = Feedback.objects.get()
    assert feedback.model_version.name == "smol"
    assert _json(client, "post", url, {"rating": 3}).status_code == 400
    assert _json(client, "post", url, {"rating": 0}).json()["rating"] is None


def test_branch_switches_the_active_path(client, user, answered):
    conversation, sent = answered
    edited = message_send(
        user=user,
        conversation=conversation,
        content="Where is it now?",
        client_id=uuid.uuid4(),
        parent_id=None,
    )
    url = reverse("api-conversation-branch", args=[conversation.pk])
    data = _json(client, "post", url, {"message": sent.question.pk}).json()
    assert [m["content"] for m in data["messages"]] == ["Where is it?", "It **shipped**."]
    assert data["messages"][0]["siblings"] == [sent.question.pk, edited.question.pk]
    assert _json(client, "post", url, {"message": 999_999}).status_code == 404


def test_exports_download_markdown_and_the_training_format(client, answered):
    conversation, _sent = answered
    md = client.get(reverse("api-conversation-export", args=[conversation.pk, "md"]))
    assert md["Content-Type"].startswith("text/markdown")
    assert 'filename="conversation-' in md["Content-Disposition"]
    assert "**Assistant** (smol)" in md.content.decode()
    data = client.get(reverse("api-conversation-export", args=[conversation.pk, "json"])).json()
    assert data == {
        "messages": [
            {"role": "user", "content": "Where is it?"},
            {"role": "assistant", "content": "It **shipped**."},
        ]
    }
    assert (
        client.get(reverse("api-conversation-export", args=[conversation.pk, "exe"])).status_code
        == 404
    )


def test_delete_removes_the_conversation(client, answered):
    conversation, _sent = answered
    assert (
        _json(client, "delete", reverse("api-conversation", args=[conversation.pk])).status_code
        == 204
    )
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_pinned_conversations_come_first_and_unpinning_puts_them_back(client, user):
    older = conversation_create(user=user, title="Older")
    newer = conversation_create(user=user, title="Newer")
    url = reverse("api-conversations")
    assert [c["title"] for c in client.get(url).json()["results"]] == ["Newer", "Older"]
    pinned = _json(client, "patch", reverse("api-conversation", args=[older.pk]), {"pinned": True})
    assert pinned.json()["conversation"]["pinned"] is True
    results = client.get(url).json()["results"]
    assert [(c["title"], c["pinned"]) for c in results] == [("Older", True), ("Newer", False)]
    _json(client, "patch", reverse("api-conversation", args=[older.pk]), {"pinned": False})
    assert client.get(url).json()["results"][0]["title"] == "Newer"
    bad = _json(client, "patch", reverse("api-conversation", args=[newer.pk]), {"pinned": "yes"})
    assert bad.status_code == 400 and "pinned" in bad.json()["fields"]


def test_clearing_a_title_goes_back_to_the_automatic_one(client, user, answered):
    conversation, _sent = answered
    url = reverse("api-conversation", args=[conversation.pk])
    data = _json(client, "patch", url, {"title": ""}).json()["conversation"]
    assert data["title"] == "Where is it?" and data["title_is_auto"] is True
    data = _json(client, "patch", url, {"title": "Parcel"}).json()["conversation"]
    assert data["title"] == "Parcel" and data["title_is_auto"] is False
    # Saving the settings of an automatic title with the field left empty
    # keeps the automatic title.
    _json(client, "patch", url, {"title": ""})
    data = _json(client, "patch", url, {"title": "", "temperature": 0.5}).json()["conversation"]
    assert data["title"] == "Where is it?"


def test_the_model_picker_offers_production_to_all_and_candidates_to_staff(client, user):
    from models_admin.models import ModelVersion

    production = ModelVersionFactory(name="prod", state=ModelVersion.State.PRODUCTION)
    candidate = ModelVersionFactory(name="cand", state=ModelVersion.State.CANDIDATE)
    ModelVersionFactory(name="old", state=ModelVersion.State.ARCHIVED)
    names = [v["name"] for v in client.get(reverse("api-versions")).json()["versions"]]
    assert names == ["prod"]
    conversation = conversation_create(user=user)
    url = reverse("api-conversation", args=[conversation.pk])
    refused = _json(client, "patch", url, {"model_version": candidate.pk})
    assert refused.status_code == 400 and "model_version" in refused.json()["fields"]

    staff = UserFactory(is_staff=True)
    staff_client = Client()
    staff_client.force_login(staff)
    names = [v["name"] for v in staff_client.get(reverse("api-versions")).json()["versions"]]
    assert names == ["prod", "cand"]
    created = _json(
        staff_client, "post", reverse("api-conversations"), {"model_version": candidate.pk}
    )
    assert created.status_code == 201 and created.json()["model_version"] == candidate.pk
    picked = Conversation.objects.get(pk=created.json()["id"])
    # The picked version answers, not production.
    sent = message_send(user=staff, conversation=picked, content="Hi", client_id=uuid.uuid4())
    assert sent.answer.model_version == candidate
    data = _json(
        staff_client,
        "patch",
        reverse("api-conversation", args=[picked.pk]),
        {"model_version": None},
    ).json()
    assert data["conversation"]["model_version"] is None
    assert production.pk != candidate.pk
