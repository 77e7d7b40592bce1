"""Content filter rules end to end: incoming messages blocked, masked or
flagged before the model sees them; streamed answers from a real worker
on a model forced to write a banned word split across tokens; rule
changes reaching a running worker; the audit of every hit."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.exceptions import ValidationError

from chat.models import Conversation, Message
from chat.services.conversations import conversation_create
from chat.services.messages import message_send
from inference.client import generation_events_sync
from inference.connection import requests_stream_key
from inference.worker.wiring import (
    extra_versions_list,
    generation_store,
    output_filter,
    production_version_get,
    version_get,
)
from models_admin.filters import (
    filter_rule_enable,
    filter_rule_save,
    filter_rules_import,
)
from models_admin.models import FilterHit, FilterRule
from models_admin.services import model_version_create, model_version_promote
from tests.conftest import wait_for, worker_make
from tests.factories import UserFactory
from tests.tiny_models import chain_llama_save

FORCED = "Ok: zylophin"  # the banned word comes as " z", "yl", "oph", "in"


def _rule(**data) -> FilterRule:
    base = {"name": "words", "kind": "keywords", "keywords": "zylophin", "action": "mask"}
    return filter_rule_save(data={**base, **data}, by=None)


def _send(user, text: str, conversation=None):
    conversation = conversation or conversation_create(user=user, max_tokens=16)
    return message_send(user=user, conversation=conversation, content=text, client_id=uuid.uuid4())


@pytest.mark.django_db
def test_a_blocked_message_never_reaches_the_model_and_shows_the_notice(
    redis_conn, django_capture_on_commit_callbacks
):
    _rule(action="block", scope="input", notice="Please keep it civil.")
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        sent = _send(user, "you are a z y l o p h i n")
    assert sent.question.status == Message.Status.BLOCKED
    assert (sent.answer.status, sent.answer.content) == (
        Message.Status.BLOCKED,
        "Please keep it civil.",
    )
    assert sent.answer.generation_id is None
    assert redis_conn.xlen(requests_stream_key()) == 0
    hit = FilterHit.objects.get()
    assert (hit.scope, hit.action, hit.message_id, hit.user_id) == (
        "input",
        "block",
        sent.question.pk,
        user.pk,
    )
    assert "z y l o p h i n" in hit.excerpt
    # The conversation goes on; the blocked turn stays out of the prompt.
    with django_capture_on_commit_callbacks(execute=True):
        later = _send(user, "Hello again", conversation=sent.answer.conversation)
    assert later.answer.status == Message.Status.PENDING
    payload = redis_conn.xrange(requests_stream_key())[-1][1]["payload"]
    assert "z y l o p h i n" not in payload and "Hello again" in payload


@pytest.mark.django_db
def test_a_mask_changes_what_is_stored_and_what_the_model_sees(
    redis_conn, django_capture_on_commit_callbacks
):
    filter_rule_save(
        data={"name": "emails", "kind": "preset", "preset": "email", "action": "mask"}, by=None
    )
    with django_capture_on_commit_callbacks(execute=True):
        sent = _send(UserFactory(), "Write to me at jane@example.com please")
    assert sent.question.content == "Write to me at [email] please"
    entry = redis_conn.xrange(requests_stream_key())[-1][1]["payload"]
    assert "jane@example.com" not in entry and "[email]" in entry
    assert FilterHit.objects.get().excerpt == "Write to me at [email] please"


@pytest.mark.django_db
def test_a_flag_delivers_the_message_and_marks_the_conversation_for_review():
    _rule(action="flag", name="watch list")
    sent = _send(UserFactory(), "what is zylophin?")
    assert sent.question.content == "what is zylophin?"
    conversation = Conversation.objects.get(pk=sent.question.conversation_id)
    assert conversation.flagged_at is not None
    assert conversation.flag_reason == "Content rule: watch list"


@pytest.mark.django_db
def test_rules_are_checked_when_saved_and_imports_are_all_or_nothing():
    with pytest.raises(ValidationError) as caught:
        _rule(kind="regex", pattern="(a|aa)+$")
    assert "pattern" in caught.value.message_dict
    with pytest.raises(ValidationError):
        filter_rules_import(
            rules=[{"name": "ok", "kind": "keywords", "keywords": ["x1"]}, {"name": "bad"}],
            by=None,
        )
    assert not FilterRule.objects.exists()


@pytest.fixture(scope="module")
def forced_model(tmp_path_factory, default_model_dir):
    folder, _chain = chain_llama_save(
        tmp_path_factory.mktemp("models") / "forced",
        text=FORCED,
        default_model_dir=default_model_dir,
    )
    return folder


@pytest.fixture
def filtering_worker(redis_conn, forced_model):
    version = model_version_create(name="forced", folder=forced_model)
    model_version_promote(version=version)
    worker = worker_make(
        redis_conn,
        production_version_get,
        version_lookup=version_get,
        extra_versions=extra_versions_list,
        on_finished=generation_store,
        output_filter_factory=output_filter,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: worker.state == "ready", timeout=60)
    yield worker
    worker.stop()
    thread.join(timeout=30)


def _answer(user) -> tuple[Message, list]:
    sent = _send(user, "Say the word.")
    events = list(generation_events_sync(sent.answer.generation_id, timeout_s=60))
    wait_for(
        lambda: Message.objects.get(pk=sent.answer.pk).status != Message.Status.PENDING,
        timeout=30,
    )
    return Message.objects.get(pk=sent.answer.pk), events


@pytest.mark.django_db(transaction=True)
def test_a_term_split_across_tokens_is_masked_in_every_event_and_the_stored_answer(
    filtering_worker,
):
    unfiltered, _events = _answer(UserFactory())
    assert unfiltered.content == FORCED  # the model does write it, in pieces
    _rule(scope="output")
    answer, events = _answer(UserFactory())
    shown = [e.text for e in events if e.type == "text"]
    assert "".join(shown) == "Ok: ********" == answer.content
    for i in range(len(shown)):
        assert "zylophin" not in "".join(shown[: i + 1])
        assert not any(part in shown[i] for part in ("zyl", "yloph", "ophin"))
    hit = FilterHit.objects.get(scope="output")
    assert (hit.message_id, hit.action, hit.excerpt) == (answer.pk, "mask", "Ok: «zylophin»")
    assert all("zylophin" not in str(e.data) for e in events)


@pytest.mark.django_db(transaction=True)
def test_a_blocked_answer_stops_generation_frees_the_slot_and_keeps_the_notice(
    filtering_worker,
):
    _rule(action="block", scope="output", notice="That answer was withheld.")
    answer, events = _answer(UserFactory())
    assert events[-1].type == "done"
    assert events[-1].data["finish_reason"] == "content_filter"
    assert "zylophin" not in "".join(e.text for e in events)
    assert (answer.status, answer.content) == (Message.Status.BLOCKED, "That answer was withheld.")
    assert answer.finish_reason == "content_filter"
    wait_for(lambda: all(e.running == 0 for e in filtering_worker.engines.values()))
    assert FilterHit.objects.get(message=answer).action == "block"


@pytest.mark.django_db(transaction=True)
def test_a_rule_change_reaches_a_running_worker_within_seconds(filtering_worker):
    rule = _rule(scope="output")
    user = UserFactory()
    assert _answer(user)[0].content == "Ok: ********"
    filter_rule_enable(rule=rule, enabled=False, by=None)
    assert _answer(user)[0].content == FORCED  # the very next request
    filter_rule_save(data={"enabled": True, "mask_with": "[hidden]"}, rule=rule, by=None)
    assert _answer(user)[0].content == "Ok: [hidden]"


@pytest.mark.django_db
def test_a_blocked_question_cannot_be_regenerated():
    from chat.services.answers import message_regenerate
    from chat.services.messages import ChatError

    _rule(action="block", scope="input")
    user = UserFactory()
    sent = _send(user, "zylophin")
    with pytest.raises(ChatError) as caught:
        message_regenerate(
            user=user,
            conversation=sent.answer.conversation,
            message=sent.answer,
            client_id=uuid.uuid4(),
        )
    assert caught.value.code == "blocked"


@pytest.mark.django_db
def test_a_rule_for_one_widget_site_applies_there_only():
    from chat.services.widget import widget_message_send
    from chat.services.widget_identity import visitor_start
    from chat.services.widget_sites import widget_site_save

    shop = widget_site_save(data={"name": "Shop", "allowed_origins": "https://shop.example"})
    other = widget_site_save(data={"name": "Other", "allowed_origins": "https://other.example"})
    _rule(action="mask", scope="input", surface="widget", site=shop.pk)
    with pytest.raises(ValidationError, match="widget surface"):
        _rule(name="chat only", surface="chat", site=shop.pk)
    masked = widget_message_send(
        visitor=visitor_start(site=shop, token=None), content="zylophin?", client_id=uuid.uuid4()
    )
    kept = widget_message_send(
        visitor=visitor_start(site=other, token=None), content="zylophin?", client_id=uuid.uuid4()
    )
    assert (masked.question.content, kept.question.content) == ("********?", "zylophin?")
    assert _send(UserFactory(), "zylophin?").question.content == "zylophin?"
