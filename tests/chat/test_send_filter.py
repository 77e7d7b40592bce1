"""Where the input filter runs on a send: after the sender's limits, so a
refused sender costs no matching, and on a thread of its own, so a long
message being matched holds up no other socket."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

import chat.services.messages as messages_service
from chat.services.conversations import conversation_create
from chat.services.messages import ChatError, message_send
from chatsite.asgi import application
from inference.content_filter import Verdict
from tests.factories import UserFactory

TIMEOUT = 30


@pytest.mark.django_db
def test_a_sender_over_the_limit_is_refused_before_the_filter_runs(monkeypatch, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 10
    user = UserFactory()
    filtered: list[str] = []
    real = messages_service.content_filter_input

    def spy(**kwargs):
        filtered.append(kwargs["text"])
        return real(**kwargs)

    monkeypatch.setattr(messages_service, "content_filter_input", spy)
    send = {"user": user, "content": "a b " * 4000}
    message_send(conversation=conversation_create(user=user), client_id=uuid.uuid4(), **send)
    assert len(filtered) == 1
    with pytest.raises(ChatError) as caught:
        message_send(conversation=conversation_create(user=user), client_id=uuid.uuid4(), **send)
    assert caught.value.code == "rate_limited"
    assert len(filtered) == 1


@sync_to_async
def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def _connect(user) -> WebsocketCommunicator:
    cookie = await _cookie(user)
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_message_being_filtered_holds_up_no_other_socket(monkeypatch):
    """While one user's message is in the filter, another user's socket
    still opens its conversation (a database call) and gets the answer."""
    entered, release = threading.Event(), threading.Event()

    def slow_filter(*, text: str, **kwargs) -> Verdict:
        entered.set()
        release.wait(TIMEOUT)
        return Verdict(text=text)

    monkeypatch.setattr(messages_service, "content_filter_input", slow_filter)
    alice, bob = await sync_to_async(UserFactory)(), await sync_to_async(UserFactory)()
    alice_chat = await sync_to_async(conversation_create)(user=alice)
    bob_chat = await sync_to_async(conversation_create)(user=bob)
    first, second = await _connect(alice), await _connect(bob)
    try:
        await first.send_json_to(
            {"type": "message.send", "conversation": alice_chat.pk, "content": "a b " * 4000,
             "client_id": str(uuid.uuid4())}
        )  # fmt: skip
        assert await asyncio.to_thread(entered.wait, TIMEOUT)
        await second.send_json_to({"type": "conversation.open", "conversation": bob_chat.pk})
        # Ten seconds is no speed limit: with the filter on the shared
        # thread, this answer could only come after release below.
        opened = await second.receive_json_from(timeout=10)
        assert opened == {"type": "conversation.opened", "conversation": bob_chat.pk}
    finally:
        release.set()
    frame = await first.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] in ("message.accepted", "message.created"), frame
    await first.disconnect()
    await second.disconnect()
