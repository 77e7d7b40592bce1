"""Hostile input on the three WebSockets (``/ws/chat/``, ``/ws/widget/``,
``/ws/dashboard/``) through the real ASGI application: origins, other
people's ids, malformed, oversized and flooding frames. Wherever one socket
misbehaves, a second, well-behaved socket of the same user, visitor or
staff member keeps working: with a real worker it still sends a message and
receives the whole answer."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission
from django.test import Client

from chat.models import Conversation, Message
from chat.services.conversations import conversation_create, conversation_update
from chat.services.messages import message_generation_finish, message_send
from chat.services.widget_identity import visitor_start
from chat.services.widget_sites import widget_site_save
from chatsite.asgi import application
from inference.connection import generation_key
from inference.protocol import event_encode
from inference.worker.wiring import (
    generation_store,
    production_version_get,
    version_get,
)
from models_admin.services import model_version_create, model_version_promote
from tests.factories import ModelVersionFactory, UserFactory
from tests.tiny_models import chain_llama_save

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TIMEOUT = 30
GOOD_ORIGIN = b"http://localhost"
#: No header at all, another site, a sandboxed page, a look-alike host.
BAD_ORIGINS = [None, b"http://evil.example", b"null", b"http://localhost.evil.example"]
SHOP = "https://shop.example"
#: What the serving worker's model answers to anything.
FORCED = "Returns are free within thirty days."
TWO_MB = 2 * 1024 * 1024
#: Deeper than the JSON decoder's recursion limit, far below any size limit.
DEEP_JSON = "[" * 2000 + "]" * 2000
#: An unknown frame every consumer answers with an error naming it.
PROBE = {"type": "probe.end"}


# --- sockets -------------------------------------------------------------------


@sync_to_async
def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def _open(
    path: str, *, user=None, origin: bytes | None = GOOD_ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin))
    if user is not None:
        cookie = await _cookie(user)
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _code = await communicator.connect(timeout=TIMEOUT)
    return communicator, connected


def _widget_path(site) -> str:
    return f"/ws/widget/?key={site.public_key}&origin={SHOP}"


async def _chat_socket(user) -> WebsocketCommunicator:
    socket, connected = await _open("/ws/chat/", user=user)
    assert connected
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
    return socket


async def _widget_socket(site, token: str | None = None) -> tuple[WebsocketCommunicator, dict]:
    socket, connected = await _open(_widget_path(site))
    assert connected
    await socket.send_json_to({"type": "hello", "token": token})
    welcome = await socket.receive_json_from(timeout=TIMEOUT)
    assert welcome["type"] == "welcome"
    return socket, welcome


async def _dashboard_socket(staff) -> WebsocketCommunicator:
    socket, connected = await _open("/ws/dashboard/", user=staff)
    assert connected
    await socket.send_json_to({"type": "subscribe", "topics": ["versions"]})
    assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "subscribed"
    return socket


async def _until(socket, predicate, *, limit: int = 2000) -> list[dict]:
    """Receive frames until one satisfies predicate; return them all."""
    frames = []
    for _ in range(limit):
        frames.append(await socket.receive_json_from(timeout=TIMEOUT))
        if predicate(frames[-1]):
            return frames
    raise AssertionError(f"no matching frame in {frames[-5:]}")


async def _closed(socket) -> tuple[int | None, list[dict]]:
    """Send a probe frame after what was sent, then read until the server
    closes the socket (return the close code and the frames before it) or
    answers the probe (return None: the socket stayed open)."""
    await socket.send_json_to(PROBE)
    frames: list[dict] = []
    while True:
        output = await socket.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            return output.get("code"), frames
        frame = json.loads(output["text"])
        if PROBE["type"] in frame.get("error", ""):
            return None, frames
        frames.append(frame)


async def _reply_or_crash(socket) -> dict:
    """The next frame the consumer sends; raise what it raised at once if
    it crashed instead (the communicator waits out its timeout first)."""
    output = asyncio.ensure_future(socket.output_queue.get())
    done, _pending = await asyncio.wait(
        {output, socket.future}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    if output in done:
        return json.loads(output.result()["text"])
    output.cancel()
    if socket.future.done():
        socket.future.result()
    raise AssertionError("the consumer sent nothing back")


async def _flood(socket, *, frames: int = 1000) -> None:
    """Send pings at about a thousand a second."""
    for _ in range(frames):
        await socket.send_json_to({"type": "ping"})
        await asyncio.sleep(0.001)


async def _send_raw(socket, text: str) -> None:
    """Send one text frame as is (the communicator refuses an empty one)."""
    await socket.send_input({"type": "websocket.receive", "text": text})


async def _still_usable(socket) -> None:
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}


async def _chats(socket, frame: dict) -> dict:
    """Send a message frame; return the stored answer once finished, after
    checking that it streamed in full, with no error on the way."""
    client_id = str(uuid.uuid4())
    await socket.send_json_to({**frame, "type": "message.send", "client_id": client_id})
    accepted = (await _until(socket, lambda f: f["type"] in ("message.accepted", "error")))[-1]
    assert accepted["type"] == "message.accepted", accepted
    answer_id = accepted["answer"]["id"]
    frames = await _until(
        socket, lambda f: f["type"] == "message.finished" and f["answer"]["id"] == answer_id
    )
    assert not [f for f in frames if f["type"] == "error"]
    streamed = "".join(
        f["text"] for f in frames if f["type"] == "generation.text" and f["message"] == answer_id
    )
    answer = frames[-1]["answer"]
    assert answer["status"] == "done"
    assert answer["content"] == streamed == FORCED
    return answer


async def _dashboard_still_notified(socket) -> None:
    await sync_to_async(lambda: model_version_promote(version=ModelVersionFactory()))()
    frame = await socket.receive_json_from(timeout=TIMEOUT)
    assert frame == {"type": "event", "topic": "versions", "payload": {"type": "versions.changed"}}
    await _still_usable(socket)


# --- fixtures ------------------------------------------------------------------


def _site(**data):
    base = {"name": "Shop", "allowed_origins": SHOP, "greeting": "Hi!"}
    return widget_site_save(data={**base, **data})


@pytest.fixture(scope="module")
def forced_model_dir(tmp_path_factory, default_model_dir):
    folder, _chain = chain_llama_save(
        tmp_path_factory.mktemp("models") / "forced",
        text=FORCED,
        default_model_dir=default_model_dir,
    )
    return folder


@pytest.fixture
def serving_worker(start_worker, forced_model_dir):
    """A worker on the production version that stores answers the way
    ``run_inference_worker`` does; its model always answers FORCED."""
    model_version_promote(version=model_version_create(name="forced", folder=forced_model_dir))
    worker = start_worker(
        production_version_get, version_lookup=version_get, on_finished=generation_store
    )
    assert worker.state == "ready"
    return worker


@pytest.fixture
async def user():
    return await sync_to_async(UserFactory)()


@pytest.fixture
async def conversation(user):
    return await sync_to_async(conversation_create)(user=user, max_tokens=32)


@pytest.fixture
async def site():
    return await sync_to_async(_site)()


@pytest.fixture
async def staff():
    return await sync_to_async(UserFactory)(is_staff=True)


# --- origins -------------------------------------------------------------------


@pytest.mark.parametrize("route", ["chat", "widget", "dashboard"])
async def test_a_missing_or_foreign_origin_is_refused_on_every_route(route, site, staff):
    path = {"chat": "/ws/chat/", "widget": _widget_path(site), "dashboard": "/ws/dashboard/"}[
        route
    ]
    # The same request from the site's own origin is let in: only the
    # origin makes the difference below.
    socket, connected = await _open(path, user=staff)
    assert connected
    await socket.disconnect()
    for origin in BAD_ORIGINS:
        socket, connected = await _open(path, user=staff, origin=origin)
        assert not connected, origin
        assert await socket.receive_nothing(timeout=0.1)
        await socket.disconnect()


@pytest.mark.parametrize("route", ["chat", "widget", "dashboard"])
async def test_another_port_or_scheme_of_the_same_host_is_refused_on_every_route(
    route, site, staff, settings
):
    """Scheme, host and port must all match the site's origin (or one of
    CSRF_TRUSTED_ORIGINS): a page on another port or over another scheme
    of the same host cannot open a socket with the user's cookie."""
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]
    path = {"chat": "/ws/chat/", "widget": _widget_path(site), "dashboard": "/ws/dashboard/"}[
        route
    ]
    for origin in (
        b"http://localhost:8080",
        b"https://localhost",
        b"ws://localhost",
        b"http://chat.example.com",
        b"https://chat.example.com:8443",
    ):
        socket, connected = await _open(path, user=staff, origin=origin)
        assert not connected, origin
        await socket.disconnect()
    for origin in (b"http://localhost:80", b"https://chat.example.com"):
        socket, connected = await _open(path, user=staff, origin=origin)
        assert connected, origin
        await socket.disconnect()


