"""Answers from a knowledge base in a real browser: the widget on another
origin shows the articles an answer was given as source cards, links its
citation marks to them and drops numbers that were not given; a question
the articles have nothing on offers a person. In the chat a member picks
the base for a conversation and sees the same cards."""

from __future__ import annotations

import pytest

from chat.models import Message
from chat.services.widget_sites import widget_site_save
from models_admin.selectors.knowledge import knowledge_cache_clear
from models_admin.services.knowledge import (
    knowledge_base_create,
    knowledge_file_add,
    knowledge_index_build,
)
from tests.e2e.conftest import (
    host_page_set_key,
    last_answer_wait,
    page_problems,
    signup,
    staff_login,
    staff_superuser_create,
)
from tests.models_admin.knowledge_files import SHOP_DOCS

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def help_center(settings):
    # Words alone: the stack's processes have no embedding model folder.
    settings.KNOWLEDGE_EMBEDDING_DIR = ""
    knowledge_cache_clear()
    base = knowledge_base_create(name="Shop help", in_chat=True)
    for name, data in SHOP_DOCS.items():
        knowledge_file_add(base=base, filename=name, data=data, queue=False)
    knowledge_index_build(base_id=base.pk)
    return base


def _cited(answer_id: int, text: str) -> None:
    """Give a finished answer citation marks (a tiny random model writes
    none), as a model's stored answer would have them."""
    Message.objects.filter(pk=answer_id).update(content=text)


def test_widget_answers_show_their_sources_and_offer_a_person_when_nothing_fits(
    stack, browser, host_pages, help_center, artifacts_dir
):
    folder, (allowed, _foreign) = host_pages
    site = widget_site_save(data={"name": "Shop", "allowed_origins": allowed})
    site.knowledge_base = help_center
    site.save(update_fields=["knowledge_base"])
    host_page_set_key(folder, site.public_key)

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    visitor = context.new_page()
    problems = page_problems(visitor)
    visitor.goto(allowed)
    visitor.get_by_test_id("widget-launcher").click()
    frame = visitor.frame_locator('[data-testid="widget-container"] iframe')
    frame.get_by_test_id("widget-input").fill("Do you deliver to Norway?")
    frame.get_by_test_id("widget-send").click()
    answer = frame.locator('[data-testid="widget-answer"][data-status="done"]').last
    answer.wait_for(timeout=180_000)
    cards = answer.locator('[data-testid="source-card"]')
    assert cards.count() >= 1
    assert "Countries" in cards.first.inner_text()
    assert "Parcels to Canada" in cards.first.inner_text()

    # Its stored text cites passage 1 and a number it was not given.
    stored = Message.objects.filter(role="assistant").latest("pk")
    _cited(stored.pk, "We ship to Norway [1], see also [9].")
    visitor.reload()
    visitor.get_by_test_id("widget-launcher").click()
    frame = visitor.frame_locator('[data-testid="widget-container"] iframe')
    answer = frame.locator('[data-testid="widget-answer"]').last
    answer.locator('[data-testid="citation"]').first.wait_for(timeout=60_000)
    assert answer.locator('[data-testid="citation"]').count() == 1
    link = answer.locator('[data-testid="citation"]').first
    assert link.get_attribute("href") == f"#wsrc-{stored.pk}-1"
    assert "[9]" not in answer.inner_text()
    visitor.screenshot(path=str(artifacts_dir / "knowledge-widget-sources.png"))

    # Nothing in the articles: the base's reply, and a person offered.
    frame.get_by_test_id("widget-input").fill("What is the capital of Peru?")
    frame.get_by_test_id("widget-send").click()
    frame.locator('[data-testid="widget-answer"]').nth(1).wait_for(timeout=60_000)
    reply = frame.locator('[data-testid="widget-answer"]').last
    assert help_center.nothing_found[:30] in reply.inner_text()
    offer = frame.get_by_test_id("widget-handoff-offer-button")
    offer.wait_for(timeout=10_000)
    visitor.screenshot(path=str(artifacts_dir / "knowledge-widget-nothing.png"))
    offer.click()
    frame.get_by_text("Waiting for a person").wait_for(timeout=30_000)
    # (The host page's own server has no favicon: "File not found".)
    assert [p for p in problems if "File not found" not in p] == []
    context.close()


def test_a_member_picks_a_knowledge_base_and_sees_the_sources(
    stack, browser, help_center, artifacts_dir
):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = page_problems(page)
    signup(page, stack["base"], "reader")
    picker = page.get_by_test_id("knowledge-picker")
    picker.wait_for(state="visible", timeout=30_000)
    picker.select_option(label="Shop help")
    page.get_by_test_id("composer-input").fill("How long does the large candle burn?")
    page.get_by_test_id("send").click()
    assert last_answer_wait(page) == "done"
    answer = page.locator('[data-testid="assistant-message"]').last
    cards = answer.locator('[data-testid="source-card"]')
    assert cards.count() >= 1
    assert "Burn time" in cards.first.inner_text()

    stored = Message.objects.filter(role="assistant").latest("pk")
    assert stored.conversation.knowledge_base_id == help_center.pk
    _cited(stored.pk, "About **45 hours** [1]. Trim the wick first [2][8].")
    page.reload()
    answer = page.locator('[data-testid="assistant-message"]').last
    answer.locator('[data-testid="citation"]').first.wait_for(timeout=30_000)
    given = len(stored.knowledge["passages"])
    assert answer.locator('[data-testid="citation"]').count() == min(given, 2)
    assert "[8]" not in answer.inner_text()
    answer.locator('[data-testid="citation"]').first.click()
    assert page.evaluate("location.hash") == f"#src-{stored.pk}-1"
    # The picker remembers the conversation's base.
    assert picker.input_value() == str(help_center.pk)
    page.screenshot(path=str(artifacts_dir / "knowledge-chat-1280-light.png"))
    # On a phone, in dark: the cards stack, nothing scrolls sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    page.reload()
    page.locator('[data-testid="source-card"]').first.wait_for(timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(artifacts_dir / "knowledge-chat-390-dark.png"))
    assert problems == []
    context.close()


def test_staff_test_a_question_and_ask_the_model_from_the_dashboard(
    stack, browser, help_center, artifacts_dir
):
    staff_superuser_create("librarian")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = page_problems(page)
    staff_login(page, stack["base"], "librarian")
    page.goto(f"{stack['base']}/dashboard/knowledge/{help_center.pk}/#test")
    page.get_by_test_id("test-box").locator("input[name=q]").fill("Do you deliver to Norway?")
    page.get_by_test_id("run-test").click()
    page.get_by_test_id("test-outcome").wait_for()
    assert "Found" in page.get_by_test_id("test-outcome").inner_text()
    assert "Countries" in page.get_by_test_id("test-result").inner_text()
    page.get_by_test_id("ask-model-button").click()
    status = page.get_by_test_id("ask-model-status")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=ask-model-status]').textContent"
        ".startsWith('Done')",
        timeout=120_000,
    )
    assert page.get_by_test_id("ask-model-answer").inner_text().strip()
    assert "tokens" in status.inner_text()
    page.get_by_test_id("test-box").screenshot(path=str(artifacts_dir / "knowledge-ask.png"))
    assert problems == []
    context.close()
