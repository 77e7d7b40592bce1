"""The compare page's "ask all" answers as their tokens in a real browser
against the live stack: once both versions have answered, each answer's
toggle shows it as tinted token spans that spell it, with the legend; a
token's alternatives open in a popover by mouse, keyboard and touch, at
desktop and phone widths, light and dark, under the site's
Content-Security-Policy."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from models_admin.models import ModelVersion
from models_admin.services import model_version_create
from tests.e2e.conftest import staff_login, staff_superuser_create
from tests.e2e.test_csp import Violations

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TOKEN = '[data-testid="token"]'
# Tokens that end a turn spell none of the answer.
END_TOKEN = re.compile(r"<\|[a-z_]+\|>|</s>")


def _column(page, version: ModelVersion):
    return page.locator(f"[data-ask-version='{version.pk}']")


def _errors_collect(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def _ask_all(page, question: str, versions: list[ModelVersion]) -> None:
    """Ask every column question; return once each answer has finished."""
    page.fill('textarea[name="question"]', question)
    # Short answers keep a column's tokens on one screen.
    page.fill('input[name="max_tokens"]', "40")
    page.fill('input[name="temperature"]', "0.8")
    page.click("[data-ask-submit]")
    for version in versions:
        page.wait_for_function(
            "(id) => { const c = document.querySelector(`[data-ask-version='${id}']`);"
            " return !!c && c.querySelector('[data-ask-stats]').textContent.trim().length > 0; }",
            arg=version.pk,
            timeout=120_000,
        )
    page.wait_for_function("() => !document.querySelector('[data-ask-submit]').disabled")


def _token_view_open(column) -> list[dict]:
    """Show the column's answer as its tokens; return each span's text and
    whether it ended the answer."""
    answer = column.locator("[data-ask-output]").text_content()
    assert answer.strip(), "the version wrote nothing"
    toggle = column.get_by_test_id("token-view-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-label") == "Token probabilities"
    assert toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    column.locator(TOKEN).first.wait_for()
    assert toggle.get_attribute("aria-pressed") == "true"
    assert "Probability" in column.get_by_test_id("token-legend").inner_text()
    spans = column.locator(TOKEN).evaluate_all(
        "spans => spans.map((s) => ({text: s.textContent, end: s.classList.contains('tok-end'),"
        " tint: [...s.classList].find((c) => c.startsWith('p-'))}))"
    )
    assert all(span["tint"] in ("p-high", "p-mid", "p-low", "p-rare") for span in spans), spans
    spelled = "".join(span["text"] for span in spans)
    spelled = END_TOKEN.sub("", spelled).replace("\ufffd", "")
    assert spelled == answer.replace("\ufffd", ""), (spelled, answer)
    # Only tokens after the answer's text are marked as its end.
    ends = [span for span in spans if span["end"]]
    assert all(END_TOKEN.fullmatch(span["text"]) for span in ends), ends
    return spans


# "Tea 中" in three tokens, the character split over two, then the end of
# the turn: OpenAI's logprobs items as the compare stream sends them.
_SPLIT = """() => {
    const item = (token, bytes, logprob, top) => ({token, bytes, logprob, top_logprobs: top});
    const piece = item("\\ufffd", [228, 184], -0.5, [
        item("\\ufffd", [228, 184], -0.5, []), item("\\ufffd", [229, 165], -1.2, []),
    ]);
    const tokens = TokenView.fromLogprobs([
        item("Tea", [84, 101, 97], -0.05, []),
        item(" ", [32], -0.2, []),
        piece,
        item("\\ufffd", [173], -0.01, []),
        item("<|im_end|>", [60, 124, 105, 109, 95, 101, 110, 100, 124, 62], -0.3, []),
    ], "Tea \\u4e2d");
    return tokens.map((t) => ({text: t.text, end: !!t.end, chosen: t.top.map((a) => a.chosen)}));
}"""


def _logprobs_read_check(page) -> None:
    """A character split over tokens shows whole on its last piece; the
    end-of-turn token after the answer's text is marked as its end; the
    alternative with the token's bytes is the chosen one."""
    assert page.evaluate(_SPLIT) == [
        {"text": "Tea", "end": False, "chosen": []},
        {"text": " ", "end": False, "chosen": []},
        {"text": "", "end": False, "chosen": [True, False]},
        {"text": "\u4e2d", "end": False, "chosen": []},
        {"text": "<|im_end|>", "end": True, "chosen": []},
    ]


def _visible_token(spans, near: int) -> int:
    """The index of a token with text to point at, from near on."""
    texts = spans.evaluate_all("spans => spans.map((s) => s.textContent.trim())")
    return next(i for i in range(near, len(texts)) if texts[i])


