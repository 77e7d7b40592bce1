"""The landing page and the theme in a real browser against the live stack:
a visitor sees what the site is and signs up from it; a signed-in user
picks dark, which is on the page before its first paint after a reload,
and System, which follows the browser's colour scheme. Screenshots of
both pages, light and dark, on a laptop and a phone land in
artifacts_dir."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import signup
from tests.e2e.test_csp import Violations

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LIGHT_BG = "rgb(247, 247, 248)"
DARK_BG = "rgb(21, 22, 26)"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Records the theme on <html> when <body> is inserted: what the first
# paint uses. Runs before the page's own scripts.
_THEME_AT_BODY = """
new MutationObserver((records, observer) => {
  if (!document.body) return;
  window.__themeAtBody = document.documentElement.getAttribute("data-theme") || "none";
  observer.disconnect();
}).observe(document, { childList: true, subtree: true });
"""


def _body_bg(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def _theme(page) -> str | None:
    return page.evaluate("document.documentElement.getAttribute('data-theme')")


def _code_theme_media(page) -> dict[str, str]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('link[data-theme-media]')]
            .map((link) => [link.dataset.themeMedia, link.media]))"""
    )


def _choose(page, choice: str) -> None:
    """Click the toggle until it shows the choice (it cycles three)."""
    toggle = page.get_by_test_id("theme-toggle")
    for _ in range(3):
        if toggle.get_attribute("data-choice") == choice:
            return
        toggle.click()
    assert toggle.get_attribute("data-choice") == choice


def _shots(page, artifacts_dir, name: str, scheme: str) -> None:
    """Screenshot the page at both sizes; leave it at the laptop size."""
    for size, label in ((LAPTOP, "1280"), (PHONE, "390")):
        page.set_viewport_size(size)
        # Finished transitions: the phone layout slides the sidebar away.
        page.screenshot(
            path=str(artifacts_dir / f"{name}-{scheme}-{label}.png"),
            full_page=True,
            animations="disabled",
        )
    page.set_viewport_size(LAPTOP)


def test_a_visitor_lands_signs_up_and_the_chosen_theme_is_remembered(
    stack, browser, artifacts_dir
):
    base = stack["base"]
    context = browser.new_context(viewport=LAPTOP, color_scheme="light")
    context.add_init_script(_THEME_AT_BODY)
    violations = Violations(context)
    page = context.new_page()

    # A new visitor: the landing page, in the system's scheme.
    page.goto(base + "/")
    assert page.get_by_role("heading", level=1).inner_text() == "Chat"
    assert page.get_by_test_id("landing-model").inner_text() == "Answering now: tiny"
    toggle = page.get_by_test_id("theme-toggle")
    assert toggle.is_visible()
    assert toggle.get_attribute("aria-label") == "Theme: System. Switch to Light"
    assert _theme(page) is None and _body_bg(page) == LIGHT_BG
    _shots(page, artifacts_dir, "landing", "light")
    page.emulate_media(color_scheme="dark")
    assert _body_bg(page) == DARK_BG
    _shots(page, artifacts_dir, "landing", "dark")
    page.emulate_media(color_scheme="light")
    # Nothing sideways on a phone.
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(LAPTOP)

    page.get_by_test_id("landing-signup").click()
    page.wait_for_url(base + "/accounts/signup/")
    signup(page, base, "themer")
    page.get_by_test_id("composer-input").wait_for()
    assert _body_bg(page) == LIGHT_BG
    assert _code_theme_media(page) == {
        "light": "(prefers-color-scheme: light)",
        "dark": "(prefers-color-scheme: dark)",
    }
    _shots(page, artifacts_dir, "chat", "light")

    # Dark, chosen: the colours, the code theme and color-scheme follow.
    _choose(page, "dark")
    assert _theme(page) == "dark"
    assert _body_bg(page) == DARK_BG
    assert toggle.get_attribute("aria-label") == "Theme: Dark. Switch to System"
    assert page.evaluate("localStorage.getItem('theme')") == "dark"
    assert page.evaluate("document.querySelector('meta[name=color-scheme]').content") == "dark"
    assert _code_theme_media(page) == {"light": "not all", "dark": "all"}
    _shots(page, artifacts_dir, "chat", "dark")

    # Remembered, and on <html> before <body> exists: no light flash.
    page.reload()
    page.get_by_test_id("composer-input").wait_for()
    assert page.evaluate("window.__themeAtBody") == "dark"
    assert _body_bg(page) == DARK_BG
    assert toggle.get_attribute("data-choice") == "dark"

    # Another tab of the same browser follows a change.
    other = context.new_page()
    other.goto(base + "/accounts/api-keys/")
    assert _theme(other) == "dark"

    # System: no data-theme, the browser's scheme decides.
    _choose(page, "system")
    assert _theme(page) is None
    assert page.evaluate("localStorage.getItem('theme')") is None
    assert page.evaluate("document.querySelector('meta[name=color-scheme]').content") == (
        "light dark"
    )
    assert _body_bg(page) == LIGHT_BG
    page.emulate_media(color_scheme="dark")
    assert _body_bg(page) == DARK_BG
    other.wait_for_function("!document.documentElement.hasAttribute('data-theme')")

    # Light, chosen, wins over a dark system.
    _choose(page, "light")
    assert _body_bg(page) == LIGHT_BG
    assert _code_theme_media(page) == {"light": "all", "dark": "not all"}
    page.emulate_media(color_scheme="light")
    page.reload()
    assert page.evaluate("window.__themeAtBody") == "light"

    seen = violations.take(page) + violations.take(other)
    assert not seen, "Content-Security-Policy violations:\n" + "\n".join(seen)
    context.close()


def test_the_landing_page_needs_no_script(stack, browser):
    """With JavaScript off the landing page still says what the site is and
    leads to sign up; the theme toggle, which needs a script, stays hidden
    and the system's scheme applies."""
    context = browser.new_context(viewport=PHONE, color_scheme="dark", java_script_enabled=False)
    page = context.new_page()
    page.goto(stack["base"] + "/")

    assert page.get_by_test_id("landing-signup").is_visible()
    assert page.get_by_test_id("landing-login").is_visible()
    assert not page.get_by_test_id("theme-toggle").is_visible()
    assert _body_bg(page) == DARK_BG
    page.get_by_test_id("landing-signup").click()
    page.wait_for_url(stack["base"] + "/accounts/signup/")
    context.close()
