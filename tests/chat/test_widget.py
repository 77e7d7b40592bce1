"""The widget's server side: origins, the config and frame pages, visitor
tokens and identity, the widget socket with a real worker, and the
handoff to a person."""

from __future__ import annotations

import threading
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ValidationError

from chat.models import Conversation, Message, WidgetSite, WidgetVisitor
from chat.services.widget import (
    agent_reply,
    handoff_close,
    handoff_release,
    handoff_request,
    handoff_take,
    widget_message_send,
)
from chat.services.widget_identity import (
    WidgetError,
    identity_signature,
    visitor_identify,
    visitor_start,
    visitor_token,
)
from chat.services.widget_sites import origin_allowed, site_online, widget_site_save
from chatsite.asgi import application
from chatsite.security import csp_parse
from inference.worker.wiring import (
    generation_store,
    production_version_get,
    version_get,
)
from models_admin.services import model_version_create, model_version_promote
from tests.conftest import wait_for, worker_make
from tests.factories import UserFactory

TIMEOUT = 30


def _site(**data):
    base = {
        "name": "Shop",
        "allowed_origins": "https://shop.example\nhttps://*.brand.example\nhttp://127.0.0.1:8123",
        "greeting": "Hi! How can I help?",
    }
    return widget_site_save(data={**base, **data})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://shop.example", True),
        ("https://SHOP.example/", True),
        ("https://eu.brand.example", True),
        ("https://a.b.brand.example", True),
        ("https://brand.example", False),  # the bare domain is not a subdomain
        ("http://shop.example", False),  # another scheme
        ("https://shop.example:8443", False),  # another port
        ("https://evilshop.example", False),
        ("https://shop.example.evil.com", False),
        ("http://127.0.0.1:8123", True),
        ("null", False),
        ("", False),
        (None, False),
    ],
)
def test_origins_match_exactly_or_as_subdomains_of_a_wildcard(origin, allowed):
    assert origin_allowed(site=_site(), origin=origin) is allowed


@pytest.mark.django_db
def test_bad_origins_and_hours_are_refused_naming_the_field():
    with pytest.raises(ValidationError) as caught:
        _site(allowed_origins="ftp://x\nhttps://exa mple.com\nhttps://ok.example")
    assert len(caught.value.message_dict["allowed_origins"]) == 2
    with pytest.raises(ValidationError) as caught:
        _site(business_hours={"timezone": "Mars/Base", "days": {}})
    assert "business_hours" in caught.value.message_dict


@pytest.mark.django_db
def test_business_hours_decide_whether_people_answer():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    site = _site(
        business_hours={"timezone": "Europe/Paris", "days": {"mon": [["09:00", "18:00"]]}}
    )
    paris = ZoneInfo("Europe/Paris")
    assert site_online(site=site, now=datetime(2026, 11, 30, 10, 0, tzinfo=paris))  # Monday
    assert not site_online(site=site, now=datetime(2026, 11, 30, 19, 0, tzinfo=paris))
    assert not site_online(site=site, now=datetime(2026, 11, 29, 10, 0, tzinfo=paris))  # Sunday
    assert site_online(site=_site(name="Always"))


@pytest.mark.django_db
def test_the_config_is_readable_only_from_allowed_origins(client):
    site = _site()
    ok = client.get(
        "/widget/config/", {"key": site.public_key}, HTTP_ORIGIN="https://shop.example"
    )
    assert ok.status_code == 200
    assert ok["Access-Control-Allow-Origin"] == "https://shop.example"
    assert ok.json()["frame_url"].endswith(f"/widget/frame/?key={site.public_key}")
    refused = client.get(
        "/widget/config/", {"key": site.public_key}, HTTP_ORIGIN="https://evil.example"
    )
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused
    assert "evil.example" in refused.json()["error"]
    unknown = client.get("/widget/config/", {"key": "wk_nope"}, HTTP_ORIGIN="https://shop.example")
    assert unknown.status_code == 404


