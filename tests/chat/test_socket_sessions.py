"""Sockets live only as long as the session that opened them, and a user
holds only so many at once. Through the real ASGI application: sessions
come from cookies the login views set, logout and the password change go
through their pages."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client

from chat.consumers import base as consumer_base
from chatsite.asgi import application
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TIMEOUT = 30
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase 42"


@sync_to_async
def _session(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def _open(path: str, client: Client | None) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
    if client is not None:
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    socket = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await socket.connect(timeout=TIMEOUT)
    return socket, connected


async def _chat(client: Client) -> WebsocketCommunicator:
    socket, connected = await _open("/ws/chat/", client)
    assert connected
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
    return socket


async def _dashboard(client: Client) -> WebsocketCommunicator:
    socket, connected = await _open("/ws/dashboard/", client)
    assert connected
    await socket.send_json_to({"type": "ping"})
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "pong"
    return socket


async def _close_code(socket: WebsocketCommunicator) -> int:
    """Read until the server closes the socket; return the close code."""
    for _ in range(50):
        message = await socket.receive_output(timeout=TIMEOUT)
        if message["type"] == "websocket.close":
            return message.get("code", 1000)
    raise AssertionError("the socket stayed open")


async def _alive(socket: WebsocketCommunicator) -> None:
    await socket.send_json_to({"type": "ping"})
    frame = await socket.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "pong", frame


async def test_logout_and_a_password_change_close_the_sessions_sockets_with_4401():
    """Logging out closes the chat and dashboard sockets of that session
    (4401) and leaves another session's open; changing the password from a
    third session closes the sockets of the others."""
    user = await sync_to_async(UserFactory)(is_staff=True)
    first, second, third = await _session(user), await _session(user), await _session(user)
    first_chat, first_dashboard = await _chat(first), await _dashboard(first)
    second_chat, second_dashboard = await _chat(second), await _dashboard(second)

    response = await sync_to_async(first.post)("/accounts/logout/")
    assert response.status_code in (200, 302)
    assert await _close_code(first_chat) == 4401
    assert await _close_code(first_dashboard) == 4401
    await _alive(second_chat)
    await _alive(second_dashboard)

    response = await sync_to_async(third.post)(
        "/accounts/password/change/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert await _close_code(second_chat) == 4401
    assert await _close_code(second_dashboard) == 4401
    for socket in (first_chat, first_dashboard, second_chat, second_dashboard):
        await socket.disconnect()


async def test_a_user_holds_at_most_the_socket_limit_and_a_closed_one_frees_its_slot(settings):
    """Past CHAT_MAX_SOCKETS_PER_USER a socket gets an error frame naming
    the limit and closes with 4429; closing one lets the next in; another
    user is not affected."""
    settings.CHAT_MAX_SOCKETS_PER_USER = 2
    user, other = await sync_to_async(UserFactory)(), await sync_to_async(UserFactory)()
    session, other_session = await _session(user), await _session(other)
    held = [await _chat(session), await _chat(session)]

    refused, connected = await _open("/ws/chat/", session)
    assert connected
    frame = await refused.receive_json_from(timeout=TIMEOUT)
    assert frame["code"] == "too_many_sockets"
    assert "At most 2" in frame["error"]
    assert await _close_code(refused) == 4429
    await refused.disconnect()

    other_socket = await _chat(other_session)
    await held.pop().disconnect()
    held.append(await _chat(session))
    await _alive(held[-1])
    for socket in [*held, other_socket]:
        await socket.disconnect()


async def test_a_session_deleted_without_a_logout_closes_its_sockets(monkeypatch):
    """A session that ends without a logout (expired and cleared, deleted
    by an administrator) closes its sockets at the next periodic check;
    the user's other sessions keep theirs."""
    monkeypatch.setattr(consumer_base, "SESSION_RECHECK_S", 0.2)
    user = await sync_to_async(UserFactory)()
    doomed, kept = await _session(user), await _session(user)
    doomed_socket, kept_socket = await _chat(doomed), await _chat(kept)
    key = doomed.cookies[django_settings.SESSION_COOKIE_NAME].value

    await sync_to_async(Session.objects.filter(session_key=key).delete)()

    assert await _close_code(doomed_socket) == 4401
    await _alive(kept_socket)
    for socket in (doomed_socket, kept_socket):
        await socket.disconnect()
