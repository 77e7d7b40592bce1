"""The site in Chinese in a real browser: Chromium set to zh-CN signs up,
chats and opens the staff dashboard, and every text on the page, those
its scripts write included (the composer's placeholder, the answer's
buttons, the conversation list's date groups, the dashboard's live
figures), is Chinese. Screenshots of the chat and the dashboard, on a
laptop and a phone, land in artifacts_dir."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.conftest import (
    last_answer_wait,
    page_problems,
    staff_login,
    staff_superuser_create,
)
from tests.untranslated import texts_report, untranslated

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
QUESTION = "你好\uff0c请介绍一下你自己\u3002"

# The page as it stands after its scripts ran, less what a model wrote
# (the tiny test model answers in English-looking noise).
_RENDERED = """() => {
  const copy = document.documentElement.cloneNode(true);
  for (const node of copy.querySelectorAll('.msg-body, .md-image')) node.remove();
  return copy.outerHTML;
}"""


@pytest.fixture
def chinese(browser):
    context = browser.new_context(locale="zh-CN", viewport=LAPTOP)
    page = context.new_page()
    yield page
    context.close()


def _shots(page, artifacts_dir, name: str) -> None:
    for size, label in ((LAPTOP, "1280"), (PHONE, "390")):
        page.set_viewport_size(size)
        page.wait_for_timeout(200)
        page.screenshot(path=str(artifacts_dir / f"i18n-{name}-{label}.png"), full_page=True)
    page.set_viewport_size(LAPTOP)


def _left(page, allowed: list[str]) -> list[str]:
    return untranslated(page.evaluate(_RENDERED), allowed=allowed)


def test_the_chat_and_the_dashboard_speak_chinese(stack, chinese, artifacts_dir):
    page = chinese
    base = stack["base"]
    problems = page_problems(page)
    staff_superuser_create("wang")
    # The names the test made, and the workers' host name.
    allowed = ["wang", "wang@example.com", "tiny", "Chat", socket.gethostname()]

    # Visitors' pages: the browser's language, with a switcher.
    page.goto(base + "/")
    assert page.evaluate("document.documentElement.lang") == "zh-hans"
    found = {"landing": _left(page, allowed)}
    page.goto(base + "/accounts/login/")
    found["login"] = _left(page, allowed)
    assert page.get_by_test_id("language-select").input_value() == "zh-hans"

    # The chat: the page, then what its scripts add while a question is
    # answered.
    staff_login(page, base, "wang")
    composer = page.get_by_test_id("composer-input")
    assert composer.get_attribute("placeholder") == "消息"
    composer.fill(QUESTION)
    page.get_by_test_id("send").click()
    last_answer_wait(page)
    answer = page.locator('[data-testid="assistant-message"]').last
    actions = answer.locator(".msg-actions")
    assert actions.get_by_role("button", name="复制", exact=True).count() == 1
    assert actions.get_by_role("button", name="重新生成", exact=True).count() == 1
    list_ = page.get_by_test_id("conversation-list")
    list_.get_by_text("今天").wait_for()
    assert "Today" not in list_.inner_text()
    page.get_by_test_id("open-shortcuts").click()
    assert page.get_by_test_id("shortcuts-dialog").get_by_text("键盘快捷键").is_visible()
    found["chat"] = _left(page, allowed)
    page.keyboard.press("Escape")
    _shots(page, artifacts_dir, "chat")

    # The dashboard: the overview with its live figures, then the usage
    # page's charts and tables, which its script draws.
    page.goto(base + "/dashboard/")
    page.locator("[data-live-status]").wait_for()
    found["dashboard"] = _left(page, allowed)
    _shots(page, artifacts_dir, "dashboard")
    page.goto(base + "/dashboard/usage/")
    page.locator("svg").first.wait_for()
    found["usage"] = _left(page, allowed)
    _shots(page, artifacts_dir, "usage")
    page.goto(base + "/dashboard/versions/")
    found["versions"] = _left(page, allowed)

    assert not any(found.values()), "Untranslated:\n" + texts_report(found)
    assert not problems, problems
