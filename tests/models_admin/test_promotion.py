"""Promotion, rollback and canary with real inference workers: running
answers finish on the old version, new turns use the new one, nothing
fails during the swap; canary shares are sticky per conversation."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.exceptions import ValidationError

from chat.models import Message
from chat.services.conversations import conversation_create
from chat.services.messages import message_send
from inference.worker.versions import VersionSpec
from inference.worker.wiring import (
    extra_versions_list,
    generation_store,
    production_version_get,
    version_get,
)
from models_admin.models import Canary, ModelVersion, Promotion
from models_admin.selectors import canary_bucket, model_version_route
from models_admin.services import model_version_create
from models_admin.services.model_versions import (
    canary_start,
    canary_stop,
    model_version_promote,
    model_version_rollback,
)
from tests.conftest import wait_for, worker_make
from tests.factories import ModelVersionFactory, UserFactory
from tests.tiny_models import tiny_llama_save


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory, default_model_dir):
    return tiny_llama_save(
        tmp_path_factory.mktemp("models") / "tiny-other",
        default_model_dir=default_model_dir,
        seed=11,
    )


def _chat(user, *, max_tokens: int = 48) -> Message:
    conversation = conversation_create(user=user, max_tokens=max_tokens, temperature=0.0)
    sent = message_send(
        user=user, conversation=conversation, content="Tell me a story.", client_id=uuid.uuid4()
    )
    return sent.answer


def _finished(answer: Message) -> Message:
    wait_for(
        lambda: Message.objects.get(pk=answer.pk).status != Message.Status.PENDING, timeout=90
    )
    return Message.objects.get(pk=answer.pk)


@pytest.fixture
def db_workers(redis_conn):
    """Start inference workers wired to the database as in production."""
    started = []

    def start(count: int = 2):
        for _ in range(count):
            worker = worker_make(
                redis_conn,
                production_version_get,
                version_lookup=version_get,
                extra_versions=extra_versions_list,
                on_finished=generation_store,
                poll_interval=5.0,  # the promotion signal, not the poll, must move them
            )
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            started.append((worker, thread))
        wait_for(lambda: all(w.state == "ready" for w, _t in started), timeout=60)
        return [w for w, _t in started]

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_promotion_while_streams_run_finishes_them_on_the_old_version(
    db_workers, tiny_model_dir, other_model_dir, settings
):
    settings.CHAT_MAX_CONCURRENT_GENERATIONS = 10
    old = model_version_create(name="old", folder=tiny_model_dir)
    new = model_version_create(name="new", folder=other_model_dir)
    model_version_promote(version=old)
    workers = db_workers(2)
    operator = UserFactory(is_staff=True)
    users = [UserFactory() for _ in range(4)]
    running = [_chat(user, max_tokens=160) for user in users]
    assert {a.model_version_id for a in running} == {old.pk}
    # Every answer is streaming before the swap.
    wait_for(lambda: sum(len(w.inflight) for w in workers) == len(running), timeout=60)

    promotion = model_version_promote(version=new, by=operator, note="lower eval loss")
    assert promotion.from_version == old and promotion.by == operator
    newer = [_chat(user) for user in users]
    assert {a.model_version_id for a in newer} == {new.pk}

    done_old = [_finished(a) for a in running]
    done_new = [_finished(a) for a in newer]
    assert [a.status for a in done_old + done_new] == [Message.Status.DONE] * 8
    assert {a.model_version_name for a in done_old} == {"old"}
    assert {a.model_version_name for a in done_new} == {"new"}
    assert all(a.content for a in done_old + done_new)
    # Both workers serve the new version and free the old one once idle.
    wait_for(lambda: all(w.version and w.version.id == new.pk for w in workers), timeout=30)
    wait_for(lambda: all(list(w.engines) == [new.pk] for w in workers), timeout=30)


@pytest.mark.django_db(transaction=True)
def test_rollback_returns_production_and_new_turns_to_the_previous_version(
    db_workers, tiny_model_dir, other_model_dir
):
    old = model_version_create(name="old", folder=tiny_model_dir)
    new = model_version_create(name="new", folder=other_model_dir)
    model_version_promote(version=old)
    model_version_promote(version=new)
    db_workers(1)
    operator = UserFactory(is_staff=True)
    rollback = model_version_rollback(by=operator)
    assert (rollback.from_version, rollback.to_version, rollback.by) == (new, old, operator)
    assert "Rollback" in rollback.note
    assert ModelVersion.objects.get(pk=old.pk).state == ModelVersion.State.PRODUCTION
    answer = _finished(_chat(UserFactory()))
    assert (answer.status, answer.model_version_name) == (Message.Status.DONE, "old")
    assert Promotion.objects.count() == 3


@pytest.mark.django_db
def test_rollback_without_an_earlier_version_is_refused():
    model_version_promote(version=ModelVersionFactory())
    with pytest.raises(ValidationError, match="no earlier production version"):
        model_version_rollback()


@pytest.mark.django_db
def test_a_version_without_model_files_cannot_be_promoted(tmp_path):
    ghost = model_version_create(name="ghost", folder=tmp_path / "missing")
    with pytest.raises(ValidationError, match="no model files"):
        model_version_promote(version=ghost)
    assert not Promotion.objects.exists()


def test_canary_buckets_give_the_share_asked_for_within_a_tolerance():
    conversations = range(1, 4001)
    for percent in (5, 20, 50):
        chosen = sum(
            canary_bucket(canary_id=7, conversation_id=c) < percent for c in conversations
        )
        assert abs(chosen / 4000 * 100 - percent) < 2.5, (percent, chosen)
    # Another canary draws other conversations.
    first = {c for c in conversations if canary_bucket(canary_id=1, conversation_id=c) < 20}
    second = {c for c in conversations if canary_bucket(canary_id=2, conversation_id=c) < 20}
    assert len(first & second) < len(first) * 0.35


@pytest.mark.django_db
def test_canary_routing_is_sticky_and_raising_the_share_keeps_its_conversations():
    production = ModelVersionFactory()
    candidate = ModelVersionFactory()
    model_version_promote(version=production)
    canary = canary_start(version=candidate, percent=25, note="try it")
    ids = range(1, 401)
    routed = {c: model_version_route(conversation_id=c) for c in ids}
    assert routed == {c: model_version_route(conversation_id=c) for c in ids}  # sticky
    on_canary = {c for c, v in routed.items() if v == candidate}
    assert abs(len(on_canary) / len(ids) - 0.25) < 0.05
    assert canary_start(version=candidate, percent=60).pk == canary.pk  # adjusts the share
    widened = {c for c in ids if model_version_route(conversation_id=c) == candidate}
    assert on_canary <= widened and abs(len(widened) / len(ids) - 0.6) < 0.06
    stopped = canary_stop()
    assert stopped.outcome == Canary.Outcome.STOPPED and stopped.ended_at is not None
    assert {model_version_route(conversation_id=c) for c in ids} == {production}


@pytest.mark.django_db
def test_promoting_the_canary_version_ends_the_canary_as_promoted():
    model_version_promote(version=ModelVersionFactory())
    candidate = ModelVersionFactory()
    canary = canary_start(version=candidate, percent=10)
    model_version_promote(version=candidate, note="canary looked good")
    canary.refresh_from_db()
    assert canary.outcome == Canary.Outcome.PROMOTED and not canary.active
    with pytest.raises(ValidationError, match="already in production"):
        canary_start(version=candidate, percent=10)


@pytest.mark.django_db(transaction=True)
def test_canary_answers_come_from_the_candidate_for_its_conversations(
    db_workers, tiny_model_dir, other_model_dir, settings
):
    settings.CHAT_MESSAGES_PER_MINUTE = 100
    production = model_version_create(name="prod", folder=tiny_model_dir)
    candidate = model_version_create(name="cand", folder=other_model_dir)
    model_version_promote(version=production)
    canary_start(version=candidate, percent=50)
    workers = db_workers(1)
    wait_for(lambda: candidate.pk in workers[0].engines, timeout=60)  # preloaded
    user = UserFactory()
    answers = [_finished(_chat(user, max_tokens=4)) for _ in range(12)]
    for answer in answers:
        expected = model_version_route(conversation_id=answer.conversation_id)
        assert answer.status == Message.Status.DONE
        assert answer.model_version_id == expected.pk
    assert {a.model_version_name for a in answers} == {"prod", "cand"}


def test_a_slow_model_load_does_not_stall_running_streams(redis_conn, tiny_model_dir):
    """A version loads in the background: answers on the loaded version
    keep streaming and finish while the load is still going."""
    from inference.client import generation_events_sync, generation_submit

    release = threading.Event()
    first = VersionSpec(1, "first", tiny_model_dir)
    second = VersionSpec(2, "second", tiny_model_dir)
    current = {"spec": first}
    worker = worker_make(redis_conn, lambda: current["spec"], version_lookup=lambda _id: None)
    build = worker.versions.engine_build

    def slow_build(spec):
        if spec.id == 2:
            release.wait(60)
        return build(spec)

    worker.versions.engine_build = slow_build
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.state == "ready")
        current["spec"] = second
        wait_for(lambda: 2 in worker.versions.loads)
        generation_id = generation_submit(
            messages=[{"role": "user", "content": "hi"}],
            params={"temperature": 0, "max_new_tokens": 16},
        )
        events = list(generation_events_sync(generation_id, timeout_s=30))
        assert events[-1].type == "done" and events[-1].data["model_version"] == "first"
        assert 2 in worker.versions.loads
        assert worker.heartbeat_build().loading_versions == ["second"]
        release.set()
        wait_for(lambda: worker.version == second, timeout=30)
    finally:
        release.set()
        worker.stop()
        thread.join(timeout=30)


@pytest.mark.django_db
def test_the_deploy_command_promotes_runs_canaries_and_rolls_back():
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    first, second, third = (ModelVersionFactory() for _ in range(3))
    model_version_promote(version=first)
    with pytest.raises(CommandError, match="--note"):
        call_command("deploy", "promote", second.name)
    out = StringIO()
    call_command("deploy", "promote", second.name, note="eval loss 2.1", stdout=out)
    assert f"Production: {second.name}" in out.getvalue()
    call_command("deploy", "canary", third.name, percent=15, stdout=out)
    assert f"Canary: {third.name} at 15%" in out.getvalue()
    call_command("deploy", "canary-stop", stdout=out)
    call_command("deploy", "rollback", stdout=out)
    assert f"Rolled back to {first.name}" in out.getvalue()
    with pytest.raises(CommandError, match="No model version named"):
        call_command("deploy", "canary", "nope")
