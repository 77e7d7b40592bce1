"""People's data rights: the training choice honoured by every export and
pair extraction, the archive of everything a user owns, and deleting an
account so that none of its text remains anywhere in the database."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from chat.models import (
    ApiRequest,
    Conversation,
    DataExport,
    Message,
    PrivacyEvent,
    WidgetSite,
    WidgetVisitor,
)
from chat.services.answers import message_regenerate
from chat.services.api_keys import api_key_create
from chat.services.conversations import conversation_create
from chat.services.data_export import export_build, export_request
from chat.services.exports import dataset_export
from chat.services.messages import feedback_set, message_generation_finish, message_send
from chat.services.preferences import preference_pairs
from chat.services.privacy import training_allowed, training_choice_set, user_delete
from chat.tasks import data_export_task
from models_admin.models import DatasetExample, FilterHit
from models_admin.services import model_version_register
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

MARKER = "zebra-quartz-7781"


@pytest.fixture(autouse=True)
def production(tiny_model_dir, settings, tmp_path):
    settings.MODEL_DIR = tiny_model_dir.parent
    settings.DATA_EXPORT_DIR = tmp_path / "exports"
    return model_version_register(name="tiny", folder=tiny_model_dir)


def _ask(user, conversation, question: str, answer: str) -> Message:
    sent = message_send(
        user=user, conversation=conversation, content=question, client_id=uuid.uuid4()
    )
    return message_generation_finish(
        generation_id=sent.answer.generation_id, final={"finish_reason": "stop"}, text=answer
    )


def _chatted(user, text: str = "Hello") -> Conversation:
    conversation = conversation_create(user=user)
    _ask(user, conversation, f"{text}: what time is it?", f"{text}: it is noon.")
    return conversation


def _site(**fields) -> WidgetSite:
    return WidgetSite.objects.create(
        name="Shop",
        public_key=uuid.uuid4().hex,
        allowed_origins="https://shop.example",
        identity_secret="s" * 40,
        **fields,
    )


def _visitor_chat(site: WidgetSite, text: str, email: str = "") -> Conversation:
    visitor = WidgetVisitor.objects.create(site=site, token=uuid.uuid4(), email=email)
    conversation = Conversation.objects.create(
        visitor=visitor, site=site, source=Conversation.Source.WIDGET
    )
    question = Message.objects.create(conversation=conversation, role="user", content=text)
    answer = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content=f"{text}!"
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=answer)
    return conversation


def _texts(dataset) -> str:
    return json.dumps([e.messages for e in dataset.examples.all()])


# --- the training choice ------------------------------------------------------


def test_the_default_applies_until_a_user_chooses(settings):
    user = UserFactory()
    settings.TRAINING_OPT_IN_DEFAULT = True
    assert training_allowed(user=user)
    settings.TRAINING_OPT_IN_DEFAULT = False
    assert not training_allowed(user=user)
    training_choice_set(user=user, allowed=True)
    assert training_allowed(user=user)
    assert PrivacyEvent.objects.filter(
        action=PrivacyEvent.Action.TRAINING_CHOICE, subject_id=user.pk
    ).exists()


@pytest.mark.parametrize("default", [True, False])
def test_dataset_exports_keep_only_conversations_their_people_allow(settings, default):
    settings.TRAINING_OPT_IN_DEFAULT = default
    chose_no, chose_yes, silent = UserFactory(), UserFactory(), UserFactory()
    training_choice_set(user=chose_no, allowed=False)
    training_choice_set(user=chose_yes, allowed=True)
    _chatted(chose_no, "no-thanks")
    _chatted(chose_yes, "yes-please")
    _chatted(silent, "never-asked")
    _visitor_chat(_site(train_on_conversations=False), "site-says-no")
    _visitor_chat(_site(train_on_conversations=True), "site-says-yes")
    _visitor_chat(_site(), "site-follows-default")

    texts = _texts(dataset_export(name=f"d-{default}", apply_rules=False))
    assert "yes-please" in texts and "site-says-yes" in texts
    assert "no-thanks" not in texts and "site-says-no" not in texts
    assert ("never-asked" in texts) is default
    assert ("site-follows-default" in texts) is default


def test_preference_pairs_leave_out_people_who_said_no():
    keen, private = UserFactory(), UserFactory()
    training_choice_set(user=private, allowed=False)
    for user in (keen, private):
        conversation = conversation_create(user=user)
        wrong = _ask(user, conversation, "Can I return tea?", "Never.")
        sent = message_regenerate(
            user=user, conversation=conversation, message=wrong, client_id=uuid.uuid4()
        )
        right = message_generation_finish(
            generation_id=sent.answer.generation_id, final={"finish_reason": "stop"}, text="Yes."
        )
        feedback_set(user=user, message=wrong, rating=-1)
        feedback_set(user=user, message=right, rating=1)
    owners = {Message.objects.get(pk=p.chosen_id).conversation.user_id for p in preference_pairs()}
    assert owners == {keen.pk}


def test_exported_examples_remember_the_conversation_they_came_from():
    user = UserFactory()
    conversation = _chatted(user)
    example = dataset_export(name="lineage", apply_rules=False).examples.get()
    assert example.origin["conversation_id"] == conversation.pk
    assert example.origin["user_id"] == user.pk


# --- the export ----------------------------------------------------------------


def _owned_everything(user) -> dict:
    """A user with one of every kind of row the archive must hold."""
    conversation = conversation_create(user=user)
    first = _ask(user, conversation, "Question one", "Answer one")
    sent = message_regenerate(
        user=user, conversation=conversation, message=first, client_id=uuid.uuid4()
    )
    second = message_generation_finish(
        generation_id=sent.answer.generation_id, final={"finish_reason": "stop"}, text="Answer two"
    )
    feedback_set(user=user, message=second, rating=1)
    key, _secret = api_key_create(user=user, name="laptop")
    ApiRequest.objects.create(key=key, user=user, model_name="tiny", prompt_tokens=5)
    site = _site()
    visitor_conversation = _visitor_chat(site, "Widget question", email=user.email.upper())
    return {
        "conversation": conversation,
        "answers": {first.pk, second.pk},
        "key": key,
        "visitor_conversation": visitor_conversation,
    }


def test_the_archive_holds_every_kind_of_row_the_user_owns():
    user = UserFactory(username="owner")
    rows = _owned_everything(user)
    other = UserFactory()
    _chatted(other, "not-theirs")
    export = export_build(export_request(user=user, queue=False))
    assert export.state == DataExport.State.READY
    assert export.expires_at > timezone.now()
    with zipfile.ZipFile(Path(export_dir(export))) as archive:
        names = set(archive.namelist())
        read = {name: archive.read(name).decode() for name in names}
    assert {
        "README.txt",
        "account.json",
        "feedback.json",
        "api_keys.json",
        "api_usage.json",
        "widget_identities.json",
        "privacy_log.json",
        f"conversations/{rows['conversation'].pk}.json",
        f"conversations/{rows['visitor_conversation'].pk}.json",
    } == names
    account = json.loads(read["account.json"])
    assert account["username"] == "owner" and account["train_on_chats"]["in_effect"] is True
    chat = json.loads(read[f"conversations/{rows['conversation'].pk}.json"])
    # Every branch: both answers to the question, each naming its parent.
    answers = {m["id"] for m in chat["messages"] if m["role"] == "assistant"}
    assert answers == rows["answers"]
    question = next(m for m in chat["messages"] if m["role"] == "user")
    assert {m["parent"] for m in chat["messages"] if m["role"] == "assistant"} == {question["id"]}
    assert json.loads(read["feedback.json"])[0]["rating"] == "up"
    keys = json.loads(read["api_keys.json"])
    assert keys[0]["prefix"] == rows["key"].prefix
    assert "key_hash" not in read["api_keys.json"] and rows["key"].key_hash not in str(read)
    assert json.loads(read["api_usage.json"])[0]["prompt_tokens"] == 5
    assert json.loads(read["widget_identities.json"])[0]["site"] == "Shop"
    assert "not-theirs" not in str(read)
    assert export.counts["conversations"] == 2 and export.counts["messages"] == 5
    log = json.loads(read["privacy_log.json"])
    assert log[0]["action"] == "Asked for a data export" and log[0]["by"] == "you"


def export_dir(export: DataExport) -> Path:
    from django.conf import settings

    return Path(settings.DATA_EXPORT_DIR) / export.file_name


def test_the_account_page_starts_an_export_and_only_its_owner_downloads_it(
    client, django_capture_on_commit_callbacks
):
    user = UserFactory()
    _chatted(user)
    client.force_login(user)
    page = client.get(reverse("account"))
    assert page.status_code == 200 and b"Export my data" in page.content
    with django_capture_on_commit_callbacks() as queued:
        response = client.post(reverse("data-export-start"))
    assert response.status_code == 302 and len(queued) == 1
    export = DataExport.objects.get(user=user)
    assert export.state == DataExport.State.QUEUED
    waiting = client.get(reverse("data-exports-status")).json()["exports"][0]
    assert waiting["state"] == "queued" and waiting["url"] is None
    data_export_task.apply(args=[export.pk])  # what the privacy worker runs
    export.refresh_from_db()
    assert export.state == DataExport.State.READY
    status = client.get(reverse("data-exports-status")).json()["exports"][0]
    assert status["state"] == "ready" and status["progress"]["done"] == 1
    download = client.get(status["url"])
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    body = b"".join(download.streaming_content)
    assert zipfile.ZipFile(io.BytesIO(body)).read("account.json")
    assert PrivacyEvent.objects.filter(action=PrivacyEvent.Action.EXPORT_DOWNLOADED).count() == 1

    stranger = UserFactory()
    client.force_login(stranger)
    assert client.get(status["url"]).status_code == 404
    client.logout()
    assert client.get(status["url"]).status_code == 302  # to the login page


def test_an_expired_link_is_gone_and_its_file_deleted(client):
    user = UserFactory()
    export = export_build(export_request(user=user, queue=False))
    path = export_dir(export)
    assert path.is_file()
    DataExport.objects.filter(pk=export.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    client.force_login(user)
    response = client.get(reverse("data-export-download", args=[export.token]))
    assert response.status_code == 410 and b"expired" in response.content
    assert not path.exists()
    assert DataExport.objects.get(pk=export.pk).state == DataExport.State.EXPIRED


def test_one_export_at_a_time(client):
    user = UserFactory()
    client.force_login(user)
    export_request(user=user, queue=False)
    response = client.post(reverse("data-export-start"), follow=True)
    assert b"already being built" in response.content
    assert DataExport.objects.filter(user=user).count() == 1


def test_user_export_command_writes_the_archive_and_is_logged(tmp_path):
    user = UserFactory(username="asker")
    staff = UserFactory(username="officer", is_staff=True)
    _chatted(user)
    out = io.StringIO()
    target = tmp_path / "asker.zip"
    call_command("user_export", "asker", "--output", str(target), "--by", "officer", stdout=out)
    assert "1 conversations" in out.getvalue()
    assert "account.json" in zipfile.ZipFile(target).namelist()
    event = PrivacyEvent.objects.get(action=PrivacyEvent.Action.EXPORT_REQUESTED)
    assert (event.actor, event.subject_name) == (staff, "asker")
    with pytest.raises(CommandError, match="No user named"):
        call_command("user_export", "nobody")


# --- deletion ------------------------------------------------------------------


def _text_columns() -> list[tuple[str, str]]:
    """Every text-like column of every table the project's models own."""
    columns = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.get_internal_type() in ("CharField", "TextField", "JSONField", "EmailField"):
                columns.append((model._meta.db_table, field.column))
    return columns