# --- other people's ids --------------------------------------------------------


async def _missing_ids() -> tuple[int, int]:
    @sync_to_async
    def highest() -> tuple[int, int]:
        conversation = Conversation.objects.order_by("-pk").first()
        message = Message.objects.order_by("-pk").first()
        return (conversation.pk if conversation else 0), (message.pk if message else 0)

    conversation_id, message_id = await highest()
    return conversation_id + 1000, message_id + 1000


async def _stream_more(redis_conn, answer, *pieces: str, seq: int) -> int:
    key = generation_key(answer.generation_id)
    for piece in pieces:
        await sync_to_async(redis_conn.xadd)(key, event_encode("text", text=piece), id=f"0-{seq}")
        seq += 1
    return seq


async def _finish(redis_conn, answer, text: str, *, seq: int) -> None:
    final = {"finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    key = generation_key(answer.generation_id)
    await sync_to_async(redis_conn.xadd)(key, event_encode("done", **final), id=f"0-{seq}")
    await sync_to_async(message_generation_finish)(
        generation_id=str(answer.generation_id), final=final, text=text
    )


async def test_another_users_ids_get_the_missing_id_answer_and_none_of_their_events(
    user, redis_conn
):
    owner = await sync_to_async(UserFactory)()
    theirs = await sync_to_async(conversation_create)(user=owner)
    sent = await sync_to_async(message_send)(
        user=owner, conversation=theirs, content="My secret", client_id=uuid.uuid4()
    )
    await sync_to_async(redis_conn.xadd)(
        generation_key(sent.answer.generation_id),
        event_encode("start", model_version="tiny"),
        id="0-1",
    )
    seq = await _stream_more(redis_conn, sent.answer, "Secret ", seq=2)
    site = await sync_to_async(_site)()
    visitor = await sync_to_async(visitor_start)(site=site, token=None)
    widget_conversation = await sync_to_async(Conversation.objects.create)(
        site=site, visitor=visitor, source="widget"
    )
    visitor_message = await sync_to_async(Message.objects.create)(
        conversation=widget_conversation, role="user", content="Visitor secret"
    )
    mine = await sync_to_async(conversation_create)(user=user)

    watcher = await _chat_socket(owner)
    await watcher.send_json_to({"type": "conversation.open", "conversation": theirs.pk})
    await _until(watcher, lambda f: f.get("text") == "Secret ")
    spy = await _chat_socket(user)
    # Asking to resume someone else's answer from one's own conversation
    # starts nothing.
    await spy.send_json_to(
        {"type": "conversation.open", "conversation": mine.pk, "after": {str(sent.answer.pk): 0}}
    )
    assert await spy.receive_json_from(timeout=TIMEOUT) == {
        "type": "conversation.opened",
        "conversation": mine.pk,
    }

    client_id = str(uuid.uuid4())

    async def replies(conversation_id: int, message_id: int) -> list[dict]:
        answers = []
        for frame in [
            {"type": "conversation.open", "conversation": conversation_id},
            {"type": "message.send", "conversation": conversation_id, "content": "Let me in"},
            {"type": "message.regenerate", "message": message_id},
            {"type": "generation.stop", "message": message_id},
            {
                "type": "message.send",
                "conversation": mine.pk,
                "content": "Hi",
                "parent": message_id,
            },
        ]:
            await spy.send_json_to({**frame, "client_id": client_id})
            answers.append(await spy.receive_json_from(timeout=TIMEOUT))
        return answers

    missing = await replies(*(await _missing_ids()))
    assert [a["code"] for a in missing] == ["not_found"] * 5
    for conversation_id, message_id in [
        (theirs.pk, sent.answer.pk),
        (theirs.pk, sent.question.pk),
        (widget_conversation.pk, visitor_message.pk),
    ]:
        assert await replies(conversation_id, message_id) == missing

    # Their answer goes on and ends, the conversation is renamed: the owner
    # hears all of it, the other user nothing.
    seq = await _stream_more(redis_conn, sent.answer, "stays ", "here.", seq=seq)
    await _finish(redis_conn, sent.answer, "Secret stays here.", seq=seq)
    await sync_to_async(conversation_update)(conversation=theirs, title="Renamed")
    await _until(watcher, lambda f: f["type"] == "conversation.changed")
    # Events reach one socket in the order they were sent: anything of
    # theirs forwarded to the other user would come before this.
    await sync_to_async(conversation_create)(user=user)
    assert (await spy.receive_json_from(timeout=TIMEOUT))["type"] == "conversations.changed"
    assert await spy.receive_nothing(timeout=1)
    assert await sync_to_async(Message.objects.filter(conversation=theirs).count)() == 2
    for socket in (watcher, spy):
        await socket.disconnect()


async def test_another_visitors_conversation_is_out_of_reach_of_a_widget_socket(
    site, user, redis_conn
):
    victim, _welcome = await _widget_socket(site)
    await victim.send_json_to(
        {"type": "message.send", "content": "My address is ...", "client_id": str(uuid.uuid4())}
    )
    accepted = (await _until(victim, lambda f: f["type"] == "message.accepted"))[-1]
    theirs = accepted["conversation"]
    answer = await sync_to_async(Message.objects.get)(pk=accepted["answer"]["id"])
    seq = await _stream_more(redis_conn, answer, "Secret ", seq=1)
    await _until(victim, lambda f: f.get("text") == "Secret ")
    chat_conversation = await sync_to_async(conversation_create)(user=user)
    chat_message = await sync_to_async(Message.objects.create)(
        conversation=chat_conversation, role="user", content="A member's secret"
    )

    spy, welcome = await _widget_socket(site)
    assert welcome["conversation"] is None
    client_id = str(uuid.uuid4())

    async def stop(message_id: int) -> dict:
        await spy.send_json_to(
            {"type": "generation.stop", "message": message_id, "client_id": client_id}
        )
        return await spy.receive_json_from(timeout=TIMEOUT)

    _conversation_id, missing_id = await _missing_ids()
    missing = await stop(missing_id)
    assert missing["code"] == "not_found"
    for message_id in (answer.pk, accepted["question"]["id"], chat_message.pk):
        assert await stop(message_id) == missing

    # Their answer goes on and ends: the visitor hears it, the spy nothing.
    seq = await _stream_more(redis_conn, answer, "stays ", "here.", seq=seq)
    await _finish(redis_conn, answer, "Secret stays here.", seq=seq)
    await _until(victim, lambda f: f["type"] == "message.finished")
    await _still_usable(spy)
    assert await spy.receive_nothing(timeout=1)

    # A frame naming their conversation lands in the spy's own one.
    await spy.send_json_to(
        {
            "type": "message.send",
            "conversation": theirs,
            "content": "Me too",
            "client_id": str(uuid.uuid4()),
        }
    )
    own = (await _until(spy, lambda f: f["type"] == "message.accepted"))[-1]
    assert own["conversation"] != theirs
    assert await sync_to_async(Message.objects.filter(conversation_id=theirs).count)() == 2
    for socket in (victim, spy):
        await socket.disconnect()


async def test_a_visitor_token_opens_nothing_on_another_site(site):
    victim, welcome = await _widget_socket(site)
    await victim.send_json_to(
        {"type": "message.send", "content": "Hello", "client_id": str(uuid.uuid4())}
    )
    await _until(victim, lambda f: f["type"] == "message.accepted")
    other = await sync_to_async(_site)(name="Other shop")
    spy, other_welcome = await _widget_socket(other, token=welcome["token"])
    assert other_welcome["conversation"] is None
    assert other_welcome["visitor"]["id"] != welcome["visitor"]["id"]
    for socket in (victim, spy):
        await socket.disconnect()


async def test_an_agent_hears_nothing_of_a_members_private_conversation(user, conversation):
    @sync_to_async
    def agent_create():
        agent = UserFactory(is_staff=True)
        agent.user_permissions.add(Permission.objects.get(codename="answer_visitors"))
        return agent

    agent = await _dashboard_socket(await agent_create())
    missing_id, _message_id = await _missing_ids()
    replies = []
    for conversation_id in (missing_id, conversation.pk):
        await agent.send_json_to(
            {"type": "subscribe", "topics": ["versions", f"conversation.{conversation_id}"]}
        )
        reply = await agent.receive_json_from(timeout=TIMEOUT)
        replies.append(json.dumps(reply).replace(str(conversation_id), "ID"))
    await sync_to_async(message_send)(
        user=user, conversation=conversation, content="My private note", client_id=uuid.uuid4()
    )
    # Events reach one socket in the order they were sent: had the member's
    # message been forwarded, it would come before this one.
    await sync_to_async(lambda: model_version_promote(version=ModelVersionFactory()))()
    first = await agent.receive_json_from(timeout=TIMEOUT)
    await agent.disconnect()
    assert first["topic"] == "versions", first
    assert replies[0] == replies[1]


# --- the chat socket: malformed, oversized, flooding ---------------------------

#: Frames a page never sends, and the error each gets.
MALFORMED_CHAT = [
    ("", "bad_json"),
    ('"a string"', "bad_json"),
    ("null", "bad_json"),
    ("12", "bad_json"),
    ('{"type": 7}', "unknown_type"),
    ('{"type": ["message.send"]}', "unknown_type"),
    ('{"type": "conversation.open", "conversation": NaN}', "not_found"),
    ('{"type": "conversation.open", "conversation": 1e999}', "not_found"),
    ('{"type": "conversation.open", "conversation": [1]}', "not_found"),
    ('{"type": "message.send", "conversation": {"id": 1}, "content": "x"}', "not_found"),
    ('{"type": "generation.stop", "message": "1 OR 1=1"}', "not_found"),
]


async def test_malformed_frames_get_errors_and_the_user_keeps_chatting(
    user, conversation, serving_worker
):
    sibling = await _chat_socket(user)
    hostile = await _chat_socket(user)
    for text, code in MALFORMED_CHAT:
        await _send_raw(hostile, text)
        reply = await hostile.receive_json_from(timeout=TIMEOUT)
        assert (reply["type"], reply["code"]) == ("error", code), text
    for content in (["a", "list"], 42, None, " \n "):
        await hostile.send_json_to(
            {
                "type": "message.send",
                "conversation": conversation.pk,
                "content": content,
                "client_id": str(uuid.uuid4()),
            }
        )
        assert (await hostile.receive_json_from(timeout=TIMEOUT))["code"] == "empty"
    await _still_usable(hostile)
    await _chats(hostile, {"conversation": conversation.pk, "content": "Still there?"})
    await _chats(sibling, {"conversation": conversation.pk, "content": "And here?"})
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_2mb_frame_closes_that_socket_with_1009_and_the_user_keeps_chatting(
    user, conversation, serving_worker
):
    sibling = await _chat_socket(user)
    hostile = await _chat_socket(user)
    await hostile.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * TWO_MB}))
    code, frames = await _closed(hostile)
    assert code == 1009
    assert [f["code"] for f in frames] == ["too_big"]
    await _chats(sibling, {"conversation": conversation.pk, "content": "Hello?"})
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_flood_closes_that_socket_with_1008_and_the_user_keeps_chatting(
    user, conversation, serving_worker
):
    sibling = await _chat_socket(user)
    hostile = await _chat_socket(user)
    await _flood(hostile)
    code, frames = await _closed(hostile)
    assert code == 1008
    assert frames[-1]["code"] == "flood"
    await _chats(sibling, {"conversation": conversation.pk, "content": "Hello?"})
    for socket in (sibling, hostile):
        await socket.disconnect()


