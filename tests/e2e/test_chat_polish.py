"""The chat page as a demanding user tries it, in a real browser against
the live stack: the phone drawer, answer actions that stay on one line and
above the composer, the model picker, the sidebar (inline rename, pin,
delete with undo, date groups), per-answer details, keyboard shortcuts,
continuing a cut answer, and the settings title. Screenshots at desktop
and phone widths, light and dark."""

from __future__ import annotations

import re

import pytest

from chat.models import Conversation
from models_admin.services import model_version_create
from tests.e2e.conftest import last_answer_wait, signup, staff_login, staff_superuser_create

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ANSWER = '[data-testid="assistant-message"]'
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def _ask(page, text: str) -> str:
    page.get_by_test_id("composer-input").fill(text)
    page.keyboard.press("Enter")
    page.wait_for_selector(ANSWER)
    return last_answer_wait(page)


def _set_max_tokens(page, value: int) -> None:
    page.get_by_test_id("open-settings").click()
    page.fill('input[name="max_tokens"]', str(value))
    page.get_by_test_id("settings-save").click()
    page.wait_for_selector("#settings-dialog[open]", state="detached")


def test_on_a_phone_the_drawer_closes_and_answer_actions_stay_in_reach(
    stack, browser, artifacts_dir
):
    base = stack["base"]
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport=PHONE, color_scheme=scheme, has_touch=True)
        page = context.new_page()
        signup(page, base, f"phone-{scheme}")
        assert _ask(page, "Hello from a phone") in ("done", "cancelled")

        # The last answer's actions are on screen, above the composer, and
        # the two thumbs sit on one line.
        last = page.locator(ANSWER).last
        last.get_by_test_id("thumbs-down").wait_for()
        page.wait_for_timeout(500)  # the list settles after the answer ends
        up = last.get_by_test_id("thumbs-up").bounding_box()
        down = last.get_by_test_id("thumbs-down").bounding_box()
        composer = page.locator("#composer").bounding_box()
        assert abs(up["y"] - down["y"]) < 2, (up, down)
        assert down["y"] + down["height"] <= composer["y"] + 1, (down, composer)
        page.screenshot(path=str(artifacts_dir / f"chat-phone-{scheme}.png"))

        # The drawer: the toggle opens it over a backdrop; the close
        # button, a tap outside and Esc each close it.
        toggle = page.locator("#sidebar-toggle")
        sidebar = page.locator("#sidebar")

        def drawer_open(sidebar=sidebar) -> bool:
            box = sidebar.bounding_box()
            return box is not None and box["x"] > -10

        toggle.click()
        page.wait_for_function(
            "() => document.querySelector('#chat-app').classList.contains('sidebar-open')"
        )
        page.wait_for_timeout(300)  # the slide-in
        assert drawer_open() and page.get_by_test_id("sidebar-backdrop").is_visible()
        page.screenshot(path=str(artifacts_dir / f"chat-phone-drawer-{scheme}.png"))
        page.get_by_test_id("sidebar-close").click()
        page.wait_for_timeout(300)
        assert not drawer_open() and not page.get_by_test_id("sidebar-backdrop").is_visible()
        toggle.click()
        page.wait_for_timeout(300)
        page.mouse.click(PHONE["width"] - 20, PHONE["height"] // 2)  # the backdrop
        page.wait_for_timeout(300)
        assert not drawer_open()
        toggle.click()
        page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        assert not drawer_open()
        context.close()


def test_sidebar_rename_pin_delete_with_undo_and_date_groups(stack, browser, artifacts_dir):
    base = stack["base"]
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    signup(page, base, "organiser")
    for question in ("First question about parcels", "Second question about returns"):
        page.get_by_test_id("new-chat").click()
        _ask(page, question)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=conversation-item]').length === 2"
    )
    groups = page.get_by_test_id("list-group").all_inner_texts()
    assert [g.strip().lower() for g in groups] == ["today"]

    # Inline rename: no prompt(), Enter saves.
    first = page.locator('[data-testid="conversation-item"]', has_text="First question")
    first.hover()
    first.get_by_test_id("item-more").click()
    first.get_by_test_id("item-rename").click()
    page.get_by_test_id("rename-input").fill("Parcel to Lisbon")
    page.keyboard.press("Enter")
    page.wait_for_selector('[data-testid="conversation-item"] >> text=Parcel to Lisbon')
    owner = Conversation.objects.get(title="Parcel to Lisbon")
    assert owner.title_is_auto is False

    # Pin: it moves to the top, under "Pinned".
    renamed = page.locator('[data-testid="conversation-item"]', has_text="Parcel to Lisbon")
    renamed.hover()
    renamed.get_by_test_id("item-more").click()
    renamed.get_by_test_id("item-pin").click()
    page.wait_for_function(
        """() => {
            const heads = [...document.querySelectorAll('[data-testid=list-group]')];
            return heads.length === 2 && heads[0].textContent.trim() === 'Pinned';
        }"""
    )
    items = page.get_by_test_id("conversation-item").all_inner_texts()
    assert "Parcel to Lisbon" in items[0]
    page.screenshot(path=str(artifacts_dir / "chat-sidebar-groups.png"))

    # Delete with undo: gone from the list, back after Undo, no confirm().
    other = page.locator('[data-testid="conversation-item"]', has_text="Second question")
    other.hover()
    other.get_by_test_id("item-more").click()
    # The list is redrawn under the open menu (a change from another tab):
    # the menu stays open.
    page.evaluate(
        """async (id) => {
            const token = document.cookie.match(/csrftoken=([^;]+)/)[1];
            await fetch(`/api/conversations/${id}/`, {
                method: "PATCH",
                headers: {"X-CSRFToken": token, "Content-Type": "application/json"},
                body: JSON.stringify({title: "Parcel to Porto"}),
            });
        }""",
        str(owner.id),
    )
    page.wait_for_selector('[data-testid="conversation-item"] >> text=Parcel to Porto')
    assert other.get_by_test_id("item-delete").is_visible()
    assert other.get_by_test_id("item-more").get_attribute("aria-expanded") == "true"
    other.get_by_test_id("item-delete").click()
    page.get_by_test_id("toast").wait_for()
    assert other.count() == 0
    page.screenshot(path=str(artifacts_dir / "chat-delete-undo.png"))
    page.get_by_test_id("toast-undo").click()
    other.wait_for()
    page.wait_for_timeout(6_500)  # past the undo time: nothing was deleted
    assert Conversation.objects.filter(title__startswith="Second question").exists()

    # Deleted for real once the undo time has passed.
    other.hover()
    other.get_by_test_id("item-more").click()
    other.get_by_test_id("item-delete").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=toast]').hidden", timeout=15_000
    )
    page.wait_for_timeout(1_000)
    assert not Conversation.objects.filter(title__startswith="Second question").exists()
    assert dialogs == []
    context.close()


