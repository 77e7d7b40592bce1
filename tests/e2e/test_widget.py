"""The widget in a real browser: a host page on another origin embeds the
script, a visitor chats and finds the conversation again after a reload,
a page on a disallowed origin gets no widget and its socket is refused,
staff answer a handoff live from a second browser context, and messages
from foreign origins are ignored."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from chat.models import WidgetVisitor
from chat.services.widget_identity import visitor_start
from chat.services.widget_sites import widget_site_save
from tests.e2e.conftest import STAFF_PASSWORD, host_page_set_key

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_a_visitor_chats_comes_back_and_talks_to_a_person(
    stack, browser, host_pages, artifacts_dir
):
    folder, (allowed, foreign) = host_pages
    site = widget_site_save(
        data={
            "name": "Fernhollow",
            "allowed_origins": allowed,
            "greeting": "Hi! Ask me about orders and returns.",
            "suggestions": "Where is my order?\nHow do returns work?",
        }
    )
    host_page_set_key(folder, site.public_key)

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    visitor = context.new_page()
    console: list[str] = []
    visitor.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    visitor.goto(allowed)
    visitor.get_by_test_id("widget-launcher").click()
    frame = visitor.frame_locator('[data-testid="widget-container"] iframe')
    frame.get_by_test_id("widget-input").fill("Where is my order 1234?")
    frame.get_by_test_id("widget-send").click()
    answer = frame.locator('[data-testid="widget-answer"][data-status="done"]').last
    answer.wait_for(timeout=180_000)
    first_answer = answer.inner_text()
    assert first_answer.strip()
    visitor.screenshot(path=str(artifacts_dir / "widget-answer.png"))

    # A reload (a new page load): the same conversation is there.
    visitor.reload()
    visitor.get_by_test_id("widget-launcher").click()
    frame = visitor.frame_locator('[data-testid="widget-container"] iframe')
    frame.locator('[data-testid="widget-question"]').first.wait_for(timeout=60_000)
    assert "Where is my order 1234?" in frame.get_by_test_id("widget-messages").inner_text()

    # A message from this page itself is not from the frame: no badge.
    visitor.evaluate(
        "window.postMessage({chatWidget: 1, type: 'unread', count: 7}, location.origin)"
    )
    visitor.wait_for_timeout(300)
    assert visitor.get_by_test_id("widget-unread").count() == 0 or not (
        visitor.get_by_test_id("widget-unread").is_visible()
    )

    # The visitor asks something long, then asks for a person while the
    # answer is still being written: the bot stops there.
    frame.get_by_test_id("widget-input").fill("Tell me everything about your returns policy")
    frame.get_by_test_id("widget-send").click()
    running = frame.locator('[data-testid="widget-answer"]').last
    frame.locator('[data-testid="widget-answer"][data-status="pending"]').first.wait_for(
        timeout=60_000
    )
    frame.get_by_test_id("widget-handoff").click()
    expect(frame.locator('[data-testid="widget-answer"][data-status="pending"]')).to_have_count(
        0, timeout=30_000
    )
    assert running.get_attribute("data-status") in ("cancelled", "done")
    agent = get_user_model().objects.create_user("anna", "anna@example.com", first_name="Anna")
    agent.password = PBKDF2PasswordHasher().encode(STAFF_PASSWORD, PBKDF2PasswordHasher().salt())
    agent.is_staff = True
    agent.save()
    agent.user_permissions.add(Permission.objects.get(codename="answer_visitors"))
    staff_context = browser.new_context(viewport={"width": 1300, "height": 900})
    staff = staff_context.new_page()
    staff.goto(stack["base"] + "/accounts/login/")
    staff.fill('input[name="username"]', "anna")
    staff.fill('input[name="password"]', STAFF_PASSWORD)
    staff.get_by_test_id("login-submit").click()
    staff.wait_for_url(stack["base"] + "/")
    staff.goto(stack["base"] + "/dashboard/inbox/")
    staff.get_by_test_id("inbox").locator('a[href^="/dashboard/inbox/"]').first.click()
    staff.get_by_test_id("take").click()
    frame.get_by_test_id("widget-messages").get_by_text("Anna joined").wait_for(timeout=30_000)
    staff.get_by_test_id("reply-form").locator("textarea").fill(
        "Hello, this is Anna from the shop."
    )
    staff.get_by_test_id("send").click()
    reply = frame.get_by_text("Hello, this is Anna from the shop.")
    reply.wait_for(timeout=30_000)
    # The person's reply is the last message and scrolled into view; the
    # bot's answer above it no longer grows.
    bot_text = running.inner_text()
    visitor.wait_for_timeout(1500)
    assert running.inner_text() == bot_text
    last_message = frame.locator('[data-testid="widget-messages"] > *').last
    assert "Hello, this is Anna from the shop." in last_message.inner_text()
    panel = frame.get_by_test_id("widget-messages").bounding_box()
    shown = reply.bounding_box()
    assert (
        panel["y"] <= shown["y"]
        and shown["y"] + shown["height"] <= panel["y"] + panel["height"] + 1
    )
    # Staff see what the bot had written before they took over.
    assert staff.locator('[data-status="cancelled"], [data-status="done"]').count() >= 2
    staff.screenshot(path=str(artifacts_dir / "dashboard-inbox.png"), full_page=True)
    visitor.screenshot(path=str(artifacts_dir / "widget-handoff.png"))
    staff_context.close()

    # A page on an origin that is not allowed gets no widget, a console
    # message saying why, and a refused socket.
    other = context.new_page()
    other_console: list[str] = []
    other.on("console", lambda m: other_console.append(m.text) if m.type == "error" else None)
    other.goto(foreign)
    other.wait_for_timeout(1500)
    assert other.get_by_test_id("widget-launcher").count() == 0
    assert any("Chat widget" in text and site.public_key in text for text in other_console)
    # The widget socket checks the embedding origin against the site's
    # list (tried from a page of this server, which the socket accepts).
    other.goto(stack["base"] + "/healthz")
    ws_base = stack["base"].replace("http://", "ws://")
    closed = other.evaluate(
        """([url]) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            let welcomed = false;
            ws.onopen = () => ws.send(JSON.stringify({type: "hello", token: null}));
            ws.onmessage = (e) => { if (JSON.parse(e.data).type === "welcome") welcomed = true; };
            ws.onclose = (e) => resolve({code: e.code, welcomed});
        })""",
        [f"{ws_base}/ws/widget/?key={site.public_key}&origin={foreign}"],
    )
    assert closed == {"code": 4403, "welcomed": False}
    assert not [text for text in console if "Chat widget" in text]

    # The frame ignores messages from any origin but its host page's: a
    # foreign page that opens it cannot reset the visitor.
    foreign_page = context.new_page()
    foreign_page.goto(foreign + "/missing.html")
    with context.expect_page() as opened:
        foreign_page.evaluate(
            "([url]) => { window.popup = window.open(url); }",
            [f"{stack['base']}/widget/frame/?key={site.public_key}&origin={allowed}"],
        )
    popup = opened.value
    sent: list[str] = []
    popup.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    popup.get_by_test_id("widget-input").wait_for()
    popup.wait_for_timeout(6000)  # the frame gives its host 5 s to answer "ready"
    foreign_page.evaluate(
        "([target]) => window.popup.postMessage({chatWidget: 1, type: 'reset'}, target)",
        [stack["base"]],
    )
    popup.wait_for_timeout(1000)
    assert any('"hello"' in frame for frame in sent)  # connected, listening
    assert not any('"reset"' in frame for frame in sent)

    # Phones: the open widget fills the screen.
    phone = browser.new_context(viewport={"width": 390, "height": 740})
    small = phone.new_page()
    small.goto(allowed)
    small.get_by_test_id("widget-launcher").click()
    box = small.get_by_test_id("widget-container").bounding_box()
    assert box["width"] >= 380 and box["height"] >= 700
    small.screenshot(path=str(artifacts_dir / "widget-phone.png"))
    phone.close()
    context.close()


def test_a_reset_before_the_widget_opens_revokes_the_forgotten_token(stack, browser, host_pages):
    """A logout page calls ChatWidget.reset() without ever opening the
    widget: the next frame names the forgotten token and the server revokes
    it, so a copy of it opens nothing."""
    folder, (allowed, _foreign) = host_pages
    site = widget_site_save(data={"name": "Fernhollow", "allowed_origins": allowed})
    host_page_set_key(folder, site.public_key)
    token_key = f"chatWidget:{site.public_key}:token"
    revoke_key = f"chatWidget:{site.public_key}:revoke"
    context = browser.new_context()
    page = context.new_page()
    page.goto(allowed)
    page.get_by_test_id("widget-launcher").click()
    page.wait_for_function("([k]) => !!localStorage.getItem(k)", arg=[token_key])
    old = page.evaluate("([k]) => localStorage.getItem(k)", [token_key])
    first = WidgetVisitor.objects.get(site=site)

    page.reload()
    page.wait_for_function("() => window.ChatWidget && window.ChatWidget.loaded")
    page.evaluate("() => window.ChatWidget.reset()")
    assert page.evaluate("([k]) => localStorage.getItem(k)", [token_key]) is None
    assert page.evaluate("([k]) => localStorage.getItem(k)", [revoke_key]) == old

    page.get_by_test_id("widget-launcher").click()
    page.wait_for_function(
        "([t, r, old]) => localStorage.getItem(r) === null"
        " && !!localStorage.getItem(t) && localStorage.getItem(t) !== old",
        arg=[token_key, revoke_key, old],
    )
    assert visitor_start(site=site, token=old) != first
    context.close()