# --- the widget socket ----------------------------------------------------------

MALFORMED_WIDGET = [
    ("{nope", "bad_json"),
    ("[1, 2]", "bad_json"),
    ('"hello"', "bad_json"),
    ('{"type": "message.explode"}', "unknown_type"),
    ('{"type": null}', "unknown_type"),
    ('{"type": "generation.stop", "message": "1"}', "not_found"),
    ('{"type": "message.send", "content": {"text": "hi"}, "client_id": "x"}', "invalid"),
]


async def test_malformed_widget_frames_get_errors_and_the_visitor_keeps_chatting(
    site, serving_worker
):
    hostile, welcome = await _widget_socket(site)
    sibling, _welcome = await _widget_socket(site, token=welcome["token"])
    for text, code in MALFORMED_WIDGET:
        await _send_raw(hostile, text)
        reply = await hostile.receive_json_from(timeout=TIMEOUT)
        assert (reply["type"], reply["code"]) == ("error", code), text
    await hostile.send_to(bytes_data=b"\x00\xff")
    assert (await hostile.receive_json_from(timeout=TIMEOUT))["code"] == "invalid"
    await _still_usable(hostile)
    await _chats(sibling, {"content": "Where is my order?"})
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_2mb_widget_frame_closes_that_socket_with_1009_and_the_visitor_keeps_chatting(
    site, serving_worker
):
    hostile, welcome = await _widget_socket(site)
    sibling, _welcome = await _widget_socket(site, token=welcome["token"])
    await hostile.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * TWO_MB}))
    code, frames = await _closed(hostile)
    assert code == 1009
    assert [f["code"] for f in frames] == ["too_big"]
    await _chats(sibling, {"content": "Where is my order?"})
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_widget_flood_closes_that_socket_with_1008_and_the_visitor_keeps_chatting(
    site, serving_worker
):
    hostile, welcome = await _widget_socket(site)
    sibling, _welcome = await _widget_socket(site, token=welcome["token"])
    await _flood(hostile)
    code, frames = await _closed(hostile)
    assert code == 1008
    assert frames[-1]["code"] == "flood"
    await _chats(sibling, {"content": "Where is my order?"})
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_widget_socket_flooding_before_hello_is_closed_with_1008(site):
    hostile, connected = await _open(_widget_path(site))
    assert connected
    await _flood(hostile, frames=200)
    code, _frames = await _closed(hostile)
    assert code == 1008
    await hostile.disconnect()