def _tables_holding(marker: str) -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for table, column in _text_columns():
            quoted_table = connection.ops.quote_name(table)
            quoted_column = connection.ops.quote_name(column)
            cursor.execute(
                f"SELECT COUNT(*) FROM {quoted_table} "  # noqa: S608 - names from the models
                f"WHERE CAST({quoted_column} AS TEXT) LIKE %s",
                [f"%{marker}%"],
            )
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


def _marked_everywhere(user) -> Conversation:
    """Put the marker into every place a user's words can land."""
    conversation = conversation_create(user=user)
    conversation.system_prompt = f"Be kind {MARKER}"
    conversation.title = f"About {MARKER}"
    conversation.save()
    answer = _ask(user, conversation, f"My code is {MARKER}", f"Noted {MARKER}")
    Message.objects.filter(pk=answer.pk).update(knowledge={"question": f"code {MARKER}"})
    feedback_set(user=user, message=answer, rating=-1, reason=f"wrong {MARKER}")
    key, _secret = api_key_create(user=user, name=f"key {MARKER}")
    ApiRequest.objects.create(
        key=key, user=user, conversation=conversation, end_user=f"end {MARKER}"
    )
    FilterHit.objects.create(
        rule_name="words",
        scope="input",
        action="flag",
        conversation=conversation,
        user=user,
        excerpt=f"…{MARKER}…",
    )
    _visitor_chat(_site(), f"widget {MARKER}", email=user.email)
    dataset_export(name="before", apply_rules=False)
    export_build(export_request(user=user, queue=False))
    return conversation


