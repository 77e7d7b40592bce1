"""The chat page under a fast stream in a long conversation, in a real
browser. The socket is served by the test (Playwright's WebSocket routing)
so the frames and their pace are exact; the page, its scripts and the
conversation come from the live Django server."""

from __future__ import annotations

import json
import uuid

import pytest
from django.conf import settings
from django.test import Client

from chat.models import Message
from chat.services.conversations import conversation_create
from chat.services.messages import message_generation_finish, message_send
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

EXCHANGES = 100  # 200 messages on screen
TOKENS = 150  # sent at 50 a second
FLUSH_MS = 50


@pytest.fixture
def long_conversation(transactional_db, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 1000
    user = UserFactory()
    conversation = conversation_create(user=user, title="Long one")
    for n in range(EXCHANGES):
        sent = message_send(
            user=user,
            conversation=conversation,
            content=f"Question {n} with `code` and *emphasis*",
            client_id=uuid.uuid4(),
        )
        message_generation_finish(
            generation_id=sent.answer.generation_id,
            final={"finish_reason": "stop"},
            text=f"Answer {n}\n\n```python\nprint({n})\n```\n\n- a\n- b",
        )
    pending = message_send(
        user=user, conversation=conversation, content="And now?", client_id=uuid.uuid4()
    )
    client = Client()
    client.force_login(user)
    return conversation, pending.answer, client.cookies[settings.SESSION_COOKIE_NAME].value


def test_a_fast_stream_in_a_200_message_conversation_batches_dom_updates(
    live_server, long_conversation, browser
):
    conversation, answer, session = long_conversation
    assert Message.objects.filter(conversation=conversation).count() == 2 * EXCHANGES + 2
    context = browser.new_context()
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    page = context.new_page()
    opened: list = []

    def serve(ws) -> None:
        def on_message(raw) -> None:
            frame = json.loads(raw)
            if frame.get("type") == "conversation.open":
                opened.append(ws)

        ws.on_message(on_message)
        ws.send(json.dumps({"type": "hello", "user": "x"}))

    page.route_web_socket("**/ws/chat/", serve)
    page.goto(f"{live_server.url}/c/{conversation.pk}/")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 202")
    page.wait_for_timeout(200)
    assert opened, "the page did not open the conversation on its socket"
    page.evaluate(
        """(answerId) => {
            window.renderStats = {flushes: 0, otherChanges: 0, start: performance.now()};
            const node = document.querySelector(`[data-message-id="${answerId}"] .msg-body`);
            new MutationObserver(() => { window.renderStats.flushes += 1; })
                .observe(node, {childList: true});
            new MutationObserver(() => { window.renderStats.otherChanges += 1; })
                .observe(document.getElementById('messages'), {childList: true});
        }""",
        answer.pk,
    )
    ws = opened[-1]
    ws.send(json.dumps({"type": "generation.start", "message": answer.pk, "seq": 1}))
    pieces = [f"word{n} " for n in range(TOKENS)]
    for seq, piece in enumerate(pieces, start=2):
        ws.send(
            json.dumps(
                {"type": "generation.text", "message": answer.pk, "seq": seq, "text": piece}
            )
        )
        if seq % 5 == 0:  # 50 a second, in small bursts as a socket delivers them
            page.wait_for_timeout(100)
    page.wait_for_timeout(FLUSH_MS * 3)
    stats = page.evaluate(
        "() => ({...window.renderStats, elapsed: performance.now() - window.renderStats.start})"
    )
    shown = page.locator(f'[data-message-id="{answer.pk}"] .msg-body').inner_text()
    assert shown.strip() == "".join(pieces).strip()
    # Updates are batched: at most one per 50 ms, far fewer than the frames.
    assert stats["flushes"] <= stats["elapsed"] / FLUSH_MS + 2
    assert stats["flushes"] < TOKENS / 2
    # The other 201 messages were left alone.
    assert stats["otherChanges"] == 0
    context.close()
