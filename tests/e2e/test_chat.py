"""A new user in a real browser against the live stack (Daphne, an
inference worker on a tiny model, Redis): sign up, chat, reload mid-stream,
stop, regenerate and switch versions, rate, search, export."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import last_answer_wait, signup

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ANSWER = '[data-testid="assistant-message"]'
FINISHED = f'{ANSWER}[data-status="done"], {ANSWER}[data-status="cancelled"]'


def _answer_text(page) -> str:
    return page.locator(f"{ANSWER} .msg-body").last.inner_text()


def _wait_text_longer_than(page, length: int, timeout: int = 180_000) -> None:
    page.wait_for_function(
        """(length) => {
            const bodies = document.querySelectorAll('[data-testid=assistant-message] .msg-body');
            const last = bodies[bodies.length - 1];
            return last && last.textContent.length > length;
        }""",
        arg=length,
        timeout=timeout,
    )


def test_a_new_user_chats_reloads_mid_stream_stops_and_switches_versions(
    stack, page, artifacts_dir
):
    base = stack["base"]
    socket_frames: list[dict] = []

    def watch(ws) -> None:
        ws.on("framereceived", lambda payload: socket_frames.append(json.loads(payload)))

    page.on("websocket", watch)
    signup(page, base, "newcomer")
    page.screenshot(path=str(artifacts_dir / "chat-empty.png"))

    # First message: tokens arrive and the answer is stored.
    page.get_by_test_id("composer-input").fill("Hello there!")
    page.keyboard.press("Enter")
    page.wait_for_selector(ANSWER)
    page.wait_for_url(re.compile(r".*/c/\d+/$"))
    page.wait_for_selector(FINISHED, timeout=180_000)
    assert any(f["type"] == "generation.text" for f in socket_frames)
    first_answer = _answer_text(page)
    assert first_answer.strip()
    assert page.get_by_test_id("model-label").last.inner_text() == "tiny"
    assert page.get_by_test_id("conversation-title").inner_text() == "Hello there!"
    page.screenshot(path=str(artifacts_dir / "chat-first-answer.png"))

    # Long answers: raise the token limit in the settings dialog.
    page.get_by_test_id("open-settings").click()
    page.fill('input[name="max_tokens"]', "1500")
    page.get_by_test_id("settings-save").click()
    page.wait_for_selector("#settings-dialog[open]", state="detached")

    # Reload mid-stream: the same answer continues, nothing repeated.
    page.get_by_test_id("composer-input").fill("Tell me a long story.")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'{ANSWER}[data-status="pending"]')
    _wait_text_longer_than(page, 30)
    shown = _answer_text(page)
    page.reload()
    page.wait_for_selector(ANSWER)
    _wait_text_longer_than(page, len(shown) + 20)
    resumed = _answer_text(page)
    assert resumed.startswith(shown.rstrip("▍").strip()[:20])
    page.screenshot(path=str(artifacts_dir / "chat-after-reload.png"))

    # Esc stops it; the partial text stays.
    page.keyboard.press("Escape")
    assert last_answer_wait(page) == "cancelled"
    partial = _answer_text(page)
    assert partial.startswith(resumed[:20])
    page.screenshot(path=str(artifacts_dir / "chat-stopped.png"))
    # What the page showed is what was stored.
    page.reload()
    last_answer_wait(page)
    assert _answer_text(page) == partial

    # Regenerate makes a second version; switch back and forth.
    page.get_by_test_id("regenerate").last.click()
    page.wait_for_selector('[data-testid="version-count"]')
    assert page.get_by_test_id("version-count").last.inner_text() == "2 / 2"
    page.wait_for_selector(f'{ANSWER}[data-status="pending"]')
    page.get_by_test_id("stop").click()
    assert last_answer_wait(page) == "cancelled"
    page.get_by_test_id("version-prev").last.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=version-count]')].pop()"
        ".textContent.trim() === '1 / 2'"
    )
    assert _answer_text(page) == partial
    page.get_by_test_id("version-next").last.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=version-count]')].pop()"
        ".textContent.trim() === '2 / 2'"
    )

    # Thumbs down with a reason.
    page.get_by_test_id("thumbs-down").last.click()
    page.get_by_test_id("feedback-reason").fill("Too long")
    page.get_by_test_id("feedback-save").click()
    page.wait_for_selector('[data-testid="thumbs-down"].active')
    page.screenshot(path=str(artifacts_dir / "chat-versions.png"))

    # Search finds the conversation by message text; export works.
    page.get_by_test_id("search").fill("long story")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=conversation-item]').length === 1"
    )
    exported = page.request.get(base + page.get_by_test_id("export-json").get_attribute("href"))
    messages = exported.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Hello there!"

    # Phone width: the sidebar folds away behind its button.
    page.set_viewport_size({"width": 380, "height": 760})
    sidebar_right = "() => document.getElementById('sidebar').getBoundingClientRect().right"
    page.wait_for_function(f"() => ({sidebar_right})() <= 0")
    page.click("#sidebar-toggle")
    page.wait_for_function(
        "() => document.getElementById('sidebar').getBoundingClientRect().left >= 0"
    )
    page.screenshot(path=str(artifacts_dir / "chat-phone.png"))


def test_model_output_is_rendered_inert(stack, page):
    """Markdown from the model is sanitized: stored text with markup shows as
    text, fetches nothing and runs nothing (the rendering itself is tested
    in test_markdown_render; this checks the page wires it in)."""
    base = stack["base"]
    signup(page, base, "cautious")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.get_by_test_id("composer-input").fill(
        "<img src=x onerror=window.pwned=1> ![a](http://127.0.0.2:9/?q=secret)"
    )
    page.keyboard.press("Enter")
    page.wait_for_selector(FINISHED, timeout=180_000)
    assert page.evaluate("() => window.pwned") is None
    assert page.locator("#messages img").count() == 0
    assert "<img" in page.locator('[data-testid="user-message"] .msg-body').inner_text()
    assert not [url for url in requested if "127.0.0.2" in url]