def test_deleting_an_account_leaves_none_of_its_text_in_the_database(client):
    user = UserFactory(username="leaver")
    bystander = UserFactory()
    _chatted(bystander, "bystander")
    _marked_everywhere(user)
    assert len(_tables_holding(MARKER)) >= 8
    export_file = export_dir(DataExport.objects.get(user=user))
    assert export_file.is_file()

    client.force_login(user)
    refused = client.post(
        reverse("account-delete"), {"password": "wrong", "confirm": "on"}, follow=False
    )
    assert refused.status_code == 400 and b"not your password" in refused.content
    unticked = client.post(reverse("account-delete"), {"password": "correct horse battery staple"})
    assert unticked.status_code == 400
    assert _tables_holding(MARKER)

    done = client.post(
        reverse("account-delete"), {"password": "correct horse battery staple", "confirm": "on"}
    )
    assert done.status_code == 200 and b"Your account is deleted" in done.content
    assert _tables_holding(MARKER) == []
    assert not export_file.exists()
    # Dataset rows from them stay as lineage marks without text.
    before = DatasetExample.objects.filter(dataset__name="before")
    marks = [e for e in before if e.origin.get("redacted")]
    assert len(marks) == 2 and all(e.messages == [] for e in marks)
    assert "bystander" in _texts(before.first().dataset)
    event = PrivacyEvent.objects.get(action=PrivacyEvent.Action.ACCOUNT_DELETED)
    assert (event.actor_name, event.subject_name) == ("leaver", "leaver")
    assert event.counts["conversations"] == 2
    # The session is gone with the account.
    assert client.get(reverse("account")).status_code == 302
    # A dataset made afterwards never contains them.
    assert MARKER not in _texts(dataset_export(name="after", apply_rules=False))


