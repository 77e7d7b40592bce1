"""The pages under their Content-Security-Policy in a real browser: the
login page, the chat page with an answer rendered, the dashboard pages and
the widget frame on another site run without a single violation, and the
sizes and colours the dashboard used to put in style attributes are still
applied. A page whose inline script the policy exists to stop (the
widget's demo host page, served from static/) runs none of it."""

from __future__ import annotations

import pytest

from chat.models import Conversation
from chat.services.widget_sites import widget_site_save
from models_admin.models import Dataset, ModelVersion
from models_admin.services import model_version_create
from models_admin.services.datasets import dataset_create
from models_admin.services.training import training_job_create
from tests.e2e.conftest import (
    host_page_set_key,
    last_answer_wait,
    staff_login,
    staff_superuser_create,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Runs in every frame before the page's own scripts (the browser injects
# it; the page's policy does not apply to it).
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"} ` +
    `in ${event.sourceFile || location.href}:${event.lineNumber}`
  );
});
"""


class Violations:
    """Policy violations seen by the pages of one browser context: the
    securitypolicyviolation events of every frame and the browser's
    console reports."""

    def __init__(self, context) -> None:
        self.console: list[str] = []
        context.add_init_script(_RECORD_VIOLATIONS)
        context.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.console.append(message.text)

    def take(self, page) -> list[str]:
        """Return what was seen since the last call, and forget it."""
        seen, self.console = self.console, []
        for frame in page.frames:
            # Reports are queued as tasks: let the frame run those first.
            seen += frame.evaluate(
                """() => new Promise((resolve) => setTimeout(
                    () => resolve((window.__cspViolations || []).splice(0)), 0))"""
            )
        return seen


def _visit(page, violations: Violations, url: str, ready: str) -> list[str]:
    page.goto(url)
    page.wait_for_selector(ready, state="attached")
    return [f"{url}: {line}" for line in violations.take(page)]


def test_pages_and_the_widget_run_under_the_policy_without_violations(
    stack, browser, host_pages, tiny_model_dir, artifacts_dir
):
    base = stack["base"]
    staff_superuser_create("warden")
    production = ModelVersion.objects.get(state=ModelVersion.State.PRODUCTION)
    other = model_version_create(name="tiny-b", folder=tiny_model_dir)
    dataset = dataset_create(
        name="shop",
        conversations=[
            [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
        ]
        * 4,
        source=Dataset.Source.UPLOAD,
    )
    training_job_create(kind="finetune", dataset=dataset, params={"steps": 10}, enqueue=False)
    folder, (allowed, _foreign) = host_pages
    site = widget_site_save(
        data={"name": "Fernhollow", "allowed_origins": allowed, "color": "#aa3366"}
    )
    host_page_set_key(folder, site.public_key)

    context = browser.new_context(viewport={"width": 1300, "height": 900})
    violations = Violations(context)
    page = context.new_page()
    seen = _visit(page, violations, base + "/accounts/login/", '[data-testid="login-submit"]')

    staff_login(page, base, "warden")
    page.get_by_test_id("composer-input").fill("Show me a **table** and `code`.")
    page.keyboard.press("Enter")
    assert last_answer_wait(page) in ("done", "cancelled")
    seen += [f"chat: {line}" for line in violations.take(page)]
    conversation = Conversation.objects.get(user__username="warden")

    pages = [
        ("/", '[data-testid="composer-input"]'),
        ("/dashboard/", '[data-testid="overview-production"]'),
        ("/dashboard/usage/", "main"),
        ("/dashboard/versions/", '[data-testid="versions-table"]'),
        (f"/dashboard/versions/compare/?v={production.pk}&v={other.pk}", ".ask-columns"),
        ("/dashboard/training/", ".progress-fill"),
        ("/dashboard/training/datasets/upload/", '[data-testid="upload-form"]'),
        (f"/dashboard/conversations/{conversation.pk}/", ".review-msg"),
        ("/dashboard/filters/", "main"),
        ("/dashboard/widget/", ".swatch"),
        ("/accounts/api-keys/", "main"),
        ("/status/", "main"),
        ("/admin/", "#content"),
    ]
    for path, ready in pages:
        seen += _visit(page, violations, base + path, ready)
        if path.startswith("/dashboard/versions/compare/"):
            columns = page.locator(".ask-columns").evaluate(
                "node => getComputedStyle(node).getPropertyValue('--columns').trim()"
            )
            assert columns == "2"
        if path == "/dashboard/training/":
            width = page.locator(".progress-fill").first.evaluate("node => node.style.width")
            assert width.endswith("%")
        if path == "/dashboard/widget/":
            swatch = page.locator(".swatch").first.evaluate(
                "node => getComputedStyle(node).getPropertyValue('--swatch').trim()"
            )
            assert swatch == "#aa3366"

    # The widget on another site: the frame connects under its policy.
    visitor = context.new_page()
    visitor.goto(allowed)
    visitor.get_by_test_id("widget-launcher").click()
    frame = visitor.frame_locator('[data-testid="widget-container"] iframe')
    frame.locator('[data-testid="widget-app"][data-connected="yes"]').wait_for(timeout=60_000)
    frame.get_by_test_id("widget-input").wait_for()
    visitor.screenshot(path=str(artifacts_dir / "csp-widget.png"))
    seen += [f"widget: {line}" for line in violations.take(visitor)]

    assert not seen, "Content-Security-Policy violations:\n" + "\n".join(seen)
    context.close()
