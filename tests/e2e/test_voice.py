"""Voice in a real browser: Chromium's fake microphone plays a recording
made here with espeak-ng, MediaRecorder streams it over the chat socket,
the stack's speech worker recognises it; answers are read aloud."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.e2e.conftest import CHROMIUM, last_answer_wait, page_problems, signup
from tests.speech.conftest import RATE, spoken, wav_file

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SENTENCE = "i would like to book a table for two"


@pytest.fixture
def microphone(browser, tmp_path) -> Iterator:
    """A browser whose microphone says SENTENCE once, then stays quiet
    (a second Chromium, from the session's Playwright)."""
    speech = spoken(SENTENCE, pad_s=1.0)
    quiet = np.random.default_rng(1).normal(0, 30, 4 * RATE).astype(np.int16)
    recording = wav_file(np.concatenate([speech, quiet]), tmp_path / "speech.wav")
    fake = browser.browser_type.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={recording}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    context = fake.new_context(permissions=["microphone"])
    yield context.new_page()
    context.close()
    fake.close()


def _composer_text(page) -> str:
    return page.get_by_test_id("composer-input").input_value()


def test_dictation_fills_the_composer_as_the_words_are_recognised(
    stack, microphone, artifacts_dir
):
    page, base = microphone, stack["base"]
    problems = page_problems(page)
    signup(page, base, "speaker")
    mic = page.get_by_test_id("mic")
    mic.wait_for(state="visible", timeout=30_000)
    page.get_by_test_id("composer-input").fill("Question:")
    mic.click()
    page.wait_for_function(
        "() => document.getElementById('input').value.length > 'Question:'.length",
        timeout=30_000,
    )
    page.screenshot(path=str(artifacts_dir / "voice-dictating.png"))
    assert mic.get_attribute("data-state") == "listening"
    page.wait_for_timeout(3500)  # the rest of the sentence
    mic.click()
    page.wait_for_function(
        "() => document.getElementById('mic').dataset.state === 'idle'", timeout=30_000
    )
    text = _composer_text(page)
    assert text.startswith("Question: i would like"), text
    assert problems == []


def test_send_on_a_pause_sends_the_words_and_the_answer_is_read_aloud(
    stack, microphone, artifacts_dir
):
    page, base = microphone, stack["base"]
    problems = page_problems(page)
    signup(page, base, "talker")
    page.get_by_test_id("mic").wait_for(state="visible", timeout=30_000)
    page.get_by_test_id("send-on-pause").check()
    page.get_by_test_id("mic").click()
    question = page.locator('[data-testid="user-message"]')
    question.wait_for(timeout=60_000)
    assert question.inner_text().startswith("i would like")
    assert _composer_text(page) == ""
    last_answer_wait(page)

    # Headless Chromium has no voices: the server reads the answer.
    with page.expect_response(lambda r: "/speech/say/" in r.url) as said:
        page.get_by_test_id("read-aloud").last.click()
    response = said.value
    assert response.status == 200
    assert response.headers["content-type"] == "audio/wav"
    page.screenshot(path=str(artifacts_dir / "voice-read-aloud.png"))
    assert problems == []


def test_a_widget_visitor_dictates_and_hears_the_answer(
    stack, microphone, host_pages, artifacts_dir
):
    from chat.services.widget_sites import widget_site_save
    from tests.e2e.conftest import host_page_set_key

    folder, (allowed, _foreign) = host_pages
    site = widget_site_save(data={"name": "Fernhollow", "allowed_origins": allowed})
    host_page_set_key(folder, site.public_key)
    page = microphone
    page.goto(allowed)
    page.get_by_test_id("widget-launcher").click()
    frame = page.frame_locator('[data-testid="widget-container"] iframe')
    mic = frame.get_by_test_id("widget-mic")
    mic.wait_for(state="visible", timeout=30_000)
    frame.locator('[data-testid="widget-mic"]:not([disabled])').wait_for(timeout=30_000)
    mic.click()
    page.wait_for_timeout(5000)
    mic.click()
    frame.locator('[data-testid="widget-mic"][data-state="idle"]').wait_for(timeout=30_000)
    text = frame.get_by_test_id("widget-input").input_value()
    assert text.startswith("i would like"), text
    page.screenshot(path=str(artifacts_dir / "voice-widget.png"))
    frame.get_by_test_id("widget-send").click()
    frame.locator('[data-testid="widget-answer"][data-status="done"]').last.wait_for(
        timeout=180_000
    )
    with page.expect_response(lambda r: "/widget/speech/say/" in r.url) as said:
        frame.get_by_test_id("widget-read-aloud").last.click()
    assert said.value.status == 200


def test_voice_mode_listens_sends_reads_the_answer_and_listens_again(
    stack, microphone, tmp_path, default_model_dir, artifacts_dir
):
    """Hands-free: the question is spoken and sent on the pause; the
    answer, from a model that always says REPLY, is read sentence by
    sentence; then the microphone listens again."""
    from models_admin.services import model_version_create, model_version_promote
    from tests.e2e.conftest import _stack_serving, stack_serving_changed
    from tests.tiny_models import chain_llama_save

    reply = "Your table is booked. See you at seven!"
    folder, _chain = chain_llama_save(
        tmp_path / "reply", text=reply, default_model_dir=default_model_dir
    )
    version = model_version_create(name="reply", folder=folder)
    model_version_promote(version=version)
    stack_serving_changed()
    _stack_serving(stack["base"], stack["process"], stack["log"], version.pk)

    page, base = microphone, stack["base"]
    problems = page_problems(page)
    signup(page, base, "handsfree")
    said: list[str] = []
    page.on(
        "request",
        lambda r: said.append(r.post_data_json["text"]) if "/speech/say/" in r.url else None,
    )
    page.get_by_test_id("voice-mode").wait_for(state="visible", timeout=30_000)
    page.get_by_test_id("voice-mode").click()
    page.locator('[data-testid="user-message"]').wait_for(timeout=60_000)
    assert last_answer_wait(page) == "done"
    # Read a sentence at a time, then back to listening.
    page.wait_for_function(
        "() => document.getElementById('mic').dataset.state === 'listening'"
        " && !document.body.classList.contains('reading-aloud')",
        timeout=60_000,
    )
    assert said == ["Your table is booked.", "See you at seven!"], said
    assert page.get_by_test_id("voice-mode").get_attribute("aria-pressed") == "true"
    page.screenshot(path=str(artifacts_dir / "voice-mode.png"))
    page.keyboard.press("Escape")
    assert page.get_by_test_id("voice-mode").get_attribute("aria-pressed") == "false"
    assert problems == []