def test_staff_delete_on_request_and_the_log_says_who(settings):
    user = UserFactory(username="requester")
    UserFactory(username="officer", is_staff=True)
    _marked_everywhere(user)
    with pytest.raises(CommandError, match="staff"):
        call_command("user_delete", "requester", "--by", "requester", "--yes")
    out = io.StringIO()
    call_command(
        "user_delete", "requester", "--by", "officer", "--reason", "ticket 42", "--yes", stdout=out
    )
    assert "Deleted requester" in out.getvalue()
    assert _tables_holding(MARKER) == []
    event = PrivacyEvent.objects.get(action=PrivacyEvent.Action.ACCOUNT_DELETED)
    assert event.actor.username == "officer"
    assert event.detail == "on request: ticket 42"


def test_deletion_works_when_nothing_else_was_ever_made():
    user = UserFactory()
    counts = user_delete(user=user, actor=user)
    assert counts["conversations"] == 0


# --- temporary chats -------------------------------------------------------------


def test_a_temporary_chat_is_not_listed_never_trains_and_can_be_deleted(client):
    user = UserFactory()
    client.force_login(user)
    refused = client.post(
        reverse("api-conversations"), {"temporary": "yes"}, content_type="application/json"
    )
    assert refused.status_code == 400 and "temporary" in refused.json()["fields"]
    created = client.post(
        reverse("api-conversations"), {"temporary": True}, content_type="application/json"
    ).json()
    assert created["temporary"] is True
    conversation = Conversation.objects.get(pk=created["id"])
    _ask(user, conversation, "A passing thought", "Noted for now.")
    _chatted(user, "kept")
    listed = client.get(reverse("api-conversations")).json()["results"]
    assert [c["id"] for c in listed] != [] and created["id"] not in [c["id"] for c in listed]
    assert "passing thought" not in _texts(dataset_export(name="d", apply_rules=False))
    assert client.delete(f"/api/conversations/{created['id']}/").status_code == 204
    assert not Conversation.objects.filter(pk=created["id"]).exists()