# --- the dashboard socket --------------------------------------------------------

MALFORMED_DASHBOARD = [
    ("[1, 2]", "JSON objects"),
    ("null", "JSON objects"),
    ('"subscribe"', "JSON objects"),
    ("", "JSON objects"),
    ('{"type": 7}', "Unknown frame"),
    ('{"type": "subscribe", "topics": [{"a": 1}]}', "Unknown topic"),
    ('{"type": "subscribe", "topics": ["conversation.1"]}', "Unknown topic"),
    ('{"type": "subscribe", "topics": ' + json.dumps(["jobs"] * 33) + "}", "list"),
]


async def test_malformed_dashboard_frames_get_errors_and_staff_stay_notified(staff):
    sibling = await _dashboard_socket(staff)
    hostile = await _dashboard_socket(staff)
    for text, expected in MALFORMED_DASHBOARD:
        await _send_raw(hostile, text)
        reply = await hostile.receive_json_from(timeout=TIMEOUT)
        assert reply["type"] == "error" and expected in reply["error"], text
    await hostile.send_to(bytes_data=b"\x00\xff")
    assert "JSON text" in (await hostile.receive_json_from(timeout=TIMEOUT))["error"]
    await _still_usable(hostile)
    await _dashboard_still_notified(sibling)
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_2mb_dashboard_frame_closes_that_socket_with_1009_and_staff_stay_notified(staff):
    sibling = await _dashboard_socket(staff)
    hostile = await _dashboard_socket(staff)
    await hostile.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * TWO_MB}))
    code, _frames = await _closed(hostile)
    assert code == 1009
    await _dashboard_still_notified(sibling)
    for socket in (sibling, hostile):
        await socket.disconnect()


