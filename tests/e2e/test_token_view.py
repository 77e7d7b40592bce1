"""An answer's token probabilities in a real browser against the live stack:
the answer as tinted token spans, a token's alternatives in a popover (by
mouse, keyboard and at phone width, light and dark), regenerating from an
alternative into a new version of the answer, and beam search picked in
the conversation settings, whose answers have no token view."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.e2e.conftest import last_answer_wait, signup

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ANSWER = '[data-testid="assistant-message"]'
TOKEN = '[data-testid="token"]'
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def _ask(page, text: str) -> str:
    before = page.locator(ANSWER).count()
    page.get_by_test_id("composer-input").fill(text)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(n) => document.querySelectorAll('[data-testid=assistant-message]').length > n",
        arg=before,
    )
    return last_answer_wait(page)


def _errors_watch(page, errors: list[dict]) -> None:
    """Collect the error frames the page's sockets receive."""

    def on_socket(ws) -> None:
        def on_frame(payload) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "error":
                errors.append(frame)

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)


def _token_texts(answer) -> list[str]:
    return answer.locator(TOKEN).evaluate_all("spans => spans.map((s) => s.textContent)")


def _conversation_create(page, **settings) -> int:
    """Create a conversation through the API the page uses; return its id."""
    return page.evaluate(
        """async (settings) => {
            const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
            const response = await fetch('/api/conversations/', {
                method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRFToken': csrf},
                body: JSON.stringify(settings),
            });
            return (await response.json()).id;
        }""",
        settings,
    )


def _tokens_fetch(page, message_id: int) -> dict:
    return page.evaluate(
        "async (id) => (await fetch(`/api/messages/${id}/tokens/`)).json()", message_id
    )


def _branch_point(tokens: list[dict]) -> tuple[int, str]:
    """A token near the middle with an alternative the server accepts."""
    middle = len(tokens) // 2
    for index in sorted(range(1, len(tokens)), key=lambda i: abs(i - middle)):
        for alt in tokens[index]["top"]:
            text = alt["text"]
            if text and text != tokens[index]["text"] and "\ufffd" not in text:
                return index, text
    raise AssertionError(f"no token has an alternative: {tokens}")


def _alternative(popover, text: str):
    """The popover's button for the alternative text (which CSS selectors
    could not quote safely)."""
    buttons = popover.get_by_test_id("token-alternative")
    texts = buttons.evaluate_all("buttons => buttons.map((b) => b.dataset.token)")
    return buttons.nth(texts.index(text))


