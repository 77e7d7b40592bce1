"""Staff in a real browser against the live stack: the dashboard pages,
a promotion while a user's answer streams (it finishes on the old
version, the next turn uses the new one), comparing versions with
answers streamed in parallel, rollback, training and review pages.
Screenshots of every page land in var/test-artifacts/."""

from __future__ import annotations

import re

import pytest

from models_admin.models import Dataset, ModelVersion, Promotion, ReviewEvent
from models_admin.services import model_version_create
from models_admin.services.datasets import dataset_create
from tests.e2e.conftest import last_answer_wait, signup, staff_login, staff_superuser_create
from tests.e2e.test_chat import ANSWER, _wait_text_longer_than

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _no_page_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def test_staff_promote_while_a_chat_streams_compare_and_roll_back(
    stack, browser, page, artifacts_dir, tiny_model_dir
):
    base = stack["base"]
    candidate = model_version_create(name="tiny-b", folder=tiny_model_dir)
    staff_superuser_create("operator")

    # A user chats; staff get the promotion ready in the dashboard.
    signup(page, base, "chatter")
    page.get_by_test_id("composer-input").fill("Hi!")
    page.keyboard.press("Enter")
    assert last_answer_wait(page) == "done"
    page.get_by_test_id("open-settings").click()
    page.fill('input[name="max_tokens"]', "1500")
    page.get_by_test_id("settings-save").click()
    page.wait_for_selector("#settings-dialog[open]", state="detached")

    staff_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    staff = staff_context.new_page()
    errors = _no_page_errors(staff)
    staff_login(staff, base, "operator")
    staff.get_by_test_id("dashboard-link").click()
    staff.wait_for_selector('[data-testid="overview-production"]')
    assert "tiny" in staff.get_by_test_id("overview-production").inner_text()
    staff.screenshot(path=str(artifacts_dir / "dashboard-overview.png"), full_page=True)
    staff.goto(f"{base}/dashboard/versions/")
    staff.wait_for_selector('[data-testid="versions-table"]')
    staff.screenshot(path=str(artifacts_dir / "dashboard-versions.png"), full_page=True)
    staff.goto(f"{base}/dashboard/versions/{candidate.pk}/promote/")
    staff.wait_for_selector('[data-testid="promote-deltas"]')
    staff.fill('[data-testid="promote-form"] textarea[name="note"]', "same weights, new name")
    staff.screenshot(path=str(artifacts_dir / "dashboard-promote.png"), full_page=True)

    # A long answer streams while the candidate is promoted.
    page.get_by_test_id("composer-input").fill("Tell me a long story.")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'{ANSWER}[data-status="pending"]')
    _wait_text_longer_than(page, 20)
    staff.locator('[data-testid="promote-form"] button[type="submit"]').click()
    staff.wait_for_load_state()
    assert ModelVersion.objects.get(pk=candidate.pk).state == ModelVersion.State.PRODUCTION
    streamed = len(page.locator(f"{ANSWER} .msg-body").last.inner_text())
    _wait_text_longer_than(page, streamed + 20)  # still streaming after the swap

    # The running answer finishes on the old version without an error...
    page.get_by_test_id("stop").click()
    assert last_answer_wait(page) in ("done", "cancelled")
    assert page.get_by_test_id("model-label").last.inner_text() == "tiny"
    # ...and the next turn is answered by the new one.
    page.get_by_test_id("open-settings").click()
    page.fill('input[name="max_tokens"]', "24")
    page.get_by_test_id("settings-save").click()
    page.wait_for_selector("#settings-dialog[open]", state="detached")
    page.get_by_test_id("composer-input").fill("And then?")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=assistant-message]').length === 3"
    )
    assert last_answer_wait(page) == "done"
    assert page.get_by_test_id("model-label").last.inner_text() == "tiny-b"
    page.screenshot(path=str(artifacts_dir / "chat-after-promotion.png"))

    # Compare both versions and ask them a new question in parallel.
    old = ModelVersion.objects.get(name="tiny")
    staff.goto(f"{base}/dashboard/versions/compare/?v={old.pk}&v={candidate.pk}")
    staff.wait_for_selector('[data-testid="compare-metrics"]')
    staff.fill('textarea[name="question"]', "Which is better, tea or coffee?")
    staff.click("[data-ask-submit]")
    for version in (old, candidate):
        staff.wait_for_function(
            "(id) => { const c = document.querySelector(`[data-ask-version='${id}']`);"
            " return c && c.querySelector('[data-ask-stats]').textContent.trim().length > 0; }",
            arg=version.pk,
            timeout=120_000,
        )
        output = staff.locator(f"[data-ask-version='{version.pk}'] [data-ask-output]")
        assert output.inner_text().strip()
    staff.screenshot(path=str(artifacts_dir / "dashboard-compare.png"), full_page=True)

    # Roll back from the promotions page.
    staff.goto(f"{base}/dashboard/versions/promotions/")
    staff.wait_for_selector('[data-testid="promotions"]')
    staff.screenshot(path=str(artifacts_dir / "dashboard-promotions.png"), full_page=True)
    staff.once("dialog", lambda dialog: dialog.accept())
    staff.get_by_test_id("rollback").click()
    staff.wait_for_load_state()
    last = Promotion.objects.select_related("to_version", "by").first()
    assert (last.to_version.name, last.by.username) == ("tiny", "operator")

    # Usage shows the answers written above; workers are healthy.
    staff.goto(f"{base}/dashboard/usage/?period=24h")
    staff.wait_for_selector('[data-testid="usage-workers"]')
    requests = int(re.sub(r"\D", "", staff.get_by_test_id("total-requests").inner_text()))
    assert requests >= 2
    assert "ready" in staff.get_by_test_id("usage-workers").inner_text()
    staff.screenshot(path=str(artifacts_dir / "dashboard-usage.png"), full_page=True)

    # Training: start a short fine-tune from the form and watch it finish
    # with its curves drawn live.
    dataset = dataset_create(
        name="greetings",
        conversations=[
            [{"role": "user", "content": f"Hello {i}"}, {"role": "assistant", "content": "Hi!"}]
            for i in range(8)
        ],
        source=Dataset.Source.UPLOAD,
        eval_fraction=0.25,
    )
    staff.goto(f"{base}/dashboard/training/new/?dataset={dataset.pk}")
    for name, value in {"steps": "4", "checkpoint_every": "2", "eval_every": "2"}.items():
        staff.fill(f'input[name="{name}"]', value)
    staff.fill('input[name="eval_examples"]', "2")
    staff.screenshot(path=str(artifacts_dir / "dashboard-new-job.png"), full_page=True)
    staff.get_by_test_id("start-job").click()
    staff.wait_for_url(re.compile(r".*/dashboard/training/\d+/$"))
    staff.wait_for_function(
        "() => document.querySelector('[data-testid=job-state]').textContent.trim()"
        " === 'Completed'",
        timeout=240_000,
    )
    assert staff.locator(".chart svg path.series-line").count() >= 2
    staff.wait_for_timeout(600)  # let the progress bar finish its transition
    staff.screenshot(path=str(artifacts_dir / "dashboard-job.png"), full_page=True)
    staff.goto(f"{base}/dashboard/training/")
    staff.wait_for_selector('[data-testid="jobs"]')
    staff.screenshot(path=str(artifacts_dir / "dashboard-jobs.png"), full_page=True)

    # Review: open the user's conversation; the view is logged.
    staff.goto(f"{base}/dashboard/conversations/")
    staff.wait_for_selector('[data-testid="review-list"]')
    staff.screenshot(path=str(artifacts_dir / "dashboard-conversations.png"), full_page=True)
    staff.locator('[data-testid="review-list"] a[href*="/dashboard/conversations/"]').first.click()
    staff.wait_for_selector('[data-testid="active-path"]')
    assert "Tell me a long story." in staff.get_by_test_id("active-path").inner_text()
    staff.screenshot(path=str(artifacts_dir / "dashboard-conversation.png"), full_page=True)
    assert ReviewEvent.objects.filter(staff__username="operator", action="view").count() == 1

    # A filter rule made in the dashboard applies to the user's next message.
    staff.goto(f"{base}/dashboard/filters/new/")
    staff.fill('input[name="name"]', "Forbidden word")
    staff.fill('textarea[name="keywords"]', "zylophin")
    staff.fill('textarea[name="notice"]', "Let's keep this friendly.")
    staff.get_by_test_id("save-rule").click()
    staff.wait_for_selector('[data-testid="filter-rules"]')
    assert "Forbidden word" in staff.get_by_test_id("filter-rules").inner_text()
    staff.screenshot(path=str(artifacts_dir / "dashboard-filters.png"), full_page=True)
    page.get_by_test_id("composer-input").fill("say z y l o p h i n")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=assistant-message]').length === 4"
    )
    assert last_answer_wait(page) == "blocked"
    assert "keep this friendly" in page.locator(f"{ANSWER} .msg-body").last.inner_text()
    page.screenshot(path=str(artifacts_dir / "chat-blocked.png"))
    staff.goto(f"{base}/dashboard/filters/hits/")
    assert "Forbidden word" in staff.locator("table").last.inner_text()
    staff.screenshot(path=str(artifacts_dir / "dashboard-filter-hits.png"), full_page=True)
    assert errors == []
    staff_context.close()