@pytest.mark.django_db
def test_only_allowed_origins_may_frame_the_widget_page(client):
    site = _site()
    frame = client.get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://shop.example"}
    )
    assert frame.status_code == 200
    assert csp_parse(frame["Content-Security-Policy"])["frame-ancestors"] == [
        "https://shop.example",
        "https://*.brand.example",
        "http://127.0.0.1:8123",
    ]
    assert "X-Frame-Options" not in frame
    refused = client.get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert csp_parse(refused["Content-Security-Policy"])["frame-ancestors"] == ["'none'"]
    # Every other page still refuses to be framed.
    assert client.get("/accounts/login/")["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "avatar",
    [
        "https://x;script-src *@evil.example/a.png",
        "https://x;script-src:*@evil.example/a.png",
        "https://cdn.example;script-src:*/a.png",
        "https://cdn.example,evil.example/a.png",
        "https://cdn.example:99999/a.png",
        "https://cdn.exa'mple/a.png",
    ],
)
def test_an_avatar_saved_before_validation_adds_nothing_to_the_frame_policy(client, avatar):
    site = _site()
    WidgetSite.objects.filter(pk=site.pk).update(avatar_url=avatar)
    frame = client.get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://shop.example"}
    )
    assert frame.status_code == 200
    header = frame["Content-Security-Policy"]
    policy = csp_parse(header)
    assert "evil.example" not in header and "*" not in policy["script-src"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["frame-ancestors"] == [
        "https://shop.example",
        "https://*.brand.example",
        "http://127.0.0.1:8123",
    ]
    assert avatar not in frame.content.decode()


@pytest.mark.django_db
def test_a_valid_avatar_adds_only_its_origin_to_the_frame_policy(client):
    site = _site(avatar_url="https://cdn.example:8443/img/a.png?v=2")
    frame = client.get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://shop.example"}
    )
    policy = csp_parse(frame["Content-Security-Policy"])
    assert policy["img-src"] == ["'self'", "data:", "https://cdn.example:8443"]


@pytest.mark.django_db
def test_visitor_tokens_continue_the_same_visitor_and_only_on_their_site():
    site, other = _site(), _site(name="Other")
    visitor = visitor_start(site=site, token=None)
    token = visitor_token(visitor=visitor)
    assert visitor_start(site=site, token=token) == visitor
    assert visitor_start(site=other, token=token) != visitor
    assert visitor_start(site=site, token=token[:-3] + "abc") != visitor


@pytest.mark.django_db
def test_identify_links_devices_and_a_wrong_signature_merges_nothing():
    site = _site()
    laptop = visitor_start(site=site, token=None)
    Conversation.objects.create(site=site, visitor=laptop, source="widget")
    signature = identity_signature(site=site, user_id="customer-7")
    known = visitor_identify(site=site, visitor=laptop, user_id="customer-7", signature=signature)
    assert known == laptop and known.external_id == "customer-7"
    phone = visitor_start(site=site, token=None)
    Conversation.objects.create(site=site, visitor=phone, source="widget")
    with pytest.raises(WidgetError):
        visitor_identify(site=site, visitor=phone, user_id="customer-7", signature="0" * 64)
    assert Conversation.objects.filter(visitor=phone).count() == 1
    same = visitor_identify(site=site, visitor=phone, user_id="customer-7", signature=signature)
    assert same == laptop
    assert Conversation.objects.filter(visitor=laptop).count() == 2


@pytest.mark.django_db
def test_while_a_person_owns_the_conversation_the_model_stays_silent(
    django_capture_on_commit_callbacks,
):
    site = _site()
    visitor = visitor_start(site=site, token=None)
    agent = UserFactory(first_name="Anna", is_staff=True)
    with django_capture_on_commit_callbacks(execute=False):
        first = widget_message_send(visitor=visitor, content="Hello", client_id=uuid.uuid4())
    assert first.answer is not None and first.answer.status == Message.Status.PENDING
    Message.objects.filter(pk=first.answer.pk).update(status="done", content="Hi!")
    conversation = Conversation.objects.get(visitor=visitor)
    handoff_take(conversation=conversation, agent=agent)
    quiet = widget_message_send(visitor=visitor, content="Are you human?", client_id=uuid.uuid4())
    assert quiet.answer is None
    reply = agent_reply(conversation=conversation, agent=agent, content="Yes, I'm Anna.")
    assert reply.author == agent and reply.parent == quiet.question
    with pytest.raises(Exception, match="Take the conversation"):
        agent_reply(conversation=conversation, agent=UserFactory(), content="me too")
    handoff_release(conversation=conversation)
    with django_capture_on_commit_callbacks(execute=False):
        again = widget_message_send(visitor=visitor, content="Thanks", client_id=uuid.uuid4())
    assert again.answer is not None and again.answer.status == Message.Status.PENDING


