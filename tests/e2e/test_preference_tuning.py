"""Preference tuning as staff do it in a real browser: create the demo
preference pairs from the Datasets page, read a pair (chosen over
rejected), start a DPO job from the form (which swaps in the kind's
defaults) and watch its preference accuracy and margin curves draw, at
desktop and phone widths. Screenshots land in var/test-artifacts/."""

from __future__ import annotations

import re

import pytest

from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.services.datasets import DEMO_PREFERENCES_NAME
from tests.e2e.conftest import page_problems, staff_login, staff_superuser_create

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_staff_make_the_demo_pairs_and_preference_tune_with_live_curves(
    stack, browser, artifacts_dir
):
    base = stack["base"]
    staff_superuser_create("tuner")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = page_problems(page)
    staff_login(page, base, "tuner")

    page.goto(f"{base}/dashboard/training/datasets/")
    page.get_by_test_id("create-demo-preferences").click()
    page.wait_for_selector('[data-testid="dataset-preview"]')
    dataset = Dataset.objects.get(name=DEMO_PREFERENCES_NAME)
    assert page.url == f"{base}/dashboard/training/datasets/{dataset.pk}/"
    assert page.get_by_test_id("rejected-answer").count() >= 3
    page.screenshot(path=str(artifacts_dir / "preference-dataset.png"), full_page=True)

    page.goto(f"{base}/dashboard/training/new/?dataset={dataset.pk}")
    rate = page.locator('input[name="learning_rate"]')
    assert float(rate.input_value()) == pytest.approx(1e-4)
    page.check('input[name="kind"][value="dpo"]')
    # The kind's own default replaces the fine-tune's, and beta appears.
    assert float(rate.input_value()) == pytest.approx(5e-6)
    assert "Default 5e-06." in page.locator('[data-field="learning_rate"]').inner_text()
    assert page.locator('input[name="beta"]').is_visible()
    assert not page.locator('input[name="temperature"]').is_visible()
    for name, value in {
        "steps": "4", "checkpoint_every": "2", "eval_every": "2", "eval_examples": "6",
        "learning_rate": "0.001", "max_length": "128",
    }.items():  # fmt: skip
        page.fill(f'input[name="{name}"]', value)
    page.screenshot(path=str(artifacts_dir / "preference-new-job.png"), full_page=True)
    page.get_by_test_id("start-job").click()
    page.wait_for_url(re.compile(r".*/dashboard/training/\d+/$"))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=job-state]').textContent.trim()"
        " === 'Completed'",
        timeout=240_000,
    )
    job = TrainingJob.objects.get()
    assert job.kind == "dpo" and job.params["steps"] == 4
    for chart in ("chart-accuracy", "chart-margin"):
        assert page.get_by_test_id(chart).locator("svg path.series-line").count() >= 2
    assert page.locator('[data-cell="eval_accuracy"]').first.inner_text().endswith("%")
    page.wait_for_timeout(600)  # the progress bar's transition
    page.screenshot(path=str(artifacts_dir / "preference-job.png"), full_page=True)
    assert list(
        ModelVersion.objects.filter(job=job).order_by("step").values_list("kind", "step")
    ) == [("dpo", 2), ("dpo", 4)]
    assert not problems, problems
    storage = context.storage_state()
    context.close()

    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", storage_state=storage
    )
    page = phone.new_page()
    problems = page_problems(page)
    page.goto(f"{base}/dashboard/training/{job.pk}/")
    page.get_by_test_id("chart-accuracy").locator("svg path.series-line").first.wait_for()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    wide = page.evaluate(
        "() => [...document.querySelectorAll('body *')]"
        ".filter((e) => e.getBoundingClientRect().right > 391)"
        ".map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"
        ".slice(0, 8)"
    )
    assert width <= 390, f"the job page is {width}px wide on a phone: {wide}"
    page.screenshot(path=str(artifacts_dir / "preference-job-phone-dark.png"), full_page=True)
    assert not problems, problems
    phone.close()