def test_a_widget_site_form_sets_the_training_switch(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get(reverse("dashboard:widget-site-new"))
    assert b"Visitors&#x27; conversations may train models" in page.content
    assert b'<option value="unknown" selected>As the site default</option>' in page.content
    from tests.models_admin.test_dashboard_widget import _form

    created = client.post(
        reverse("dashboard:widget-site-new"), _form(train_on_conversations="false")
    )
    assert created.status_code == 302
    site = WidgetSite.objects.get(name="Docs")
    assert site.train_on_conversations is False
    edit = client.get(reverse("dashboard:widget-site", args=[site.pk]))
    assert b'<option value="false" selected>No</option>' in edit.content


def test_the_dashboard_privacy_page_shows_the_policy_and_the_log_to_superusers(client, settings):
    settings.RETENTION = {"chat": (30, "delete"), "api": (0, "delete"), "widget": (7, "anonymise")}
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    page = client.get(reverse("dashboard:privacy")).content.decode()
    assert "Deleted 30 days after the last message" in page
    assert "Anonymised 7 days after the last message" in page
    assert "Next run" in page and 'data-testid="privacy-log"' not in page
    refused = client.post(
        reverse("dashboard:privacy-user-delete"),
        {"username": "x", "confirm": "x", "reason": "r"},
        follow=True,
    )
    assert b"Only superusers" in refused.content

    officer = UserFactory(username="officer", is_staff=True, is_superuser=True)
    target = UserFactory(username="target")
    _chatted(target, MARKER)
    client.force_login(officer)
    unconfirmed = client.post(
        reverse("dashboard:privacy-user-delete"),
        {"username": "target", "confirm": "targ", "reason": "ticket 7"},
        follow=True,
    )
    assert b"nothing was deleted" in unconfirmed.content
    done = client.post(
        reverse("dashboard:privacy-user-delete"),
        {"username": "target", "confirm": "target", "reason": "ticket 7"},
        follow=True,
    ).content.decode()
    assert "Deleted \u201ctarget\u201d with 1 conversation(s)" in done
    assert 'data-testid="privacy-log"' in done and "on request: ticket 7" in done
    assert _tables_holding(MARKER) == []


def test_an_export_whose_account_went_meanwhile_leaves_no_file(settings):
    user = UserFactory()
    _chatted(user)
    export = export_request(user=user, queue=False)
    export = DataExport.objects.select_related("user").get(pk=export.pk)  # as the task reads it
    user_delete(user=user, actor=user)
    export_build(export)
    assert list(Path(settings.DATA_EXPORT_DIR).glob("*")) == []