@pytest.mark.django_db
@pytest.mark.parametrize("step", ["request", "take", "close"])
def test_a_handoff_stops_the_running_answer_and_keeps_its_text(
    step, redis_conn, django_capture_on_commit_callbacks
):
    """The visitor asking for a person, staff taking over and closing each
    cancel the bot's running answer; what it wrote so far stays for staff
    to read. (No worker runs here, so the stop ends the answer at once.)"""
    site = _site(handoff_enabled=True)
    visitor = visitor_start(site=site, token=None)
    agent = UserFactory(first_name="Anna", is_staff=True)
    sent = widget_message_send(visitor=visitor, content="Hello", client_id=uuid.uuid4())
    assert sent.answer is not None and sent.answer.status == Message.Status.PENDING
    conversation = Conversation.objects.get(visitor=visitor)
    with django_capture_on_commit_callbacks(execute=True):
        if step == "request":
            handoff_request(visitor=visitor)
        elif step == "take":
            handoff_take(conversation=conversation, agent=agent)
        else:
            handoff_close(conversation=conversation)
    answer = Message.objects.get(pk=sent.answer.pk)
    assert answer.status == Message.Status.CANCELLED
    assert answer.finish_reason == "cancelled"
    assert Message.objects.filter(conversation=conversation, status="pending").count() == 0


# --- the socket ----------------------------------------------------------------


async def _connect(key: str, origin: str = "https://shop.example") -> tuple:
    communicator = WebsocketCommunicator(
        application,
        f"/ws/widget/?key={key}&origin={origin}",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    return communicator, connected


async def _until(communicator, predicate, limit: int = 2000) -> list[dict]:
    frames = []
    for _ in range(limit):
        frame = await communicator.receive_json_from(timeout=TIMEOUT)
        frames.append(frame)
        if predicate(frame):
            return frames
    raise AssertionError(frames[-5:])


@pytest.fixture
def widget_worker(redis_conn, tiny_model_dir):
    version = model_version_create(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    worker = worker_make(
        redis_conn,
        production_version_get,
        version_lookup=version_get,
        on_finished=generation_store,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: worker.state == "ready", timeout=60)
    yield worker
    worker.stop()
    thread.join(timeout=30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_unknown_key_or_a_foreign_origin_is_refused_at_connect():
    site = await sync_to_async(_site)()
    communicator, _ = await _connect("wk_unknown")
    assert (await communicator.receive_json_from())["code"] == "refused"
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4404
    communicator, _ = await _connect(site.public_key, origin="https://evil.example")
    assert "evil.example" in (await communicator.receive_json_from())["error"]
    assert (await communicator.receive_output(timeout=TIMEOUT))["code"] == 4403


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_visitor_chats_reconnects_with_the_token_and_gets_a_person(widget_worker):
    site = await sync_to_async(_site)()
    communicator, connected = await _connect(site.public_key)
    assert connected
    await communicator.send_json_to({"type": "hello", "token": None})
    welcome = await communicator.receive_json_from(timeout=TIMEOUT)
    assert welcome["type"] == "welcome" and welcome["conversation"] is None
    token = welcome["token"]

    await communicator.send_json_to(
        {"type": "message.send", "content": "Where is my order?", "client_id": str(uuid.uuid4())}
    )
    frames = await _until(communicator, lambda f: f["type"] == "message.finished")
    assert any(f["type"] == "generation.text" for f in frames)
    answer = frames[-1]["answer"]
    assert answer["status"] == "done" and answer["content"]
    await communicator.disconnect()

    # Another page load: the same visitor and conversation.
    communicator, _ = await _connect(site.public_key)
    await communicator.send_json_to({"type": "hello", "token": token})
    welcome = await communicator.receive_json_from(timeout=TIMEOUT)
    contents = [m["content"] for m in welcome["conversation"]["messages"]]
    assert contents == ["Where is my order?", answer["content"]]

    await communicator.send_json_to({"type": "handoff.request"})
    changed = await _until(communicator, lambda f: f["type"] == "handoff.changed")
    assert changed[-1]["state"] == "requested" and changed[-1]["online"] is True
    conversation = await sync_to_async(Conversation.objects.get)(site=site)
    agent = await sync_to_async(UserFactory)(first_name="Anna", is_staff=True)
    await sync_to_async(handoff_take)(conversation=conversation, agent=agent)
    joined = await _until(communicator, lambda f: f["type"] == "handoff.changed")
    assert (joined[-1]["state"], joined[-1]["agent"]) == ("active", "Anna")
    await sync_to_async(agent_reply)(conversation=conversation, agent=agent, content="Anna here!")
    reply = await _until(communicator, lambda f: f["type"] == "message.created")
    assert reply[-1]["answer"]["author"] == "Anna"
    assert reply[-1]["answer"]["content"] == "Anna here!"

    await communicator.send_json_to({"type": "email.leave", "email": "not an email"})
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["code"] == "invalid"
    await communicator.send_json_to({"type": "email.leave", "email": "jo@example.com"})
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "email.saved"
    visitor = await sync_to_async(WidgetVisitor.objects.get)(site=site)
    assert visitor.email == "jo@example.com"
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_frames_before_hello_and_malformed_frames_get_errors():
    site = await sync_to_async(_site)()
    communicator, _ = await _connect(site.public_key)
    await communicator.send_json_to({"type": "message.send", "content": "hi"})
    assert (await communicator.receive_json_from())["code"] == "hello_first"
    await communicator.send_to(text_data="{nope")
    assert (await communicator.receive_json_from())["code"] == "bad_json"
    await communicator.send_json_to({"type": "hello", "token": "forged.token"})
    assert (await communicator.receive_json_from())["type"] == "welcome"
    await communicator.send_json_to({"type": "identify", "user": "u1", "signature": "bad"})
    assert (await communicator.receive_json_from())["code"] == "identity"
    await communicator.disconnect()


@pytest.mark.django_db
def test_widget_conversations_show_in_review_usage_and_exports(client, tiny_model_dir):
    from django.contrib.auth.models import Permission

    from chat.services.exports import dataset_export

    site = _site()
    visitor = visitor_start(site=site, token=None)
    conversation = Conversation.objects.create(site=site, visitor=visitor, source="widget")
    question = Message.objects.create(conversation=conversation, role="user", content="Hours?")
    conversation.current_leaf = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Nine to six.",
        prompt_tokens=5,
        completion_tokens=4,
    )
    conversation.save()
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="review_conversation"))
    client.force_login(staff)
    listing = client.get("/dashboard/conversations/", {"source": f"site:{site.pk}"})
    assert listing.status_code == 200 and f"visitor {visitor.pk}" in listing.content.decode()
    assert client.get(f"/dashboard/conversations/{conversation.pk}/").status_code == 200
    assert client.get("/dashboard/usage/").status_code == 200
    assert client.get("/dashboard/").status_code == 200
    exported = dataset_export(name="widget", site_id=site.pk, eval_fraction=0.0)
    assert [e.messages for e in exported.examples.all()] == [
        [{"role": "user", "content": "Hours?"}, {"role": "assistant", "content": "Nine to six."}]
    ]


