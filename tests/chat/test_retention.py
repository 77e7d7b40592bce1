"""Retention: the daily run deletes or anonymises exactly the conversations
whose days have passed, per source, with audit rows, filter hits, temporary
chats and expired exports on their own clocks; Celery beat schedules it and
``make run`` starts beat."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from chat.models import ApiRequest, Conversation, DataExport, Feedback, Message, PrivacyEvent
from chat.services.data_export import export_build, export_request
from chat.services.exports import dataset_export
from chat.services.retention import retention_next_run, retention_policies, retention_run
from chatsite.supervisor import procfile_parse
from models_admin.models import FilterHit, ReviewEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture(autouse=True)
def _exports_here(settings, tmp_path):
    settings.DATA_EXPORT_DIR = tmp_path / "exports"


def _conversation(user, source: str, days_idle: float, text: str, **fields) -> Conversation:
    conversation = Conversation.objects.create(user=user, source=source, title=text, **fields)
    question = Message.objects.create(conversation=conversation, role="user", content=text)
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content=f"Reply to {text}",
        knowledge={"query": text, "found": False},
    )
    Feedback.objects.create(message=answer, user=user, rating=1, reason=f"liked {text}")
    Conversation.objects.filter(pk=conversation.pk).update(
        current_leaf=answer, updated_at=NOW - timedelta(days=days_idle)
    )
    return conversation


def _policy(settings, **days_and_actions) -> None:
    settings.RETENTION = {
        source: days_and_actions.get(source, (0, "delete")) for source in ("chat", "api", "widget")
    }


def test_each_source_loses_exactly_what_its_days_have_passed(settings):
    _policy(settings, chat=(30, "delete"), api=(7, "delete"))
    user = UserFactory()
    old_chat = _conversation(user, "chat", 31, "old chat")
    young_chat = _conversation(user, "chat", 29, "young chat")
    old_api = _conversation(user, "api", 8, "old api")
    young_api = _conversation(user, "api", 6, "young api")
    ancient_widgetless = _conversation(user, "widget", 4000, "kept forever")

    counts = retention_run(now=NOW)
    left = set(Conversation.objects.values_list("pk", flat=True))
    assert left == {young_chat.pk, young_api.pk, ancient_widgetless.pk}
    assert old_chat.pk not in left and old_api.pk not in left
    assert counts["chat_deleted"] == 1 and counts["api_deleted"] == 1
    assert counts["widget_deleted"] == 0
    assert not Message.objects.filter(content__contains="old").exists()
    event = PrivacyEvent.objects.get(action=PrivacyEvent.Action.RETENTION)
    assert event.actor_name == "system" and event.counts["chat_deleted"] == 1
    assert "Chat: deleted 30 days after the last message" in event.detail


def test_anonymising_cuts_the_person_off_and_masks_their_details(settings):
    _policy(settings, chat=(10, "anonymise"))
    user = UserFactory()
    text = "mail me at jo@example.com or call +44 20 7946 0958"
    old = _conversation(user, "chat", 11, text, system_prompt="I am jo@example.com")
    ApiRequest.objects.create(user=user, conversation=old, end_user="jo")
    FilterHit.objects.create(
        rule_name="r", scope="input", action="flag", conversation=old, excerpt=text
    )
    dataset = dataset_export(name="before", apply_rules=False)

    assert retention_run(now=NOW)["chat_anonymised"] == 1
    old.refresh_from_db()
    assert old.user is None and old.anonymised_at is not None and old.title == ""
    assert old.system_prompt == "I am [email]"
    question = old.messages.get(role="user")
    assert question.content == "mail me at [email] or call [phone]"
    answer = old.messages.get(role="assistant")
    assert answer.knowledge["query"] == "mail me at [email] or call [phone]"
    rating = Feedback.objects.get(message=answer)
    assert rating.user is None and "[email]" in rating.reason
    assert ApiRequest.objects.get().end_user == ""
    assert FilterHit.objects.get().excerpt == ""
    # The dataset made from it keeps only a lineage mark, and no new
    # dataset takes an anonymised conversation.
    assert dataset.examples.get().messages == []
    with pytest.raises(Exception, match="at least one example"):
        dataset_export(name="after", apply_rules=False)
    # A second run finds nothing more to do.
    assert retention_run(now=NOW)["chat_anonymised"] == 0


def test_temporary_chats_audit_rows_filter_hits_and_exports_keep_their_own_time(settings):
    _policy(settings)
    settings.TEMPORARY_CHAT_HOURS = 24
    settings.RETENTION_AUDIT_DAYS = 365
    settings.RETENTION_FILTER_HITS_DAYS = 90
    user = UserFactory()
    stale_temporary = _conversation(user, "chat", 1.1, "stale temporary", temporary=True)
    fresh_temporary = _conversation(user, "chat", 0.5, "fresh temporary", temporary=True)
    kept = _conversation(user, "chat", 400, "kept")
    old_hit = FilterHit.objects.create(rule_name="r", scope="input", action="flag", excerpt="x")
    new_hit = FilterHit.objects.create(rule_name="r", scope="input", action="flag", excerpt="y")
    FilterHit.objects.filter(pk=old_hit.pk).update(created_at=NOW - timedelta(days=91))
    old_review = ReviewEvent.objects.create(conversation=kept, action="view")
    ReviewEvent.objects.filter(pk=old_review.pk).update(created_at=NOW - timedelta(days=366))
    ReviewEvent.objects.create(conversation=kept, action="view")
    export = export_build(export_request(user=user, queue=False))
    DataExport.objects.filter(pk=export.pk).update(expires_at=NOW - timedelta(minutes=1))
    file = Path(django_settings.DATA_EXPORT_DIR) / export.file_name

    counts = retention_run(now=NOW)
    assert set(Conversation.objects.values_list("pk", flat=True)) == {
        fresh_temporary.pk,
        kept.pk,
    }
    assert stale_temporary.pk and counts["temporary_deleted"] == 1
    assert list(FilterHit.objects.values_list("pk", flat=True)) == [new_hit.pk]
    assert ReviewEvent.objects.count() == 1 and counts["review_events_deleted"] == 1
    assert counts["exports_expired"] == 1 and not file.exists()


def test_the_policy_reads_from_the_settings_and_the_next_run_is_at_the_hour(settings):
    _policy(settings, widget=(1, "anonymise"))
    settings.RETENTION_HOUR = 3
    described = {p.source: p.describe() for p in retention_policies()}
    assert described["chat"] == "kept until their people delete them"
    assert described["widget"] == "anonymised 1 day after the last message"
    before = timezone.localtime(NOW).replace(hour=2, minute=59)
    assert retention_next_run(before).hour == 3
    assert retention_next_run(before).date() == before.date()
    after = before.replace(hour=3, minute=1)
    assert retention_next_run(after).date() == (after + timedelta(days=1)).date()


def test_celery_beat_runs_retention_daily_and_make_run_starts_beat():
    entry = django_settings.CELERY_BEAT_SCHEDULE["retention"]
    assert entry["task"] == "chat.tasks.retention_task"
    assert entry["schedule"].hour == {django_settings.RETENTION_HOUR}
    procfile = Path(django_settings.BASE_DIR) / "Procfile"
    commands = {entry.name: entry.command for entry in procfile_parse(procfile)}
    assert "celery -A chatsite beat" in commands["beat"]
    # The privacy queue has a worker.
    assert any("privacy" in command and "worker" in command for command in commands.values())


def test_a_visitor_conversation_is_anonymised_without_its_visitor(settings):
    from chat.models import WidgetSite, WidgetVisitor

    _policy(settings, widget=(1, "anonymise"))
    site = WidgetSite.objects.create(
        name="Shop", public_key=uuid.uuid4().hex, allowed_origins="https://a.example"
    )
    visitor = WidgetVisitor.objects.create(site=site, token=uuid.uuid4(), email="v@example.com")
    conversation = Conversation.objects.create(visitor=visitor, site=site, source="widget")
    Message.objects.create(conversation=conversation, role="user", content="v@example.com here")
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=NOW - timedelta(days=2))
    retention_run(now=NOW)
    conversation.refresh_from_db()
    assert conversation.visitor is None and conversation.site == site
    assert conversation.messages.get().content == "[email] here"


def test_staff_review_pages_show_an_anonymised_conversation_as_such(settings, client):
    from django.contrib.auth.models import Permission
    from django.urls import reverse

    _policy(settings, chat=(1, "anonymise"))
    conversation = _conversation(UserFactory(username="gone"), "chat", 2, "hello there")
    retention_run(now=NOW)
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="review_conversation"))
    client.force_login(staff)
    listing = client.get(reverse("dashboard:conversations")).content.decode()
    detail = client.get(
        reverse("dashboard:conversation-review", args=[conversation.pk])
    ).content.decode()
    for page in (listing, detail):
        assert '<span class="muted">anonymised</span>' in page and "gone" not in page
