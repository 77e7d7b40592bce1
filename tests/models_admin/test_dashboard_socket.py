"""The dashboard socket: staff only, topic subscriptions, live
notifications of promotions and training jobs."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from chatsite.asgi import application
from models_admin.services.model_versions import canary_start, model_version_promote
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TIMEOUT = 10


@sync_to_async
def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def _connect(user=None) -> tuple[WebsocketCommunicator, bool, int | None]:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if user is not None:
        cookie = await _cookie(user)
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, code = await communicator.connect(timeout=TIMEOUT)
    return communicator, connected, code


async def test_anonymous_and_non_staff_sockets_are_closed():
    _c, connected, code = await _connect()
    assert (connected, code) == (False, 4401)
    member = await sync_to_async(UserFactory)()
    _c, connected, code = await _connect(member)
    assert (connected, code) == (False, 4403)


async def test_staff_receive_notifications_for_the_topics_they_subscribed():
    staff = await sync_to_async(UserFactory)(is_staff=True)
    communicator, connected, _code = await _connect(staff)
    assert connected
    await communicator.send_json_to({"type": "subscribe", "topics": ["versions", "jobs"]})
    assert await communicator.receive_json_from(timeout=TIMEOUT) == {
        "type": "subscribed",
        "topics": ["jobs", "versions"],
    }

    def promote_and_canary():
        model_version_promote(version=ModelVersionFactory())
        canary_start(version=ModelVersionFactory(), percent=10)

    await sync_to_async(promote_and_canary)()
    for _ in range(2):
        frame = await communicator.receive_json_from(timeout=TIMEOUT)
        assert frame == {
            "type": "event",
            "topic": "versions",
            "payload": {"type": "versions.changed"},
        }
    await communicator.send_json_to({"type": "subscribe", "topics": []})
    await communicator.receive_json_from(timeout=TIMEOUT)
    await sync_to_async(model_version_promote)(version=await sync_to_async(ModelVersionFactory)())
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_bad_frames_get_an_error_and_the_socket_stays_open():
    staff = await sync_to_async(UserFactory)(is_staff=True)
    communicator, _connected, _code = await _connect(staff)
    for frame, expected in [
        ("not json", "JSON"),
        ('{"type": "dance"}', "Unknown frame"),
        ('{"type": "subscribe", "topics": ["../etc"]}', "Unknown topic"),
        ('{"type": "subscribe", "topics": "jobs"}', "list"),
    ]:
        await communicator.send_to(text_data=frame)
        reply = await communicator.receive_json_from(timeout=TIMEOUT)
        assert reply["type"] == "error" and expected in reply["error"]
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await communicator.send_to(text_data="x" * 10_000)
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 1009
