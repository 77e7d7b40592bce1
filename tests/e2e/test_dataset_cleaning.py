"""Cleaning a dataset in a real browser, at desktop (1280x900) and phone
(390x844) widths, light and dark: the preview lists why examples change
without a policy violation or sideways scrolling, and the form stores the
cleaned copy, whose page names its original. Screenshots land in
var/test-artifacts/."""

from __future__ import annotations

import pytest

from models_admin.filters import filter_rule_save
from models_admin.models import Dataset
from models_admin.services.datasets import dataset_create
from tests.e2e.conftest import page_problems, staff_login, staff_superuser_create

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")

LONG = "Please read the whole of this before you answer, it matters to me. " * 6


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


CONVERSATIONS = [
    _chat("How do returns work?", "Send it back within 30 days for a full refund."),
    _chat(
        f"{LONG}My card is 4111 1111 1111 1111, why was it charged twice? {LONG}",
        "I cannot see card numbers; our team will look at the charges.",
    ),
    _chat("Tell me about the blorkfest sale", "The sale starts on Monday."),
    _chat("<script>alert(1)</script> where is my parcel?", "It ships from our zorbex site."),
    _chat("Do you ship abroad?", "Yes, we ship to most countries in Europe."),
    _chat("Do you ship abroad??", "Yes, we ship to most countries in Europe!"),
    _chat("Can I pay by invoice?", "Yes, for orders over 100 euros."),
]


def _rules() -> None:
    for data in (
        {"name": "cards", "kind": "preset", "preset": "card", "scope": "input", "action": "mask"},
        {"name": "banned event", "kind": "keywords", "keywords": "blorkfest", "action": "block"},
        {
            "name": "internal site",
            "kind": "keywords",
            "keywords": "zorbex",
            "scope": "output",
            "action": "block",
        },
        {
            "name": "refunds",
            "kind": "keywords",
            "keywords": "refund",
            "scope": "output",
            "action": "flag",
        },
    ):
        filter_rule_save(data=data, by=None)


def _no_sideways_scroll(page, name: str) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{name}: the page is {width}px wide"


def test_the_cleaning_page_reads_well_and_stores_a_copy_that_names_its_original(
    stack, browser, artifacts_dir
):
    base = stack["base"]
    _rules()
    dataset = dataset_create(name="Shop talk", conversations=CONVERSATIONS, source="upload")
    staff_superuser_create("cleaner")
    login = browser.new_context()
    staff_login(login.new_page(), base, "cleaner")
    signed_in = login.storage_state()
    login.close()

    url = f"{base}/dashboard/training/datasets/{dataset.pk}/clean/"
    for size, viewport in VIEWPORTS.items():
        for scheme in SCHEMES:
            name = f"{size}-{scheme}"
            context = browser.new_context(
                viewport=viewport, color_scheme=scheme, storage_state=signed_in
            )
            page = context.new_page()
            problems = page_problems(page)
            page.goto(url)
            page.wait_for_selector('[data-testid="clean-changed"]')
            assert page.locator('[data-count="drop"]').inner_text() == "2"
            assert page.locator("[data-example]").count() == 4
            assert page.locator("del", has_text="4111 1111 1111 1111").count() == 1
            assert "<script>alert(1)</script>" in page.locator('[data-example="3"]').inner_text()
            _no_sideways_scroll(page, name)
            page.screenshot(path=str(artifacts_dir / f"dataset-clean-{name}.png"))
            page.screenshot(
                path=str(artifacts_dir / f"dataset-clean-{name}-full.png"), full_page=True
            )
            page.get_by_test_id("clean-changed").screenshot(
                path=str(artifacts_dir / f"dataset-clean-{name}-changed.png")
            )
            assert not problems, (name, problems)
            context.close()

    context = browser.new_context(viewport=VIEWPORTS["desktop"], storage_state=signed_in)
    page = context.new_page()
    problems = page_problems(page)
    page.goto(f"{base}/dashboard/training/datasets/{dataset.pk}/")
    page.get_by_test_id("clean-dataset").click()
    page.wait_for_selector('[data-testid="clean-form"]')
    page.get_by_label("Leave out near duplicates (all but the first)").check()
    page.get_by_test_id("clean-submit").click()
    page.wait_for_selector('[data-testid="cleaned-from"]')
    cleaned = Dataset.objects.get(name="Shop talk (clean)")
    assert page.url == f"{base}/dashboard/training/datasets/{cleaned.pk}/"
    assert cleaned.stats["examples"] == 4
    origin = page.get_by_test_id("cleaned-from").inner_text()
    assert "Shop talk" in origin and "1 near duplicate left out" in origin
    page.screenshot(path=str(artifacts_dir / "dataset-cleaned-copy.png"), full_page=True)
    page.get_by_test_id("cleaned-from").get_by_role("link").click()
    page.wait_for_selector('[data-testid="cleaned-copies"]')
    assert "Shop talk (clean)" in page.get_by_test_id("cleaned-copies").inner_text()
    assert not problems, problems
    context.close()
