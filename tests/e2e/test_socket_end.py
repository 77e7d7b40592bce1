"""How the chat page and the widget frame take the end of their socket, in
a real browser. Both follow answers through static/js/stream_client.js;
the socket is served by the test (Playwright's WebSocket routing), so the
closes and the frames around them are exact, while the pages, their
scripts and the data behind them come from the live Django server.

A server restart (close 1012) mid-answer: the page says it is
reconnecting, comes back by itself and ends with the answer shown once,
though the new socket repeats events the page had shown. A close that
ends the session (the chat page's log-out, the widget's removed site):
the page says so and stays closed."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from chat.services.conversations import conversation_create
from chat.services.messages import message_send
from chat.services.widget_sites import widget_site_save
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

HOST_ORIGIN = "https://shop.example"
RESTART = 1012
#: Longer than any retry the pages wait after a close they come back from.
NO_RETRY_WINDOW_MS = 2000
TIMEOUT_MS = 15_000


@dataclass
class Scene:
    """One page, its socket and how the test's server talks to it."""

    url: str
    socket_glob: str
    app: str  # the element with data-connected
    status: str  # the connection line
    answer: int  # the pending answer's message id
    body: str  # the answer's text element, within its message
    final_code: int
    final_text: str
    cookies: list[dict[str, Any]]
    widget: bool

    def answer_text(self, page) -> str:
        return page.locator(f'[data-message-id="{self.answer}"] {self.body}').inner_text()


class Server:
    """Every socket the page opens, and the frames each one received."""

    def __init__(self) -> None:
        self.sockets: list = []
        self.received: list[list[dict]] = []

    def serve(self, ws) -> None:
        frames: list[dict] = []
        self.sockets.append(ws)
        self.received.append(frames)
        ws.on_message(lambda raw: frames.append(json.loads(raw)))

    def first(self, index: int, kind: str) -> dict | None:
        if index >= len(self.received):
            return None
        return next((f for f in self.received[index] if f.get("type") == kind), None)


def _until(page, predicate) -> None:
    """Poll predicate, letting the page's events in between (Playwright
    delivers them only while the test waits on it)."""
    for _ in range(TIMEOUT_MS // 50):
        if predicate():
            return
        page.wait_for_timeout(50)
    raise AssertionError("condition not met in time")


def _event(answer: int, seq: int, text: str | None = None) -> str:
    if text is None:
        return json.dumps({"type": "generation.start", "message": answer, "seq": seq})
    return json.dumps({"type": "generation.text", "message": answer, "seq": seq, "text": text})


def _chat_scene(live_server) -> Scene:
    user = UserFactory()
    conversation = conversation_create(user=user, title="Parcel")
    sent = message_send(
        user=user, conversation=conversation, content="Where is it?", client_id=uuid.uuid4()
    )
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return Scene(
        url=f"{live_server.url}/c/{conversation.pk}/",
        socket_glob="**/ws/chat/",
        app="#chat-app",
        status="#connection",
        answer=sent.answer.pk,
        body=".msg-body",
        final_code=4401,
        final_text="Logged out. Log in again to chat.",
        cookies=[{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}],
        widget=False,
    )


def _widget_scene(live_server) -> Scene:
    site = widget_site_save(data={"name": "Shop", "allowed_origins": HOST_ORIGIN})
    return Scene(
        url=f"{live_server.url}/widget/frame/?key={site.public_key}&origin={HOST_ORIGIN}",
        socket_glob="**/ws/widget/**",
        app='[data-testid="widget-app"]',
        status='[data-testid="widget-status"]',
        answer=12,
        body=".bubble",
        final_code=4404,
        final_text="This chat is no longer available.",
        cookies=[],
        widget=True,
    )


def _welcome(answer: int) -> str:
    """The widget's welcome with a question and its running answer."""
    messages = [
        {"id": answer - 1, "role": "user", "status": "done", "content": "Where is it?"},
        {"id": answer, "role": "assistant", "status": "pending", "content": ""},
    ]
    return json.dumps(
        {
            "type": "welcome",
            "token": "visitor-token",
            "conversation": {"conversation": {"id": 3, "title": "Chat"}, "messages": messages},
            "handoff": {"state": "none"},
            "online": True,
        }
    )


def _greet(page, server: Server, scene: Scene, index: int) -> dict:
    """Wait for the page's first frame on socket index; answer a widget's
    hello. Return that frame."""
    kind = "hello" if scene.widget else "conversation.open"
    _until(page, lambda: server.first(index, kind) is not None)
    if scene.widget:
        server.sockets[index].send(_welcome(scene.answer))
    return server.first(index, kind)


@pytest.mark.parametrize("kind", ["chat", "widget"])
def test_a_restart_resumes_the_answer_once_and_a_session_end_stays_closed(
    kind, live_server, transactional_db, browser
):
    """After a restart the page resumes and shows every piece once; after
    its final close code it shows why and opens no new socket."""
    scene = _chat_scene(live_server) if kind == "chat" else _widget_scene(live_server)
    server = Server()
    context = browser.new_context()
    if scene.cookies:
        context.add_cookies(scene.cookies)
    page = context.new_page()
    page.route_web_socket(scene.socket_glob, server.serve)
    page.goto(scene.url)
    assert page.evaluate("() => typeof window.ChatStream.connection") == "function"

    first = _greet(page, server, scene, 0)
    page.wait_for_selector(f'{scene.app}[data-connected="yes"]')
    if not scene.widget:
        assert first["after"] == {str(scene.answer): 0}
    server.sockets[0].send(_event(scene.answer, 1))
    server.sockets[0].send(_event(scene.answer, 2, "Your parcel"))
    _until(page, lambda: scene.answer_text(page).strip() == "Your parcel")

    # The server restarts: the page notices, waits and comes back.
    server.sockets[0].close(code=RESTART, reason="restart")
    page.wait_for_selector(f'{scene.app}[data-connected="no"]')
    page.wait_for_function(
        "(selector) => document.querySelector(selector).textContent.includes('Reconnecting')",
        arg=scene.status,
    )
    assert scene.answer_text(page).strip() == "Your parcel"
    again = _greet(page, server, scene, 1)
    page.wait_for_selector(f'{scene.app}[data-connected="yes"]')
    if scene.widget:
        # The visitor is the one the server named, and the server replays
        # the running answer from its start.
        assert again["token"] == "visitor-token"
        replay = [_event(scene.answer, 1), _event(scene.answer, 2, "Your parcel")]
    else:
        # The page asks for what follows the last number it showed; the
        # server repeats that one anyway.
        assert again["after"] == {str(scene.answer): 2}
        replay = [_event(scene.answer, 2, "Your parcel")]
    # A repeated number is shown once, whatever socket repeats it.
    last = _event(scene.answer, 3, " ships today.")
    for frame in [*replay, last, last]:
        server.sockets[1].send(frame)
    _until(page, lambda: scene.answer_text(page).strip() == "Your parcel ships today.")

    # The session ends: the page says so and does not knock again.
    server.sockets[1].close(code=scene.final_code, reason="ended")
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector).textContent === text",
        arg=[scene.status, scene.final_text],
    )
    page.wait_for_timeout(NO_RETRY_WINDOW_MS)
    assert len(server.sockets) == 2
    assert page.locator(scene.status).text_content() == scene.final_text
    assert scene.answer_text(page).strip() == "Your parcel ships today."
    context.close()
