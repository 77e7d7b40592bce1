"""SQLite under load: fifty users stream answers at once on the default
file database (WAL, IMMEDIATE transactions, a busy timeout) while an
inference worker in another process stores the answers."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from chat.models import Message
from chat.services.conversations import conversation_create
from chatsite.asgi import application
from models_admin.services import model_version_register
from tests.factories import UserFactory
from tests.tiny_models import chain_llama_save

USERS = 50
#: What the worker's model answers to anything: a few tokens.
FORCED = "Your order ships within two working days."
TIMEOUT = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.skipif(
        "postgresql" in django_settings.DATABASES["default"]["ENGINE"],
        reason="SQLite's single writer under concurrent streams; DATABASE_URL points at "
        "PostgreSQL",
    ),
]


@pytest.fixture(scope="module")
def forced_model_dir(tmp_path_factory, default_model_dir):
    folder, _chain = chain_llama_save(
        tmp_path_factory.mktemp("models") / "forced",
        text=FORCED,
        default_model_dir=default_model_dir,
    )
    return folder


@pytest.fixture
def worker(worker_process, forced_model_dir, settings):
    """A worker process serving the forced model from the test database."""
    settings.MODEL_DIR = forced_model_dir.parent
    model_version_register(name="forced", folder=forced_model_dir)
    return worker_process(
        MODEL_DIR=str(forced_model_dir.parent),
        INFERENCE_SLOTS=str(USERS),
        INFERENCE_THREADS="1",
    )


@sync_to_async
def _user_with_conversation() -> tuple[str, int]:
    user = UserFactory()
    conversation = conversation_create(user=user, max_tokens=32)
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value, conversation.pk


@sync_to_async
def _journal_mode() -> str:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        return cursor.fetchone()[0]


async def _socket(cookie: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[
            (b"origin", b"http://localhost"),
            (b"host", b"localhost"),
            (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ],
    )
    connected, _code = await socket.connect(timeout=TIMEOUT)
    assert connected
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
    return socket


async def _answer(socket: WebsocketCommunicator) -> list[dict]:
    """Every frame up to the message.finished of this socket's answer."""
    frames: list[dict] = []
    answer_id = None
    while True:
        frame = await socket.receive_json_from(timeout=TIMEOUT)
        frames.append(frame)
        if frame["type"] == "message.accepted":
            answer_id = frame["answer"]["id"]
        if frame["type"] == "error":
            return frames
        if frame["type"] == "message.finished" and frame["answer"]["id"] == answer_id:
            return frames


async def test_fifty_users_stream_at_once_on_sqlite_without_a_lock_error(worker, caplog):
    assert await _journal_mode() == "wal"
    assert connection.settings_dict["NAME"] not in ("", ":memory:")
    accounts = [await _user_with_conversation() for _ in range(USERS)]
    sockets = [await _socket(cookie) for cookie, _conversation in accounts]
    caplog.set_level(logging.WARNING)

    await asyncio.gather(
        *(
            socket.send_json_to(
                {
                    "type": "message.send",
                    "conversation": conversation,
                    "content": f"Where is order {n}?",
                    "client_id": str(uuid.uuid4()),
                }
            )
            for n, (socket, (_cookie, conversation)) in enumerate(
                zip(sockets, accounts, strict=True)
            )
        )
    )
    streams = await asyncio.gather(*(_answer(socket) for socket in sockets))

    for frames in streams:
        assert not [f for f in frames if f["type"] == "error"], frames[-1]
        answer = frames[-1]["answer"]
        streamed = "".join(
            f["text"]
            for f in frames
            if f["type"] == "generation.text" and f["message"] == answer["id"]
        )
        assert (answer["status"], answer["content"]) == ("done", FORCED)
        assert streamed == FORCED
    stored = await sync_to_async(list)(
        Message.objects.filter(role=Message.Role.ASSISTANT).values_list("status", "content")
    )
    assert stored == [("done", FORCED)] * USERS
    assert "database is locked" not in worker.log_text()
    assert "database is locked" not in caplog.text
    for socket in sockets:
        await socket.disconnect()