@pytest.mark.django_db
def test_a_site_pinned_to_a_version_answers_with_it(django_capture_on_commit_callbacks):
    from tests.factories import ModelVersionFactory

    production, pinned = ModelVersionFactory(), ModelVersionFactory()
    model_version_promote(version=production)
    site = _site(model_version=pinned)
    with django_capture_on_commit_callbacks(execute=False):
        sent = widget_message_send(
            visitor=visitor_start(site=site, token=None), content="Hi", client_id=uuid.uuid4()
        )
    assert sent.answer.model_version == pinned
    assert "Talk to a person" in sent.answer.conversation.system_prompt


# --- identity and tokens ---------------------------------------------------------


async def _hello(communicator, token=None) -> dict:
    await communicator.send_json_to({"type": "hello", "token": token})
    welcome = await communicator.receive_json_from(timeout=TIMEOUT)
    assert welcome["type"] == "welcome", welcome
    return welcome


@pytest.mark.django_db
def test_identifying_an_identified_visitor_as_someone_else_starts_another_visitor():
    site = _site()
    device = visitor_start(site=site, token=None)
    Conversation.objects.create(site=site, visitor=device, source="widget")
    x = visitor_identify(
        site=site,
        visitor=device,
        user_id="customer-x",
        signature=identity_signature(site=site, user_id="customer-x"),
    )
    y = visitor_identify(
        site=site,
        visitor=x,
        user_id="customer-y",
        signature=identity_signature(site=site, user_id="customer-y"),
    )
    x.refresh_from_db()
    assert x.external_id == "customer-x" and Conversation.objects.filter(visitor=x).count() == 1
    assert y != x and y.external_id == "customer-y"
    assert not Conversation.objects.filter(visitor=y).exists()
    # Back to X on the same device: X's own visitor, Y keeps nothing of X's.
    again = visitor_identify(
        site=site,
        visitor=y,
        user_id="customer-x",
        signature=identity_signature(site=site, user_id="customer-x"),
    )
    assert again == x and Conversation.objects.filter(visitor=x).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("user_id", "signature"),
    [
        ("customer-7", "é" * 64),  # non-ASCII signature
        ("customer-7", "\ud800"),  # a lone surrogate
        ("customer-7", "a" * 100_000),  # a huge signature
        ("customer-7", 12345),
        ("customer-7", None),
        ("\ud800", "0" * 64),  # a user id that cannot be encoded
        ("cust\x00omer", "0" * 64),  # a NUL the database may refuse
        ("x" * 100_000, "0" * 64),
        (True, "0" * 64),  # JSON true is not the user id 1
        (["customer-7"], "0" * 64),
        ({"id": 1}, "0" * 64),
        (1.5, "0" * 64),
    ],
)
def test_identify_refuses_malformed_inputs_clearly(user_id, signature):
    site = _site()
    visitor = visitor_start(site=site, token=None)
    with pytest.raises(WidgetError) as caught:
        visitor_identify(site=site, visitor=visitor, user_id=user_id, signature=signature)
    assert caught.value.code == "identity"
    visitor.refresh_from_db()
    assert visitor.external_id == ""