def test_staff_pick_a_candidate_model_that_is_remembered_per_conversation(
    stack, browser, artifacts_dir, tiny_model_dir
):
    candidate = model_version_create(name="tiny-candidate", folder=tiny_model_dir)
    staff_superuser_create("operator")
    base = stack["base"]
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport=DESKTOP, color_scheme=scheme)
        page = context.new_page()
        staff_login(page, base, "operator")
        picker = page.get_by_test_id("model-picker")
        picker.wait_for()
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=model-picker] option').length === 2"
        )
        assert picker.locator("option").first.inner_text() == "tiny (default)"
        picker.select_option(str(candidate.pk))
        _ask(page, f"Which model answers? ({scheme})")
        assert page.get_by_test_id("model-label").last.inner_text() == "tiny-candidate"
        page.wait_for_url(re.compile(r".*/c/\d+/$"))
        page.reload()
        page.get_by_test_id("model-picker").wait_for()
        page.wait_for_function(
            "(pk) => document.querySelector('[data-testid=model-picker]').value === pk",
            arg=str(candidate.pk),
        )
        # Per-answer details on hover: tokens, time to first token, speed,
        # the version and how it ended.
        page.locator(ANSWER).last.get_by_test_id("details-button").hover()
        details = page.locator(ANSWER).last.get_by_test_id("answer-details")
        details.wait_for()
        text = details.inner_text()
        for label in ("Model", "Tokens", "Time to first token", "Speed", "Finish"):
            assert label in text, text
        assert "tiny-candidate" in text
        page.screenshot(path=str(artifacts_dir / f"chat-model-picker-details-{scheme}.png"))
        context.close()


def test_shortcuts_continue_a_cut_answer_and_the_settings_title(stack, browser, artifacts_dir):
    base = stack["base"]
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    signup(page, base, "keyboardist")
    _ask(page, "A question that is long enough to be cut into an automatic title here")
    page.wait_for_url(re.compile(r".*/c/\d+/$"))

    # The settings leave the automatic title ("…" and all) out of the field.
    page.get_by_test_id("open-settings").click()
    title = page.get_by_test_id("settings-title")
    assert title.input_value() == ""
    assert title.get_attribute("placeholder").endswith("…")
    page.fill('input[name="max_tokens"]', "4")
    page.get_by_test_id("settings-save").click()
    page.wait_for_selector("#settings-dialog[open]", state="detached")
    conversation = Conversation.objects.get()
    assert conversation.title_is_auto and conversation.title.endswith("…")

    # A length-cut answer offers Continue; continuing grows the same answer.
    page.get_by_test_id("regenerate").last.click()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=versions]').length > 0", timeout=60_000
    )
    last_answer_wait(page)
    last = page.locator(ANSWER).last
    cut = last.locator(".msg-body").inner_text()
    last.get_by_test_id("continue").click()
    page.wait_for_function(
        """(before) => {
            const answers = document.querySelectorAll('[data-testid=assistant-message]');
            const last = answers[answers.length - 1];
            return last.dataset.status !== 'pending'
                && last.querySelector('.msg-body').innerText.length > before.length;
        }""",
        arg=cut,
        timeout=120_000,
    )
    assert page.locator(ANSWER).count() == 1
    grown = page.locator(ANSWER).last.locator(".msg-body").inner_text()
    assert grown.startswith(cut.rstrip()[:10])

    # "?" opens the cheat sheet; Ctrl+K searches; Ctrl+Shift+O starts a
    # new chat; Ctrl+Shift+S hides the list; Shift+Esc writes.
    page.locator("body").click(position={"x": 600, "y": 300})
    page.keyboard.press("?")
    page.get_by_test_id("shortcuts-dialog").wait_for()
    page.screenshot(path=str(artifacts_dir / "chat-shortcuts.png"))
    page.keyboard.press("Escape")
    page.keyboard.press("Control+k")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(base + "/")
    assert page.get_by_test_id("conversation-title").inner_text() == "New chat"
    page.keyboard.press("Control+Shift+S")
    assert not page.locator("#sidebar").is_visible()
    page.keyboard.press("Control+Shift+S")
    assert page.locator("#sidebar").is_visible()
    page.keyboard.press("Shift+Escape")
    assert page.evaluate("document.activeElement.id") == "input"
    context.close()