def _popover_check(page, column, count: int) -> None:
    """The open popover lists the chosen token and its alternatives, each
    with a percentage, and offers no action on this page."""
    popover = page.get_by_test_id("token-popover")
    expect(popover).to_be_visible()
    expect(popover).to_contain_text(re.compile(rf"Token \d+ of {count}|End of the answer"))
    chosen = popover.get_by_test_id("token-chosen")
    assert chosen.count() == 1 and re.search(r"\d%", chosen.inner_text())
    alternatives = popover.get_by_test_id("token-alternative")
    assert alternatives.count() >= 1
    for text in alternatives.all_inner_texts():
        assert re.search(r"(\d|<0\.1)%", text), text
    assert popover.locator("button.tp-alt").count() == 0
    # Where it is: inside the window's width, clear of the token it lists.
    box = popover.bounding_box()
    width = page.viewport_size["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    anchor = column.locator(f"{TOKEN}.active")
    for top, bottom in anchor.evaluate(
        "(s) => [...s.getClientRects()].map((r) => [r.top, r.bottom])"
    ):
        assert bottom <= box["y"] or top >= box["y"] + box["height"], (top, bottom, box)


def _shot(page, path) -> None:
    page.get_by_test_id("token-popover").scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def test_compare_answers_show_their_tokens_and_alternatives(
    stack, browser, artifacts_dir, tiny_model_dir
):
    base = stack["base"]
    other = model_version_create(name="tiny-b", folder=tiny_model_dir)
    versions = [ModelVersion.objects.get(name="tiny"), other]
    staff_superuser_create("operator")
    compare_url = f"{base}/dashboard/versions/compare/?v={versions[0].pk}&v={other.pk}"

    desktop = browser.new_context(viewport=DESKTOP, color_scheme="light")
    violations = Violations(desktop)
    page = desktop.new_page()
    errors = _errors_collect(page)
    staff_login(page, base, "operator")
    page.goto(compare_url)
    # No toggle before there is an answer.
    assert page.get_by_test_id("token-view-toggle").evaluate_all(
        "buttons => buttons.every((b) => b.offsetParent === null)"
    )
    _logprobs_read_check(page)
    _ask_all(page, "Which is better, tea or coffee?", versions)

    popover = page.get_by_test_id("token-popover")
    first, second = (_column(page, version) for version in versions)
    first_spans = _token_view_open(first)
    second_spans = _token_view_open(second)

    # The mouse resting on a token shows its alternatives; leaving closes
    # them.
    index = _visible_token(first.locator(TOKEN), len(first_spans) // 2)
    first.locator(TOKEN).nth(index).hover()
    expect(popover).to_contain_text(f"Token {index + 1} of {len(first_spans)}")
    _popover_check(page, first, len(first_spans))
    page.mouse.move(5, DESKTOP["height"] - 5)
    popover.wait_for(state="hidden")

    # A click keeps them open, in the other column too.
    index = _visible_token(second.locator(TOKEN), 2)
    second.locator(TOKEN).nth(index).click()
    expect(popover).to_contain_text(f"Token {index + 1} of {len(second_spans)}")
    _popover_check(page, second, len(second_spans))
    _shot(page, artifacts_dir / "compare-tokens-desktop-light.png")
    page.emulate_media(color_scheme="dark")
    _shot(page, artifacts_dir / "compare-tokens-desktop-dark.png")

    # Esc closes them; the keyboard opens them and walks the tokens.
    page.keyboard.press("Escape")
    popover.wait_for(state="hidden")
    index = _visible_token(first.locator(TOKEN), 1)
    span = first.locator(TOKEN).nth(index)
    span.focus()
    page.keyboard.press("Enter")
    expect(popover).to_contain_text(f"Token {index + 1} of {len(first_spans)}")
    assert page.evaluate("document.activeElement.dataset.testid") == "token-popover-close"
    page.keyboard.press("Escape")
    popover.wait_for(state="hidden")
    assert page.evaluate("document.activeElement.dataset.index") == str(index)
    # With a token's alternatives open and the token focused, the arrow
    # keys move to the next token and show its alternatives.
    span.click()
    expect(popover).to_contain_text(f"Token {index + 1} of {len(first_spans)}")
    page.keyboard.press("ArrowRight")
    expect(popover).to_contain_text(f"Token {index + 2} of {len(first_spans)}")
    assert page.evaluate("document.activeElement.dataset.index") == str(index + 1)
    page.keyboard.press("Escape")
    popover.wait_for(state="hidden")

    # The toggle brings the plain answer back.
    answer = first.locator("[data-ask-output]")
    first.get_by_test_id("token-view-toggle").click()
    assert first.locator(TOKEN).count() == 0
    assert first.get_by_test_id("token-legend").count() == 0
    assert answer.text_content().strip()
    # A new question starts the other column over as plain text too.
    _ask_all(page, "And which is cheaper?", versions)
    assert second.locator(TOKEN).count() == 0
    assert second.get_by_test_id("token-legend").count() == 0
    assert second.get_by_test_id("token-view-toggle").get_attribute("aria-pressed") == "false"
    assert second.locator("[data-ask-output]").text_content().strip()
    assert violations.take(page) == []
    assert errors == []

    # On a phone, by touch, in the same session.
    phone = browser.new_context(
        viewport=PHONE,
        color_scheme="dark",
        has_touch=True,
        is_mobile=True,
        storage_state=desktop.storage_state(),
    )
    phone_violations = Violations(phone)
    mobile = phone.new_page()
    errors = _errors_collect(mobile)
    mobile.goto(compare_url)
    _ask_all(mobile, "Where should I go on holiday?", versions)
    popover = mobile.get_by_test_id("token-popover")
    for number, version in enumerate(versions):
        column = _column(mobile, version)
        column.get_by_test_id("token-view-toggle").tap()
        column.locator(TOKEN).first.wait_for()
        spans = column.locator(TOKEN)
        index = _visible_token(spans, spans.count() // 2)
        spans.nth(index).tap()
        expect(popover).to_contain_text(f"Token {index + 1} of {spans.count()}")
        _popover_check(mobile, column, spans.count())
        _shot(mobile, artifacts_dir / f"compare-tokens-phone-dark-{number + 1}.png")
        mobile.emulate_media(color_scheme="light")
        _shot(mobile, artifacts_dir / f"compare-tokens-phone-light-{number + 1}.png")
        mobile.emulate_media(color_scheme="dark")
        # A tap outside closes it.
        mobile.locator(".page-head h1").tap()
        popover.wait_for(state="hidden")
    assert phone_violations.take(mobile) == []
    assert errors == []
    phone.close()
    desktop.close()
