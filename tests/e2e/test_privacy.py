"""Data rights in a real browser on the ``make run`` stack: a user says
no to training, exports everything (the privacy worker builds the archive
while the page shows its progress), downloads it, and deletes the account
with the password; nothing they wrote is left in the database, and a
superuser reads who did what in the dashboard's privacy log."""

from __future__ import annotations

import json
import zipfile

import pytest

from chat.models import Conversation, PrivacyEvent
from chat.services.privacy import training_allowed
from tests.chat.test_privacy import _tables_holding
from tests.e2e.conftest import (
    last_answer_wait,
    page_problems,
    signup,
    staff_login,
    staff_superuser_create,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MARKER = "okapi-lantern-5512"
PASSWORD = "a long passphrase for tests"


def test_a_user_exports_their_data_and_deletes_their_account(stack, browser, artifacts_dir):
    base = stack["base"]
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems = page_problems(page)
    signup(page, base, "leaver")
    page.get_by_test_id("composer-input").fill(f"My locker code is {MARKER}")
    page.keyboard.press("Enter")
    last_answer_wait(page)
    user_conversations = Conversation.objects.filter(user__username="leaver")
    assert user_conversations.count() == 1

    # The account page: say no to training.
    page.get_by_test_id("account-link").click()
    page.wait_for_url(base + "/accounts/")
    box = page.get_by_test_id("privacy-train-on-chats")
    assert box.is_checked()  # the site default
    box.uncheck()
    page.get_by_test_id("privacy-save").click()
    page.get_by_text("left out of training").wait_for()
    user = user_conversations.first().user
    assert not training_allowed(user=user)

    # Export: the worker builds it, the page follows, the link downloads it.
    page.get_by_test_id("export-start").click()
    page.get_by_test_id("export-download").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "account-export-ready.png"), full_page=True)
    with page.expect_download() as waiting:
        page.get_by_test_id("export-download").click()
    download = waiting.value
    assert download.suggested_filename.startswith("leaver-data-")
    archive = zipfile.ZipFile(download.path())
    conversation = json.loads(archive.read(f"conversations/{user_conversations.first().pk}.json"))
    assert any(MARKER in m["content"] for m in conversation["messages"])
    account = json.loads(archive.read("account.json"))
    assert account["train_on_chats"] == {"chosen": False, "in_effect": False}

    # Phone width, dark: the account page still reads.
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        color_scheme="dark",
        storage_state=context.storage_state(),
    )
    phone_page = phone.new_page()
    phone_page.goto(base + "/accounts/")
    phone_page.screenshot(path=str(artifacts_dir / "account-phone-dark.png"), full_page=True)
    phone.close()

    # Delete: a wrong password deletes nothing; the right one everything.
    page.get_by_test_id("account-delete-link").click()
    page.get_by_test_id("delete-password").fill("not it")
    page.get_by_test_id("delete-confirm").check()
    page.get_by_test_id("delete-submit").click()
    page.get_by_text("That is not your password.").wait_for()
    assert _tables_holding(MARKER)
    page.get_by_test_id("delete-password").fill(PASSWORD)
    page.get_by_test_id("delete-confirm").check()
    page.get_by_test_id("delete-submit").click()
    page.get_by_test_id("account-deleted").wait_for()
    page.screenshot(path=str(artifacts_dir / "account-deleted.png"))
    assert _tables_holding(MARKER) == []
    assert not Conversation.objects.filter(pk=conversation["id"]).exists()
    # Logged out: the account page asks for a login, which fails now.
    page.goto(base + "/accounts/")
    assert "/accounts/login/" in page.url
    page.fill('input[name="username"]', "leaver")
    page.fill('input[name="password"]', PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_role("alert").wait_for()
    # The refused password and the refused login answer 400, as they should.
    assert [p for p in problems if "status of 400" not in p] == []
    context.close()

    # The superuser's privacy log names each step.
    staff_superuser_create("officer")
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    staff = admin.new_page()
    staff_login(staff, base, "officer")
    staff.goto(base + "/dashboard/privacy/")
    log = staff.get_by_test_id("privacy-log")
    for action in ("Changed the training choice", "Asked for a data export", "Deleted an account"):
        assert log.get_by_text(action).count() >= 1
    staff.screenshot(path=str(artifacts_dir / "dashboard-privacy.png"), full_page=True)
    assert PrivacyEvent.objects.filter(action=PrivacyEvent.Action.EXPORT_DOWNLOADED).count() == 1
    admin.close()


def test_a_temporary_chat_stays_out_of_the_list_and_ends_when_left(stack, browser, artifacts_dir):
    base = stack["base"]
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems = page_problems(page)
    signup(page, base, "passerby")
    page.get_by_test_id("temporary-toggle").click()
    assert page.get_by_test_id("temporary-toggle").get_attribute("aria-pressed") == "true"
    page.get_by_test_id("temporary-note").wait_for()
    page.get_by_test_id("composer-input").fill("Just between us")
    page.keyboard.press("Enter")
    last_answer_wait(page)
    page.get_by_test_id("temporary-badge").wait_for()
    # Its title comes from the question, though it is not in the list.
    page.wait_for_function(
        "document.querySelector('[data-testid=conversation-title]').textContent"
        ".startsWith('Just between')"
    )
    conversation = Conversation.objects.get(user__username="passerby")
    assert conversation.temporary
    page.screenshot(path=str(artifacts_dir / "chat-temporary.png"))
    assert page.get_by_test_id("conversation-list").locator("li[data-id]").count() == 0

    # A new chat ends it: deleted on the server too; the next chat is a normal one.
    page.get_by_test_id("new-chat").click()
    assert page.get_by_test_id("temporary-toggle").get_attribute("aria-pressed") == "false"
    assert page.get_by_test_id("temporary-note").is_hidden()
    deadline = 50
    while Conversation.objects.filter(pk=conversation.pk).exists() and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert problems == []
    context.close()
