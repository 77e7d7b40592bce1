"""A chat socket streaming an answer while Redis is killed and started
again: the socket stays open and the page ends with the whole answer,
every piece once."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings

from chat.services.conversations import conversation_create, conversation_update
from chat.services.events import conversation_group
from chat.services.messages import message_generation_finish
from chatsite.asgi import application
from inference.worker.heartbeat import WorkerState
from inference.worker.versions import VersionSpec
from tests.chat.test_consumer import TIMEOUT, _session_cookie
from tests.conftest import wait_for, worker_make
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def server(restartable_redis):
    return restartable_redis


@pytest.fixture
def worker(server, tiny_model_dir):
    def store(generation_id, final, text):
        message_generation_finish(generation_id=generation_id, final=final, text=text)

    client = redis.Redis.from_url(
        server.redis.url, decode_responses=True, socket_timeout=5, socket_connect_timeout=1
    )
    worker = worker_make(client, lambda: VersionSpec(1, "tiny", tiny_model_dir), on_finished=store)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: worker.state == WorkerState.READY)
    yield worker
    worker.stop()
    thread.join(timeout=30)


async def _socket(user) -> WebsocketCommunicator:
    cookie = await _session_cookie(user)
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
    return communicator


@pytest.mark.parametrize("lose_data", [False, True], ids=["kept-data", "lost-data"])
async def test_an_answer_streams_whole_through_a_redis_restart(server, worker, lose_data):
    user = await sync_to_async(UserFactory)()
    conversation = await sync_to_async(conversation_create)(user=user)
    await sync_to_async(conversation_update)(
        conversation=conversation, temperature=0.0, max_tokens=600
    )
    page = await _socket(user)
    await page.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "Tell me a long story",
            "client_id": str(uuid.uuid4()),
        }
    )
    shown: dict[int, str] = {}  # seq -> text, as the page keeps them
    finished = None
    restarted = False
    resets = 0
    while finished is None:
        # The socket stays open through the restart.
        frame = await page.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "generation.reset":
            resets += 1
            shown.clear()
        elif frame["type"] == "generation.text":
            assert frame["seq"] not in shown, "a piece came twice"
            shown[frame["seq"]] = frame["text"]
            if len(shown) >= 20 and not restarted:
                restarted = True
                await asyncio.to_thread(server.kill, lose_data=lose_data)
                await asyncio.to_thread(wait_for, lambda: worker.link.lost)
                await asyncio.to_thread(server.start)
        elif frame["type"] == "message.finished":
            finished = frame["answer"]
        elif frame["type"] == "error":
            raise AssertionError(f"error frame: {frame}")
    # The socket is still in its conversation's group, even after a Redis
    # that forgot every group: a change made elsewhere reaches it.
    await channel_layers["default"].group_send(
        conversation_group(conversation.pk),
        {"type": "conversation.changed", "conversation": conversation.pk},
    )
    changed = await page.receive_json_from(timeout=TIMEOUT)
    while changed["type"] != "conversation.changed":
        changed = await page.receive_json_from(timeout=TIMEOUT)
    await page.disconnect()
    assert restarted, "the answer ended before Redis could be restarted"
    assert finished["status"] == "done"
    seqs = sorted(shown)
    text = "".join(shown[s] for s in seqs)
    assert text == finished["content"], "the page shows exactly the stored answer"
