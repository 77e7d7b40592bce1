"""The chat socket protocol, through the real ASGI application (origin
check, session auth) with ``WebsocketCommunicator``, real Redis and, where
answers must really be written, an inference worker on a tiny model."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from chat.models import Message
from chat.services.conversations import conversation_create, conversation_update
from chat.services.messages import message_send
from chatsite.asgi import application
from inference.connection import generation_key
from inference.protocol import event_encode
from inference.worker.versions import VersionSpec
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TIMEOUT = 30


@sync_to_async
def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def _connect(user=None, *, origin: bytes = b"http://localhost") -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if user is not None:
        cookie = await _session_cookie(user)
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    if user is not None:
        hello = await communicator.receive_json_from(timeout=TIMEOUT)
        assert hello["type"] == "hello"
    return communicator


async def _until(communicator, predicate, *, limit: int = 2000) -> list[dict]:
    """Receive frames until one satisfies predicate; return them all."""
    frames = []
    for _ in range(limit):
        frame = await communicator.receive_json_from(timeout=TIMEOUT)
        frames.append(frame)
        if predicate(frame):
            return frames
    raise AssertionError(f"no matching frame in {frames[-5:]}")


def _finished(frames: list[dict]) -> dict:
    return next(f["answer"] for f in frames if f["type"] == "message.finished")


def _streamed(frames: list[dict], message_id: int) -> str:
    return "".join(
        f["text"] for f in frames if f["type"] == "generation.text" and f["message"] == message_id
    )


@pytest.fixture
async def user():
    return await sync_to_async(UserFactory)()


@pytest.fixture
async def conversation(user):
    return await sync_to_async(conversation_create)(user=user)


@pytest.fixture
def worker(start_worker, tiny_model_dir):
    """A worker that stores answers through the chat service, as
    ``run_inference_worker`` does."""
    from chat.services.messages import message_generation_finish

    def store(generation_id, final, text):
        message_generation_finish(generation_id=generation_id, final=final, text=text)

    return start_worker(lambda: VersionSpec(1, "tiny", tiny_model_dir), on_finished=store)


async def test_a_message_streams_numbered_text_and_ends_with_the_stored_answer(
    user, conversation, worker
):
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    client_id = str(uuid.uuid4())
    await socket.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "Hello!",
            "client_id": client_id,
        }
    )
    frames = await _until(socket, lambda f: f["type"] in ("message.finished", "error"))
    accepted = next((f for f in frames if f["type"] == "message.accepted"), None)
    assert accepted is not None, frames[-1]
    assert accepted["client_id"] == client_id and accepted["created"]
    assert accepted["question"]["content"] == "Hello!"
    answer_id = accepted["answer"]["id"]
    events = [f for f in frames if f.get("message") == answer_id and "seq" in f]
    assert [f["seq"] for f in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "generation.start" and events[0]["model_version"] == "tiny"
    answer = _finished(frames)
    assert answer["id"] == answer_id and answer["status"] == "done"
    assert answer["content"] == _streamed(frames, answer_id) != ""
    assert answer["model_version"] == "tiny"
    await socket.disconnect()


async def test_a_resent_message_is_accepted_again_without_a_second_answer(
    user, conversation, worker
):
    socket = await _connect(user)
    frame = {
        "type": "message.send",
        "conversation": conversation.pk,
        "content": "Once only",
        "client_id": str(uuid.uuid4()),
    }
    await socket.send_json_to(frame)
    first = (await _until(socket, lambda f: f["type"] == "message.accepted"))[-1]
    await socket.send_json_to(frame)
    again = (await _until(socket, lambda f: f["type"] == "message.accepted"))[-1]
    assert not again["created"]
    assert again["answer"]["id"] == first["answer"]["id"]
    assert await sync_to_async(Message.objects.count)() == 2
    await socket.disconnect()


async def test_every_tab_of_the_user_sees_the_same_stream(user, conversation, worker):
    tabs = [await _connect(user), await _connect(user)]
    for tab in tabs:
        await tab.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
        await _until(tab, lambda f: f["type"] == "conversation.opened")
    await tabs[0].send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "Both tabs",
            "client_id": str(uuid.uuid4()),
        }
    )
    seen = []
    for tab in tabs:
        frames = await _until(tab, lambda f: f["type"] == "message.finished")
        created = next(f for f in frames if f["type"] in ("message.created", "message.accepted"))
        answer_id = created["answer"]["id"]
        seen.append((answer_id, _streamed(frames, answer_id), _finished(frames)["content"]))
    assert seen[0] == seen[1]
    assert seen[0][1] == seen[0][2]
    for tab in tabs:
        await tab.disconnect()


async def _pending_answer(user, conversation) -> Message:
    sent = await sync_to_async(message_send)(
        user=user, conversation=conversation, content="Hi", client_id=uuid.uuid4()
    )
    return sent.answer


async def test_a_reconnecting_page_resumes_after_its_last_number_with_nothing_repeated(
    user, conversation, redis_conn
):
    answer = await _pending_answer(user, conversation)
    key = generation_key(answer.generation_id)
    pieces = ["The ", "parcel ", "left ", "today", "."]
    await sync_to_async(redis_conn.xadd)(
        key, event_encode("start", model_version="tiny"), id="0-1"
    )
    for seq, piece in enumerate(pieces, start=2):
        await sync_to_async(redis_conn.xadd)(key, event_encode("text", text=piece), id=f"0-{seq}")
    # The page had shown up to seq 3 ("The parcel ") when its socket dropped.
    socket = await _connect(user)
    await socket.send_json_to(
        {
            "type": "conversation.open",
            "conversation": conversation.pk,
            "after": {str(answer.pk): 3},
        }
    )
    frames = await _until(socket, lambda f: f.get("seq") == 6)
    texts = [(f["seq"], f["text"]) for f in frames if f["type"] == "generation.text"]
    assert texts == [(4, "left "), (5, "today"), (6, ".")]
    # The final event arrives; no worker stored the answer, so the socket
    # stores it from the stream, which holds every piece.
    final = event_encode(
        "done", finish_reason="stop", usage={"prompt_tokens": 3, "completion_tokens": 5}
    )
    await sync_to_async(redis_conn.xadd)(key, final, id="0-7")
    answer_frame = _finished(await _until(socket, lambda f: f["type"] == "message.finished"))
    assert answer_frame["content"] == "The parcel left today."
    assert answer_frame["status"] == "done"
    await socket.disconnect()


async def test_a_stream_rewritten_after_a_loss_is_replayed_from_the_start(
    user, conversation, redis_conn
):
    """Redis lost the stream's tail and another worker wrote a different
    continuation: the page is told to start again, and gets the new
    stream whole, not the two answers spliced."""
    answer = await _pending_answer(user, conversation)
    key = generation_key(answer.generation_id)

    def entry(seq: int, kind: str, writer: str, **data) -> None:
        redis_conn.xadd(key, {**event_encode(kind, **data), "w": writer}, id=f"0-{seq}")

    add = sync_to_async(entry)
    await add(1, "start", "first", model_version="tiny")
    for seq, piece in enumerate(["Red ", "green ", "blue"], start=2):
        await add(seq, "text", "first", text=piece)
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    await _until(socket, lambda f: f.get("seq") == 4)
    # The tail (3, 4) is lost; a second worker continues after 2.
    await sync_to_async(redis_conn.delete)(key)
    await add(1, "start", "first", model_version="tiny")
    await add(2, "text", "first", text="Red ")
    await add(3, "start", "second", model_version="tiny")
    for seq, piece in enumerate(["yellow ", "white"], start=4):
        await add(seq, "text", "second", text=piece)
    await add(6, "done", "second", finish_reason="stop")
    frames = await _until(socket, lambda f: f["type"] == "message.finished")
    kinds = [f["type"] for f in frames]
    assert "generation.reset" in kinds
    replayed = frames[kinds.index("generation.reset") + 1 :]
    texts = [f["text"] for f in replayed if f["type"] == "generation.text"]
    assert texts == ["Red ", "yellow ", "white"]
    assert _finished(frames)["content"] == "Red yellow white"
    await socket.disconnect()


async def test_stop_keeps_the_partial_answer(user, conversation, worker):
    await sync_to_async(conversation_update)(conversation=conversation, max_tokens=400)
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    await socket.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "Tell me a long story",
            "client_id": str(uuid.uuid4()),
        }
    )
    frames = await _until(socket, lambda f: f["type"] == "generation.text")
    answer_id = frames[-1]["message"]
    await socket.send_json_to({"type": "generation.stop", "message": answer_id})
    frames += await _until(socket, lambda f: f["type"] == "message.finished")
    answer = _finished(frames)
    assert answer["content"] == _streamed(frames, answer_id)
    # A tiny random model rarely ends on its own within 400 tokens.
    assert answer["status"] in ("cancelled", "done")
    assert answer["finish_reason"] in ("cancelled", "stop", "length")
    await socket.disconnect()


async def test_another_users_conversation_looks_missing_and_yields_no_events(
    user, conversation, worker
):
    stranger = await sync_to_async(UserFactory)()
    spy = await _connect(stranger)
    for conversation_id in (conversation.pk, 999_999):
        await spy.send_json_to({"type": "conversation.open", "conversation": conversation_id})
        error = await spy.receive_json_from(timeout=TIMEOUT)
        assert error == {"type": "error", "code": "not_found", "error": "No such conversation."}
    await spy.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "Let me in",
            "client_id": str(uuid.uuid4()),
        }
    )
    assert (await spy.receive_json_from(timeout=TIMEOUT))["code"] == "not_found"
    # The owner chats; the stranger's socket hears nothing of it.
    owner = await _connect(user)
    await owner.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "Private",
            "client_id": str(uuid.uuid4()),
        }
    )
    frames = await _until(owner, lambda f: f["type"] == "message.accepted")
    await spy.send_json_to({"type": "generation.stop", "message": frames[-1]["answer"]["id"]})
    assert (await spy.receive_json_from(timeout=TIMEOUT))["code"] == "not_found"
    await _until(owner, lambda f: f["type"] == "message.finished")
    assert await spy.receive_nothing(timeout=0.5)
    for socket in (owner, spy):
        await socket.disconnect()


async def test_malformed_and_unknown_frames_get_errors_and_the_socket_stays_usable(user):
    socket = await _connect(user)
    await socket.send_to(text_data="{not json")
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "bad_json"
    await socket.send_to(text_data="[1, 2]")
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "bad_json"
    await socket.send_json_to({"type": "message.explode"})
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "unknown_type"
    await socket.send_json_to({"no": "type"})
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "unknown_type"
    await socket.send_json_to({"type": "message.send", "conversation": "x", "content": "hi"})
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "not_found"
    await socket.send_to(bytes_data=b"\x00\x01")
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "invalid"
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await socket.disconnect()


async def test_refused_sends_name_the_limit_and_carry_the_client_id(user, conversation, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    socket = await _connect(user)
    client_id = str(uuid.uuid4())
    await socket.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "far too long for the limit",
            "client_id": client_id,
        }
    )
    error = await socket.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "too_long" and error["client_id"] == client_id
    assert "10 characters" in error["error"]
    await socket.disconnect()


async def test_an_oversized_frame_closes_the_socket_with_1009(user, settings):
    settings.CHAT_MAX_FRAME_BYTES = 2048
    socket = await _connect(user)
    await socket.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 4096}))
    assert (await socket.receive_json_from(timeout=TIMEOUT))["code"] == "too_big"
    assert await socket.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": 1009,
    }


async def test_a_flood_of_frames_closes_the_socket_with_1008(user):
    socket = await _connect(user)
    for _ in range(40):
        await socket.send_json_to({"type": "ping"})
    frames = []
    while True:
        output = await socket.receive_output(timeout=TIMEOUT)
        frames.append(output)
        if output["type"] == "websocket.close":
            break
    assert frames[-1]["code"] == 1008
    assert any('"flood"' in f.get("text", "") for f in frames)


async def test_a_logged_out_socket_is_told_and_closed(conversation):
    socket = await _connect(None)
    error = await socket.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "auth"
    assert await socket.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": 4401,
    }


async def test_a_foreign_origin_is_refused(user):
    cookie = await _session_cookie(user)
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[
            (b"origin", b"http://evil.example"),
            (b"host", b"localhost"),
            (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ],
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert not connected


async def test_a_waiting_answer_says_why_when_no_worker_runs(user, conversation, monkeypatch):
    from chat.consumers import chat as chat_consumer

    monkeypatch.setattr(chat_consumer, "WAIT_NOTICE_S", 0.3)
    answer = await _pending_answer(user, conversation)
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    frames = await _until(socket, lambda f: f["type"] == "generation.waiting")
    assert frames[-1]["message"] == answer.pk
    assert "No model worker" in frames[-1]["reason"]
    await asyncio.sleep(0)
    await socket.disconnect()


async def test_an_idle_socket_stays_open_and_still_hears_its_groups(user, conversation):
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    await _until(socket, lambda f: f["type"] == "conversation.opened")
    # Longer than the channel layer's 5 s blocking read.
    await asyncio.sleep(6.5)
    await sync_to_async(conversation_update)(conversation=conversation, title="Renamed")
    frames = await _until(socket, lambda f: f["type"] == "conversation.changed")
    assert frames[-1]["conversation"] == conversation.pk
    await socket.send_json_to({"type": "ping"})
    assert (await _until(socket, lambda f: f["type"] == "pong"))[-1] == {"type": "pong"}
    await socket.disconnect()


CHAIN_TEXT = "Returns are free within thirty days of delivery"


@pytest.fixture
def chain_worker(start_worker, tmp_path, default_model_dir):
    """A worker whose model answers CHAIN_TEXT, whatever it is asked."""
    from chat.services.messages import message_generation_finish
    from tests.tiny_models import chain_llama_save

    folder, chain = chain_llama_save(
        tmp_path / "chain", text=CHAIN_TEXT, default_model_dir=default_model_dir
    )

    def store(generation_id, final, text):
        message_generation_finish(generation_id=generation_id, final=final, text=text)

    worker = start_worker(lambda: VersionSpec(1, "chain", folder), on_finished=store)
    return worker, chain


async def test_a_length_cut_answer_continued_ends_as_the_uncut_one_would(
    user, conversation, chain_worker
):
    """Cut at 4 tokens, then continued: the model goes on from its own text
    (the prompt ends inside the answer, not after it), the same message
    grows, and the stored answer is the whole text."""
    _worker, chain = chain_worker
    await sync_to_async(conversation_update)(conversation=conversation, max_tokens=4)
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    await socket.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": "How do returns work?",
            "client_id": str(uuid.uuid4()),
        }
    )
    cut = _finished(await _until(socket, lambda f: f["type"] == "message.finished"))
    assert cut["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 4
    assert CHAIN_TEXT.startswith(cut["content"]) and cut["content"] != CHAIN_TEXT

    await sync_to_async(conversation_update)(conversation=conversation, max_tokens=100)
    client_id = str(uuid.uuid4())
    await socket.send_json_to(
        {"type": "message.continue", "message": cut["id"], "client_id": client_id}
    )
    # (A second word on the cut answer, with its tokens, may come first.)
    frames = await _until(
        socket,
        lambda f: (
            f["type"] == "error"
            or (f["type"] == "message.accepted" and f["client_id"] == client_id)
        ),
    )
    accepted = frames[-1]
    assert accepted["type"] == "message.accepted", accepted
    assert accepted["answer"]["id"] == cut["id"] and accepted["answer"]["status"] == "pending"
    # The cut answer's end may be announced again meanwhile: wait for the
    # end of the continued text.
    frames += await _until(
        socket,
        lambda f: (
            f["type"] == "error"
            or (f["type"] == "message.finished" and f["answer"]["content"] != cut["content"])
        ),
    )
    whole = _finished(frames[-1:])
    assert whole["id"] == cut["id"] and whole["finish_reason"] == "stop"
    assert whole["content"] == CHAIN_TEXT
    assert _streamed(frames, cut["id"]) == CHAIN_TEXT[len(cut["content"]) :]
    assert whole["usage"]["completion_tokens"] == len(chain) + 1  # and the end of turn
    assert await sync_to_async(Message.objects.filter(role="assistant").count)() == 1

    # A finished answer that ended on its own is not continued.
    await socket.send_json_to(
        {"type": "message.continue", "message": cut["id"], "client_id": str(uuid.uuid4())}
    )
    # (A list notification of the finished answer may come first.)
    refused = (await _until(socket, lambda frame: frame["type"] == "error"))[-1]
    assert refused["code"] == "invalid"
    await socket.disconnect()


@sync_to_async
def _tokens(user, message_id: int) -> list[dict]:
    client = Client()
    client.force_login(user)
    response = client.get(f"/api/messages/{message_id}/tokens/")
    assert response.status_code == 200, response.content
    return response.json()["tokens"]


async def _answer(socket, conversation, text: str) -> dict:
    await socket.send_json_to(
        {
            "type": "message.send",
            "conversation": conversation.pk,
            "content": text,
            "client_id": str(uuid.uuid4()),
        }
    )
    return _finished(await _until(socket, lambda f: f["type"] == "message.finished"))


async def test_an_answer_keeps_its_tokens_and_branches_from_an_alternative(
    user, conversation, worker
):
    """The answer's tokens spell it, each with the alternatives the model
    weighed; regenerating from one of them makes a new version that keeps
    the text before it, takes the alternative and goes on."""
    await sync_to_async(conversation_update)(conversation=conversation, max_tokens=60)
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    first = await _answer(socket, conversation, "Tell me something")
    if not first["has_tokens"]:
        # The stream's end can come before the worker stores the tokens;
        # the page hears of them then.
        frames = await _until(
            socket, lambda f: f["type"] == "message.finished" and f["answer"]["has_tokens"]
        )
        first = frames[-1]["answer"]
    tokens = await _tokens(user, first["id"])
    assert "".join(t["text"] for t in tokens) == first["content"]
    assert all(len(t["top"]) == 5 and t["logprob"] <= 0 for t in tokens)
    index = len(tokens) // 2
    alternative = next(
        a["text"] for a in tokens[index]["top"] if a["text"] != tokens[index]["text"]
    )
    client_id = str(uuid.uuid4())
    await socket.send_json_to(
        {
            "type": "message.branch",
            "message": first["id"],
            "index": index,
            "token": alternative,
            "client_id": client_id,
        }
    )
    frames = await _until(
        socket,
        lambda f: (
            f["type"] == "error"
            or (f["type"] == "message.accepted" and f["client_id"] == client_id)
        ),
    )
    accepted = frames[-1]
    assert accepted["type"] == "message.accepted", accepted
    new_id = accepted["answer"]["id"]
    frames = await _until(
        socket, lambda f: f["type"] == "message.finished" and f["answer"]["id"] == new_id
    )
    branched = _finished(frames[-1:])
    assert branched["id"] != first["id"] and branched["parent"] == first["parent"]
    start = "".join(t["text"] for t in tokens[:index]) + alternative
    assert branched["content"].startswith(start)
    versions = Message.objects.filter(parent_id=first["parent"]).order_by("pk")
    assert await sync_to_async(list)(versions.values_list("pk", flat=True)) == [
        first["id"],
        branched["id"],
    ]
    kept = await _tokens(user, branched["id"])
    assert [t["text"] for t in kept[: index + 1]] == [t["text"] for t in tokens[:index]] + [
        alternative
    ]
    assert "".join(t["text"] for t in kept) == branched["content"]
    # Only an alternative listed there is taken.
    await socket.send_json_to(
        {
            "type": "message.branch",
            "message": first["id"],
            "index": index,
            "token": "not-a-listed-token",
            "client_id": str(uuid.uuid4()),
        }
    )
    refused = (await _until(socket, lambda f: f["type"] == "error"))[-1]
    assert refused["code"] == "invalid"
    await socket.disconnect()


async def test_a_beam_search_conversation_answers_whole_without_a_token_view(
    user, conversation, worker
):
    await sync_to_async(conversation_update)(
        conversation=conversation, strategy="beam", beams=3, max_tokens=8
    )
    socket = await _connect(user)
    await socket.send_json_to({"type": "conversation.open", "conversation": conversation.pk})
    answer = await _answer(socket, conversation, "Hello there")
    assert answer["status"] == "done" and answer["content"]
    assert not answer["has_tokens"]
    # The search is deterministic: asking again gives the same answer.
    again = await _answer(socket, conversation, "Hello there")
    assert again["content"] == answer["content"]
    await socket.disconnect()