async def test_a_dashboard_flood_closes_that_socket_with_1008_and_staff_stay_notified(staff):
    sibling = await _dashboard_socket(staff)
    hostile = await _dashboard_socket(staff)
    await _flood(hostile)
    code, _frames = await _closed(hostile)
    await _dashboard_still_notified(sibling)
    for socket in (sibling, hostile):
        await socket.disconnect()
    assert code == 1008


# --- every consumer ---------------------------------------------------------------


async def _any_socket(route: str, site, staff, user) -> WebsocketCommunicator:
    if route == "chat":
        return await _chat_socket(user)
    if route == "widget":
        return (await _widget_socket(site))[0]
    return await _dashboard_socket(staff)


@pytest.mark.parametrize("route", ["chat", "widget", "dashboard"])
async def test_deeply_nested_json_gets_an_error_and_the_socket_stays_usable(
    route, site, staff, user
):
    socket = await _any_socket(route, site, staff, user)
    await socket.send_to(text_data=DEEP_JSON)
    reply = await _reply_or_crash(socket)
    assert reply["type"] == "error"
    await _still_usable(socket)
    await socket.disconnect()


@pytest.mark.parametrize("route", ["chat", "widget", "dashboard"])
async def test_a_2mb_binary_frame_closes_the_socket_with_1009(route, site, staff, user):
    socket = await _any_socket(route, site, staff, user)
    await socket.send_to(bytes_data=b"\x00" * TWO_MB)
    code, _frames = await _closed(socket)
    await socket.disconnect()
    assert code == 1009
