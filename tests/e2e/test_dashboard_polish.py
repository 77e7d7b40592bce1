"""Three dashboard pages in a real browser, at desktop (1280x900) and
phone (390x844) widths, light and dark: the compare page's prompts sit
beside (or above) the answers without printing over them, the usage page
names widget visitors and answers no model wrote, and the datasets page
creates the demo dataset with one button. Screenshots of every case land
in var/test-artifacts/."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from chat.models import Conversation, Message, WidgetVisitor
from chat.services.widget_sites import widget_site_save
from models_admin.models import Dataset, ModelVersion
from models_admin.services import model_version_create
from models_admin.services.datasets import DEMO_NAME
from tests.e2e.conftest import staff_login, staff_superuser_create

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")

LONG_PROMPT = (
    "A customer writes: I ordered the walnut bookshelf three weeks ago, paid for express "
    "delivery, and the tracking page has said 'label created' ever since. Explain, step by "
    "step, what you would check, what you would tell them, and when you would offer a "
    "refund. Their order link: https://shop.example/orders/2025/ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "0123456789abcdefghijklmnopqrstuvwxyz"
)
ANSWERS = {
    "tiny": [
        (LONG_PROMPT, "First I would look the parcel up with the carrier.\nThen I would write."),
        ("Opening hours?", "Nine to six, Monday to Saturday."),
    ],
    "tiny-b": [
        (LONG_PROMPT, "Sorry for the wait! The label exists but the carrier never scanned it."),
        ("Opening hours?", "We open at nine."),
    ],
}

# The prompt's text, not its cell: the bug was text running out of a cell
# that itself kept its width. A Range measures where the glyphs are.
_PROMPT_LAYOUT = """
(row) => {
  const prompt = row.querySelector("th.prompt");
  const answer = row.querySelector("td");
  const range = document.createRange();
  range.selectNodeContents(prompt);
  const text = range.getBoundingClientRect();
  const cell = answer.getBoundingClientRect();
  return {
    text: {left: text.left, right: text.right, top: text.top, bottom: text.bottom},
    answer: {left: cell.left, right: cell.right, top: cell.top, bottom: cell.bottom},
    overflow: prompt.scrollWidth - prompt.clientWidth,
    lines: Math.round(text.height / parseFloat(getComputedStyle(prompt).lineHeight)),
  };
}
"""


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and b["top"] < a["bottom"]
    )


def _errors_collect(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def _no_sideways_scroll(page, name: str) -> None:
    """The page fits its width: wide tables scroll inside their box."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{name}: the page is {width}px wide"


def _seed_usage() -> None:
    """Today: two visitors of a widget site, a signed-in user's answer and
    a question a filter blocked (its answer has no version)."""
    site = widget_site_save(
        data={"name": "Fernhollow shop", "allowed_origins": "https://shop.example"}
    )
    production = ModelVersion.objects.get(name="tiny")
    owner = get_user_model().objects.create_user("chatter")
    conversations = [
        Conversation.objects.create(user=owner, title="Orders"),
        *(
            Conversation.objects.create(
                site=site,
                visitor=WidgetVisitor.objects.create(site=site, token=uuid.uuid4()),
                source=Conversation.Source.WIDGET,
            )
            for _ in range(2)
        ),
    ]
    when = timezone.now() - timedelta(minutes=5)
    for index, conversation in enumerate(conversations):
        question = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content="Where is my order?"
        )
        Message.objects.create(
            conversation=conversation,
            parent=question,
            role=Message.Role.ASSISTANT,
            content="On its way.",
            model_version=production,
            model_version_name=production.name,
            prompt_tokens=12 + index,
            completion_tokens=4,
            timings={"ttft_s": 0.1, "total_s": 0.4},
            finished_at=when,
        )
    blocked = Message.objects.create(
        conversation=conversations[0], role=Message.Role.USER, content="something rude"
    )
    Message.objects.create(
        conversation=conversations[0],
        parent=blocked,
        role=Message.Role.ASSISTANT,
        status=Message.Status.BLOCKED,
        content="Let's keep this friendly.",
        finish_reason="content_filter",
        finished_at=when,
    )


def _compare_check(page, name: str, wide: bool) -> None:
    rows = page.locator('[data-testid="compare-answers"] tbody tr')
    assert rows.count() == 2
    for index in range(rows.count()):
        layout = rows.nth(index).evaluate(_PROMPT_LAYOUT)
        assert not _overlap(layout["text"], layout["answer"]), (name, index, layout)
        assert layout["overflow"] <= 0, (name, index, layout)
        if wide:  # beside the answers, in the same row
            assert layout["text"]["right"] <= layout["answer"]["left"], (name, layout)
        else:  # above the answers
            assert layout["text"]["bottom"] <= layout["answer"]["top"], (name, layout)
    first = rows.first.evaluate(_PROMPT_LAYOUT)
    assert first["lines"] >= 3, f"{name}: the long prompt wraps ({first})"