def _until(page, script: str, arg, errors: list[dict], timeout_s: float = 180) -> None:
    """Wait for script(arg) to hold in the page; fail at once on an error
    frame from the socket."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(script, arg):
        assert not errors, errors
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(200)


def _popover_shot(page, path) -> None:
    popover = page.get_by_test_id("token-popover")
    popover.scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def test_token_view_regenerates_from_an_alternative_and_beam_search_has_none(
    stack, browser, artifacts_dir
):
    base = stack["base"]
    desktop = browser.new_context(viewport=DESKTOP, color_scheme="light")
    page = desktop.new_page()
    errors: list[dict] = []
    _errors_watch(page, errors)
    signup(page, base, "token-reader")
    # Short answers keep the token view on a screen.
    conversation_id = _conversation_create(page, max_tokens=60)
    page.goto(f"{base}/c/{conversation_id}/")
    assert _ask(page, "Tell me about sending a parcel to Lisbon") == "done"

    answer = page.locator(ANSWER).last
    original_id = int(answer.get_attribute("data-message-id"))
    original = Message.objects.get(pk=original_id).content
    tokens = _tokens_fetch(page, original_id)["tokens"]
    assert tokens, f"GET /api/messages/{original_id}/tokens/ listed no tokens"

    # The toggle shows the answer as token spans that spell it exactly.
    toggle = answer.get_by_test_id("token-view-toggle")
    assert toggle.get_attribute("aria-label") == "Token probabilities"
    assert toggle.get_attribute("title")
    toggle.click()
    answer.locator(TOKEN).first.wait_for()
    assert "".join(_token_texts(answer)) == original
    assert answer.get_by_test_id("token-view-toggle").get_attribute("aria-pressed") == "true"
    assert "Probability" in answer.get_by_test_id("token-legend").inner_text()

    # The mouse resting on a token shows its alternatives; leaving closes
    # them.
    index, alternative = _branch_point(tokens)
    popover = page.get_by_test_id("token-popover")
    # (The mouse left where the toggle was: the token that came under it
    # may be showing its own first, until this one's opens.)
    answer.locator(TOKEN).nth(index + 1).hover()
    expect(popover).to_contain_text(f"Token {index + 2} of {len(tokens)}")
    page.mouse.move(5, DESKTOP["height"] - 5)
    popover.wait_for(state="hidden")

    # A click on a token in the middle keeps them open: the chosen one
    # marked, the others as buttons that regenerate from there.
    span = answer.locator(TOKEN).nth(index)
    span.click()
    popover.wait_for()
    chosen = popover.get_by_test_id("token-chosen")
    assert chosen.count() == 1 and "%" in chosen.inner_text()
    pick = _alternative(popover, alternative)
    assert pick.get_attribute("aria-label").startswith("Regenerate from here with")
    assert re.search(r"\d%", pick.inner_text())
    _popover_shot(page, artifacts_dir / "token-view-desktop-light.png")
    page.emulate_media(color_scheme="dark")
    _popover_shot(page, artifacts_dir / "token-view-desktop-dark.png")

    # Esc closes them; the keyboard reaches the tokens and opens them.
    page.keyboard.press("Escape")
    popover.wait_for(state="hidden")
    span.focus()
    page.keyboard.press("Enter")
    popover.wait_for()
    assert page.evaluate("document.activeElement.dataset.testid") == "token-alternative"
    page.keyboard.press("Escape")
    popover.wait_for(state="hidden")
    assert page.evaluate("document.activeElement.dataset.index") == str(index)

    # On a phone, by touch, in the same session.
    phone = browser.new_context(
        viewport=PHONE,
        color_scheme="dark",
        has_touch=True,
        is_mobile=True,
        storage_state=desktop.storage_state(),
    )
    mobile = phone.new_page()
    _errors_watch(mobile, errors)
    mobile.goto(f"{base}/c/{conversation_id}/")
    answer = mobile.locator(ANSWER).last
    answer.get_by_test_id("token-view-toggle").tap()
    span = answer.locator(TOKEN).nth(index)
    span.tap()
    popover = mobile.get_by_test_id("token-popover")
    popover.wait_for()
    box = popover.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    for line in span.evaluate("(s) => [...s.getClientRects()].map((r) => [r.top, r.bottom])"):
        # The popover leaves the token it lists in view.
        assert line[1] <= box["y"] or line[0] >= box["y"] + box["height"], (line, box)
    _popover_shot(mobile, artifacts_dir / "token-view-phone-dark.png")
    mobile.emulate_media(color_scheme="light")
    _popover_shot(mobile, artifacts_dir / "token-view-phone-light.png")

    # Regenerate from the alternative: a second version of the answer that
    # starts with the earlier tokens and the alternative.
    prefix = "".join(t["text"] for t in tokens[:index]) + alternative
    _alternative(popover, alternative).tap()
    _until(
        mobile,
        """(id) => {
            const answers = document.querySelectorAll('[data-testid=assistant-message]');
            const last = answers[answers.length - 1];
            return !!last && last.dataset.messageId !== String(id)
                && last.dataset.status !== 'pending';
        }""",
        original_id,
        errors,
    )
    answer = mobile.locator(ANSWER).last
    assert answer.get_by_test_id("version-count").inner_text().replace(" ", "") == "2/2"
    branched_id = int(answer.get_attribute("data-message-id"))
    branched = Message.objects.get(pk=branched_id)
    assert branched.parent_id == Message.objects.get(pk=original_id).parent_id
    assert branched.content.startswith(prefix), (branched.content, prefix)
    answer.get_by_test_id("token-view-toggle").tap()
    answer.locator(TOKEN).first.wait_for()
    assert "".join(_token_texts(answer)) == branched.content

    # "<" goes back to the original answer, still shown as its tokens.
    answer.get_by_test_id("version-prev").tap()
    _until(
        mobile,
        """(id) => {
            const answers = document.querySelectorAll('[data-testid=assistant-message]');
            return answers[answers.length - 1].dataset.messageId === String(id);
        }""",
        original_id,
        errors,
    )
    answer = mobile.locator(ANSWER).last
    assert answer.get_by_test_id("version-count").inner_text().replace(" ", "") == "1/2"
    assert "".join(_token_texts(answer)) == original
    answer.get_by_test_id("token-view-toggle").tap()
    answer.locator(".msg-body.markdown").wait_for()
    assert answer.locator(TOKEN).count() == 0
    phone.close()

    # Beam search in the settings: the beams field replaces top-k, and the
    # server's refusal of a bad value is shown.
    page.reload()
    page.get_by_test_id("open-settings").click()
    page.get_by_test_id("settings-strategy").select_option("beam")
    beams = page.get_by_test_id("settings-beams")
    assert beams.is_visible() and not page.get_by_test_id("settings-top-k").is_visible()
    beams.evaluate("(input) => input.removeAttribute('max')")
    beams.fill("9")
    page.get_by_test_id("settings-save").click()
    error = page.locator("#settings-error")
    error.wait_for()
    assert "beams" in error.inner_text()
    assert beams.get_attribute("aria-invalid") == "true"
    page.screenshot(path=str(artifacts_dir / "token-view-settings-beam.png"))
    beams.fill("3")
    page.get_by_test_id("settings-save").click()
    page.wait_for_selector("#settings-dialog[open]", state="detached")
    conversation = Conversation.objects.get(pk=conversation_id)
    assert (conversation.strategy, conversation.beams) == ("beam", 3)

    # A beam-search answer arrives whole and has no token view.
    assert _ask(page, "And how long does it take?") == "done"
    answer = page.locator(ANSWER).last
    assert answer.locator(".msg-body").inner_text().strip()
    assert answer.get_by_test_id("token-view-toggle").count() == 0
    assert Message.objects.get(pk=int(answer.get_attribute("data-message-id"))).tokens == []
    page.screenshot(path=str(artifacts_dir / "token-view-beam-answer.png"))
    assert errors == []
    desktop.close()
