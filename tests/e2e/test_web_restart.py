"""The web server dies mid-answer and comes back: in a real browser, the
chat page says it is reconnecting, reconnects on its own and ends with the
whole answer, once. Redis, an inference worker and Daphne run as separate
processes started here (the launcher would restart Daphne by itself)."""

from __future__ import annotations

import os
import signal

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat.models import Message
from inference.client import generation_events_sync, generation_replay
from inference.connection import generation_key, redis_client
from inference.protocol import event_decode
from models_admin.services import model_version_register
from tests.conftest import free_port, wait_for
from tests.factories import UserFactory
from tests.tiny_models import chain_llama_save, tokenizer_load

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSWORD = "a long passphrase for the restart"
ANSWER = '[data-testid="assistant-message"]'
#: Both web servers sign sessions with it, so the login survives.
SECRET_KEY = "tests-only-restart-secret-key-0123456789abcdef"
#: Words to build the forced answer from; the tiny tokenizer knows them.
WORDS = (
    "The capital of France is Paris Hello How can I help you today Your order ships "
    "within two working days Returns are free within thirty days of delivery Our shop "
    "opens at nine and closes at six"
)
#: Every text the pending answer showed, recorded in the page.
RECORD_SHOWN = """() => {
    window.shownTexts = [];
    new MutationObserver(() => {
        const answers = document.querySelectorAll('[data-testid=assistant-message]');
        const last = answers[answers.length - 1];
        if (!last || last.dataset.status !== 'pending') return;
        const text = last.querySelector('.msg-body').textContent;
        if (window.shownTexts[window.shownTexts.length - 1] !== text) {
            window.shownTexts.push(text);
        }
    }).observe(document.getElementById('messages'),
               {subtree: true, childList: true, characterData: true});
}"""


def _forced_text(default_model_dir) -> str:
    """A long plain text from WORDS whose tokens are all distinct, as the
    chain model needs, and fewer than its 63."""
    tokenizer = tokenizer_load(default_model_dir)
    text = ""
    for word in WORDS.split():
        candidate = f"{text} {word}".strip()
        ids = tokenizer.encode(candidate + ".", add_special_tokens=False)
        if len(ids) <= 60 and len(set(ids)) == len(ids):
            text = candidate
    return text + "."


@pytest.fixture(scope="module")
def forced(tmp_path_factory, default_model_dir) -> tuple:
    """A model that answers one long known text, and that text."""
    text = _forced_text(default_model_dir)
    folder, _chain = chain_llama_save(
        tmp_path_factory.mktemp("models") / "forced",
        text=text,
        default_model_dir=default_model_dir,
    )
    return folder, text


def _stream_is_running(generation_id: str) -> bool:
    events = redis_client().xrange(generation_key(generation_id), "-", "+")
    return bool(events) and not event_decode(*events[-1]).final


def _answer_text(page) -> str:
    return page.locator(f"{ANSWER} .msg-body").last.inner_text().strip()


@pytest.mark.parametrize(
    "resume",
    [
        "after-reconnect",
        "while-down",
    ],
)
def test_a_web_restart_mid_answer_reconnects_and_shows_the_answer_once(
    resume,
    transactional_db,
    settings,
    page,
    artifacts_dir,
    forced,
    worker_process,
    web_process,
):
    folder, text = forced
    settings.MODEL_DIR = folder.parent
    model_version_register(name="forced", folder=folder)
    # One token per step, and a claim that outlives the pause below.
    worker = worker_process(
        MODEL_DIR=str(folder.parent),
        INFERENCE_SPECULATIVE_TOKENS="0",
        INFERENCE_CLAIM_TIMEOUT="600",
        INFERENCE_THREADS="1",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web_env = {"SECRET_KEY": SECRET_KEY, "MODEL_DIR": str(folder.parent)}
    web = web_process(port, **web_env)
    user = UserFactory(username="restarted")
    # The web server hashes with the production hashers.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])

    page.goto(base + "/accounts/login/")
    page.fill('input[name="username"]', "restarted")
    page.fill('input[name="password"]', PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(base + "/")
    page.wait_for_selector('#chat-app[data-connected="yes"]')
    page.evaluate(RECORD_SHOWN)
    page.get_by_test_id("composer-input").fill("Where is my parcel?")
    page.keyboard.press("Enter")

    def pending_answer() -> Message | None:
        return (
            Message.objects.filter(role=Message.Role.ASSISTANT, status=Message.Status.PENDING)
            .exclude(generation_id=None)
            .first()
        )

    wait_for(lambda: pending_answer() is not None)
    answer = pending_answer()
    generation_id = str(answer.generation_id)
    # Pause the worker at its first piece of text: the answer is then
    # certainly still being written when the web server dies.
    for event in generation_events_sync(generation_id, timeout_s=60):
        if event.type == "text":
            os.kill(worker.process.pid, signal.SIGSTOP)
            break
    assert _stream_is_running(generation_id), "the worker finished before it was paused"
    # The worker may have written a few more pieces before it stopped: let
    # the page show everything streamed so far.
    streamed, _final = generation_replay(generation_id)
    wait_for(lambda: _answer_text(page) == streamed.strip())
    shown_before = _answer_text(page)

    os.kill(web.pid, signal.SIGKILL)
    web.wait()
    page.wait_for_selector('#chat-app[data-connected="no"]')
    page.wait_for_function(
        "() => document.getElementById('connection').textContent.includes('Reconnecting')"
    )
    assert _answer_text(page) == shown_before
    page.screenshot(path=str(artifacts_dir / f"web-restart-{resume}-reconnecting.png"))

    # The answer ends while nothing serves the page, or after it is back.
    if resume == "while-down":
        os.kill(worker.process.pid, signal.SIGCONT)
        wait_for(
            lambda: Message.objects.get(pk=answer.pk).status != Message.Status.PENDING,
            timeout=60,
        )
    web_process(port, **web_env)
    page.wait_for_selector('#chat-app[data-connected="yes"]', timeout=60_000)
    if resume == "after-reconnect":
        os.kill(worker.process.pid, signal.SIGCONT)

    try:
        page.wait_for_selector(f'{ANSWER}[data-status="done"]', timeout=30_000)
    finally:
        page.screenshot(path=str(artifacts_dir / f"web-restart-{resume}-end.png"))
    stored = Message.objects.get(pk=answer.pk)
    assert stored.content == text
    assert page.locator(ANSWER).count() == 1
    assert _answer_text(page) == stored.content
    # While it streamed, the page showed growing beginnings of the answer:
    # nothing skipped, nothing shown twice.
    shown = [s.strip() for s in page.evaluate("() => window.shownTexts") if s.strip()]
    assert shown and all(text.startswith(s) for s in shown), shown