@pytest.mark.django_db
def test_identify_takes_an_integer_user_id_and_an_upper_case_signature():
    site = _site()
    visitor = visitor_start(site=site, token=None)
    signature = identity_signature(site=site, user_id="42").upper()
    known = visitor_identify(site=site, visitor=visitor, user_id=42, signature=signature)
    assert known.external_id == "42"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_non_ascii_identity_signature_is_refused_and_the_socket_goes_on():
    site = await sync_to_async(_site)()
    communicator, _ = await _connect(site.public_key)
    await _hello(communicator)
    await communicator.send_json_to({"type": "identify", "user": "u1", "signature": "ü" * 64})
    refused = await communicator.receive_json_from(timeout=TIMEOUT)
    assert refused["code"] == "identity", refused
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "pong"
    await communicator.disconnect()


@pytest.mark.django_db
def test_a_visitor_token_expires(settings):
    from datetime import timedelta
    from unittest import mock

    from django.utils import timezone as django_timezone

    settings.WIDGET_VISITOR_TOKEN_DAYS = 30
    site = _site()
    visitor = visitor_start(site=site, token=None)
    token = visitor_token(visitor=visitor)
    assert visitor_start(site=site, token=token) == visitor
    later = django_timezone.now() + timedelta(days=31)
    with mock.patch("time.time", return_value=later.timestamp()):
        assert visitor_start(site=site, token=token) != visitor


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_reset_revokes_the_old_token_and_its_conversation_stays_out_of_reach():
    site = await sync_to_async(_site)()
    communicator, _ = await _connect(site.public_key)
    first = await _hello(communicator)
    visitor = await sync_to_async(WidgetVisitor.objects.get)(pk=first["visitor"]["id"])
    await sync_to_async(Conversation.objects.create)(
        site=site, visitor=visitor, source="widget", title="private"
    )
    await communicator.send_json_to({"type": "reset"})
    fresh = await communicator.receive_json_from(timeout=TIMEOUT)
    assert fresh["type"] == "welcome" and fresh["visitor"]["id"] != first["visitor"]["id"]
    await communicator.disconnect()

    # The token from before the reset (a copy kept by someone else) opens
    # nothing of the old visitor.
    communicator, _ = await _connect(site.public_key)
    stale = await _hello(communicator, first["token"])
    assert stale["visitor"]["id"] not in (first["visitor"]["id"], fresh["visitor"]["id"])
    assert stale["conversation"] is None
    # The new token still works.
    await communicator.send_json_to({"type": "hello", "token": fresh["token"]})
    again = await communicator.receive_json_from(timeout=TIMEOUT)
    assert again["visitor"]["id"] == fresh["visitor"]["id"]
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_token_the_host_forgot_offline_is_revoked_by_the_next_hello():
    site = await sync_to_async(_site)()
    communicator, _ = await _connect(site.public_key)
    first = await _hello(communicator)
    await communicator.disconnect()
    # The host page's reset() ran with no frame connected: its next frame
    # says hello without a token and names the forgotten one.
    communicator, _ = await _connect(site.public_key)
    await communicator.send_json_to({"type": "hello", "token": None, "revoke": first["token"]})
    fresh = await communicator.receive_json_from(timeout=TIMEOUT)
    assert fresh["visitor"]["id"] != first["visitor"]["id"]
    stale = await _hello(communicator, first["token"])
    assert stale["visitor"]["id"] not in (first["visitor"]["id"], fresh["visitor"]["id"])
    await communicator.disconnect()