def _usage_check(page, name: str) -> None:
    table = page.get_by_test_id("usage-top-users")
    text = table.inner_text()
    assert "Widget visitors (Fernhollow shop)" in text, text
    assert "2 visitors without an account" in text, text
    assert "None" not in text and "null" not in text, text
    legend = page.locator("#chart-requests").inner_text()
    assert "No model (blocked by a filter)" in legend, legend
    assert "unknown" not in legend, legend


def test_compare_usage_and_datasets_read_well_at_desktop_and_phone_widths_in_both_themes(
    stack, browser, artifacts_dir, tiny_model_dir
):
    base = stack["base"]
    other = model_version_create(name="tiny-b", folder=tiny_model_dir)
    for version_name, answers in ANSWERS.items():
        ModelVersion.objects.filter(name=version_name).update(
            answers=[{"prompt": prompt, "answer": answer} for prompt, answer in answers]
        )
    production = ModelVersion.objects.get(name="tiny")
    _seed_usage()
    staff_superuser_create("operator")

    login = browser.new_context()
    staff_login(login.new_page(), base, "operator")
    signed_in = login.storage_state()
    login.close()

    compare_url = f"{base}/dashboard/versions/compare/?v={production.pk}&v={other.pk}"
    for size, viewport in VIEWPORTS.items():
        for scheme in SCHEMES:
            name = f"{size}-{scheme}"
            context = browser.new_context(
                viewport=viewport, color_scheme=scheme, storage_state=signed_in
            )
            page = context.new_page()
            errors = _errors_collect(page)

            page.goto(compare_url)
            page.wait_for_selector('[data-testid="compare-answers"]')
            _compare_check(page, name, wide=size == "desktop")
            _no_sideways_scroll(page, f"compare {name}")
            page.get_by_test_id("compare-answers").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts_dir / f"polish-compare-{name}.png"))
            page.screenshot(
                path=str(artifacts_dir / f"polish-compare-{name}-full.png"), full_page=True
            )

            page.goto(f"{base}/dashboard/usage/?period=24h")
            page.wait_for_selector("#chart-requests svg")
            _usage_check(page, name)
            # The page's live refresh rebuilds the table from JSON: the
            # same labels must come out of the script.
            # (A tab coming back into view refreshes at once: no wait for
            # the next poll.)
            page.evaluate(
                "() => { document.querySelectorAll('[data-rows=top_users] tr')"
                ".forEach((tr) => { tr.dataset.served = '1'; });"
                " document.dispatchEvent(new Event('visibilitychange')); }"
            )
            page.wait_for_function(
                "() => !document.querySelector('[data-rows=top_users] tr[data-served]')",
                timeout=20_000,
            )
            _usage_check(page, name)
            _no_sideways_scroll(page, f"usage {name}")
            page.get_by_test_id("usage-top-users").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts_dir / f"polish-usage-{name}.png"))
            page.screenshot(
                path=str(artifacts_dir / f"polish-usage-{name}-full.png"), full_page=True
            )

            page.goto(f"{base}/dashboard/training/datasets/")
            page.wait_for_selector('[data-testid="datasets"]')
            _no_sideways_scroll(page, f"datasets {name}")
            if not Dataset.objects.filter(name=DEMO_NAME).exists():
                page.screenshot(path=str(artifacts_dir / f"polish-datasets-{name}.png"))
                page.get_by_test_id("create-demo-dataset").click()
                page.wait_for_url(re.compile(r".*/dashboard/training/datasets/\d+/$"))
                flash = page.locator(".flash").inner_text()
                assert "The demo dataset is stored: 270 training and 30 eval" in flash, flash
                demo = Dataset.objects.get(name=DEMO_NAME)
                assert demo.source == Dataset.Source.DEMO
                assert page.url.endswith(f"/dashboard/training/datasets/{demo.pk}/")
                page.screenshot(path=str(artifacts_dir / f"polish-demo-dataset-{name}.png"))
            else:
                # Made in an earlier pass: the list links to it instead.
                link = page.get_by_test_id("demo-dataset")
                assert link.get_attribute("href").endswith(
                    f"/dashboard/training/datasets/{Dataset.objects.get(name=DEMO_NAME).pk}/"
                )
                assert page.get_by_test_id("create-demo-dataset").count() == 0
                page.screenshot(path=str(artifacts_dir / f"polish-datasets-{name}.png"))

            assert errors == [], (name, errors)
            context.close()
    assert Dataset.objects.filter(name=DEMO_NAME).count() == 1
