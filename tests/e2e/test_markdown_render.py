"""static/js/markdown.js in real Chromium: untrusted model output renders as
safe Markdown, never runs script and never makes the page fetch anything;
its math is typeset by KaTeX under the site's Content-Security-Policy."""

from __future__ import annotations

import json
import mimetypes
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page

from chat.services.conversations import conversation_create
from chat.services.messages import message_generation_finish, message_send
from chatsite.security import DEFAULT_POLICY, csp_format
from tests.conftest import REPO_ROOT
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

SCRIPTS = [
    REPO_ROOT / "static/vendor/markdown-it/markdown-it.min.js",
    REPO_ROOT / "static/vendor/dompurify/purify.min.js",
    REPO_ROOT / "static/vendor/highlight/highlight.min.js",
    REPO_ROOT / "static/vendor/katex/katex.min.js",
    REPO_ROOT / "static/js/markdown.js",
]
BLANK = "<html><body><div id=out class=markdown></div></body></html>"
# What a browser ignores in a URL before reading its scheme.
URL_IGNORED = re.compile(r"[\x00-\x20\x7f-\x9f]")
BAD_SCHEMES = ("javascript:", "data:", "vbscript:")
BUTTON_TEXT = "document.querySelector('#out [data-copy-code]').textContent"


@dataclass
class MarkdownPage:
    page: Page
    requests: list[str] = field(default_factory=list)

    def render(self, text: str) -> str:
        """Render text into #out, wire its copy buttons; the HTML made."""
        return self.page.evaluate(
            """(text) => {
                const out = document.getElementById("out");
                out.innerHTML = ChatMarkdown.render(text);
                ChatMarkdown.enhance(out);
                return out.innerHTML;
            }""",
            text,
        )

    def hrefs(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#out a", "(links) => links.map((a) => a.getAttribute('href'))"
        )

    def settle(self) -> None:
        # A request for an <img> or a prefetch starts asynchronously after
        # the markup lands; give it the chance to show before asserting
        # that none was made.
        self.page.wait_for_timeout(300)


@pytest.fixture
def md(page) -> MarkdownPage:
    """A blank page with the Markdown scripts loaded and every request
    recorded and aborted."""
    result = MarkdownPage(page=page)

    def record(route) -> None:
        result.requests.append(route.request.url)
        route.abort()

    page.route("**/*", record)
    page.on("request", lambda request: result.requests.append(request.url))
    page.set_content(BLANK)
    for script in SCRIPTS:
        page.add_script_tag(path=str(script))
    assert page.evaluate("typeof window.ChatMarkdown.render") == "function"
    return result


def _scheme_of(href: str) -> str:
    return URL_IGNORED.sub("", unquote(href)).lower()


@pytest.mark.parametrize(
    "payload",
    [
        "<script>window.__pwned = 1</script>",
        "<img src=x onerror='window.__pwned = 1'>",
        'Hello <img src="x" onerror="window.__pwned = 1"> there',
        "<svg onload='window.__pwned = 1'></svg>",
        "<a href='javascript:window.__pwned=1' onclick='window.__pwned=1'>go</a>",
        "```html\n<script>window.__pwned = 1</script>\n```",
    ],
    ids=["script", "img-onerror", "inline-img", "svg-onload", "raw-anchor", "fenced-html"],
)
def test_raw_html_in_output_renders_as_inert_text(md, payload):
    """HTML the model writes is shown as text: no script, no image, no
    element with an event handler, and the payload never runs."""
    md.render(payload)
    md.settle()
    page = md.page
    assert page.locator("#out script, #out img, #out svg, #out iframe").count() == 0
    handlers = page.evaluate(
        """() => [...document.querySelectorAll("#out *")].flatMap((el) =>
            [...el.attributes].map((a) => a.name).filter((n) => n.startsWith("on")))"""
    )
    assert handlers == []
    assert page.evaluate("window.__pwned") is None
    assert "window.__pwned" in page.inner_text("#out")
    assert md.requests == []


@pytest.mark.parametrize(
    "text",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](java\nscript:alert(1))",
        "[x](<java\tscript:alert(1)>)",
        "[x](&#106;avascript:alert(1))",
        "[x](javascript&colon;alert(1))",
        "[x](%6Aavascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](vbscript:msgbox(1))",
        "<javascript:alert(1)>",
        "[x][ref]\n\n[ref]: javascript:alert(1)",
        "![x](javascript:alert(1))",
    ],
)
def test_links_with_script_or_data_schemes_are_not_links(md, text):
    """No anchor gets a javascript:, data: or vbscript: href, however the
    scheme is spelt or hidden."""
    md.render(text)
    for href in md.hrefs():
        assert not _scheme_of(href or "").startswith(BAD_SCHEMES), href
    protocols = md.page.eval_on_selector_all("#out a", "(links) => links.map((a) => a.protocol)")
    assert not set(protocols) & set(BAD_SCHEMES)
    assert md.requests == []


def test_image_becomes_a_link_and_is_never_fetched(md):
    """An image is shown as a link to its URL with an "(image)" marker; the
    browser never requests it."""
    url = "http://127.0.0.2:9/?q=secret"
    md.render(f"Look: ![secret]({url})")
    md.settle()
    page = md.page
    assert page.locator("#out img").count() == 0
    link = page.locator("#out a")
    assert link.count() == 1
    assert link.get_attribute("href") == url
    assert "noopener" in link.get_attribute("rel").split()
    assert link.inner_text() == "secret"
    assert "(image)" in page.inner_text("#out")
    assert md.requests == []


@pytest.mark.parametrize("text", ["![shh](javascript:alert(1))", "![shh]()"])
def test_image_with_a_refused_or_empty_url_is_plain_text(md, text):
    """An image whose URL is empty or fails the scheme check is text: no
    link, no image."""
    md.render(text)
    md.settle()
    assert md.page.locator("#out a, #out img").count() == 0
    assert "shh" in md.page.inner_text("#out")
    assert md.requests == []


def test_links_open_in_a_new_tab_without_opener(md):
    """Written and bare links open in a new tab with rel noopener
    noreferrer nofollow."""
    md.render("See [docs](https://example.com/docs) or https://example.org/x.")
    links = md.page.locator("#out a")
    assert links.count() == 2
    for index in range(2):
        link = links.nth(index)
        assert link.get_attribute("target") == "_blank"
        assert {"noopener", "noreferrer", "nofollow"} <= set(link.get_attribute("rel").split())
    assert md.hrefs() == ["https://example.com/docs", "https://example.org/x"]
    assert md.requests == []


def test_fenced_python_is_highlighted_with_a_copy_button(md):
    """A ```python block gets highlight.js spans, its language in the
    header and a copy button."""
    md.render("```python\ndef greet(name):\n    return f'hi {name}'\n```\n")
    page = md.page
    code = page.locator("#out .code-block pre code.hljs.language-python")
    assert code.count() == 1
    assert code.locator("span[class^='hljs-']").count() > 0
    assert page.inner_text("#out .code-block .code-lang") == "python"
    button = page.locator("#out .code-block .code-head button.copy-code[data-copy-code]")
    assert button.get_attribute("type") == "button"
    assert button.inner_text() == "Copy"


def test_unknown_language_renders_as_escaped_plain_text(md):
    """A fence in a language highlight.js lacks is plain text, HTML
    escaped, labelled plaintext."""
    md.render("```nosuchlang\n<b>bold?</b> & more\n```")
    page = md.page
    code = page.locator("#out pre code.language-plaintext")
    assert code.count() == 1
    assert code.locator("span, b").count() == 0
    assert code.inner_text() == "<b>bold?</b> & more\n"
    assert page.inner_text("#out .code-lang") == "plaintext"


def _read_clipboard(page) -> str:
    """The clipboard's text, read from a page with a secure origin of its
    own, since the blank page under test is not a secure context."""
    reader = page.context.new_page()
    reader.route(
        "https://clipboard.test/",
        lambda route: route.fulfill(body="<html><body></body></html>", content_type="text/html"),
    )
    reader.goto("https://clipboard.test/")
    text = reader.evaluate("navigator.clipboard.readText()")
    reader.close()
    return text


def test_copy_button_puts_the_code_on_the_clipboard(md):
    """Clicking Copy puts the block's code on the clipboard, shows "Copied"
    and then "Copy" again.

    The page set_content makes has an opaque origin, so it is not a secure
    context and navigator.clipboard is undefined there, as on a plain
    http:// site: the click goes through the textarea and
    execCommand("copy") fallback, which works in headless Chromium. The
    result is read back from a separate https page granted clipboard-read.
    """
    page = md.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    assert page.evaluate("window.isSecureContext") is False
    code = "def greet(name):\n    return f'<hi> {name}'\n"
    md.render(f"Some text.\n\n```python\n{code}```\n\nMore text.")
    button = page.locator("#out [data-copy-code]")
    button.click()
    page.wait_for_function(f"{BUTTON_TEXT} === 'Copied'")
    assert _read_clipboard(page) == code
    page.wait_for_function(f"{BUTTON_TEXT} === 'Copy'", timeout=5000)
    assert md.requests == []


def test_enhance_twice_still_copies_once_per_click(md):
    """Calling enhance again on the same root adds no second listener."""
    page = md.page
    md.render("```\nonce\n```")
    page.evaluate(
        """() => {
            const out = document.getElementById("out");
            ChatMarkdown.enhance(out);
            ChatMarkdown.enhance(out);
            window.__copies = 0;
            document.addEventListener("copy", () => { window.__copies += 1; });
        }"""
    )
    page.locator("#out [data-copy-code]").click()
    page.wait_for_function(f"{BUTTON_TEXT} !== 'Copy'")
    assert page.evaluate("window.__copies") == 1


def test_copy_text_uses_the_clipboard_api_in_a_secure_context(browser):
    """On an https page copyText writes through navigator.clipboard and
    resolves true."""
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.route(
        "https://chat.test/",
        lambda route: route.fulfill(body=BLANK, content_type="text/html"),
    )
    page.goto("https://chat.test/")
    for script in SCRIPTS:
        page.add_script_tag(path=str(script))
    result = page.evaluate(
        """async () => {
            let calls = 0;
            const write = navigator.clipboard.writeText.bind(navigator.clipboard);
            navigator.clipboard.writeText = (text) => { calls += 1; return write(text); };
            const ok = await ChatMarkdown.copyText("whole message");
            return [ok, calls, await navigator.clipboard.readText()];
        }"""
    )
    context.close()
    assert result == [True, 1, "whole message"]


def test_unclosed_fence_mid_stream_renders_without_throwing(md):
    """Every prefix of a streamed answer renders; an open fence shows as a
    code block so far."""
    answer = (
        "Here is a **table**:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "- one\n- [link](https://example.com)\n\n"
        "```python\nfor i in range(3):\n    print(i)\n```\n\nDone `x`.\n"
    )
    errors = md.page.evaluate(
        """(answer) => {
            const errors = [];
            for (let end = 0; end <= answer.length; end += 1) {
                try {
                    const html = ChatMarkdown.render(answer.slice(0, end));
                    if (typeof html !== "string") errors.push([end, typeof html]);
                } catch (error) {
                    errors.push([end, String(error)]);
                }
            }
            return errors;
        }""",
        answer,
    )
    assert errors == []
    partial = answer[: answer.index("print(i)") + len("print(")]
    md.render(partial)
    code = md.page.locator("#out .code-block code.language-python")
    assert code.count() == 1
    assert code.inner_text().endswith("print(")
    assert md.requests == []


def test_table_renders_as_a_table(md):
    """A pipe table becomes a <table> with a header row."""
    md.render("| name | size |\n|------|-----:|\n| a | 1 |\n| b | 22 |\n")
    page = md.page
    assert page.locator("#out table").count() == 1
    assert page.locator("#out table thead th").all_inner_texts() == ["name", "size"]
    assert page.locator("#out table tbody tr").count() == 2


# --- Math ------------------------------------------------------------------

STATIC = REPO_ROOT / "static"
SITE = "https://chat.test"
# The chat page's stylesheets and scripts, in its order, under the policy
# the site sends with every page.
SITE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<link rel="stylesheet" href="/static/css/app.css">
<link rel="stylesheet" href="/static/vendor/katex/katex.min.css">
<link rel="stylesheet" href="/static/css/markdown.css">
<link rel="stylesheet" href="/static/css/chat.css">
</head><body>
<div class="msg msg-assistant"><div id="out" class="msg-body markdown"></div></div>
<script src="/static/vendor/markdown-it/markdown-it.min.js" defer></script>
<script src="/static/vendor/dompurify/purify.min.js" defer></script>
<script src="/static/vendor/highlight/highlight.min.js" defer></script>
<script src="/static/vendor/katex/katex.min.js" defer></script>
<script src="/static/js/markdown.js" defer></script>
</body></html>"""
# Runs before the page's scripts; the page's policy does not apply to it.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.effectiveDirective} ${event.blockedURI || "inline"}`);
});
"""
RENDER_TIMED = """(text) => {
    const out = document.getElementById("out");
    const started = performance.now();
    const html = ChatMarkdown.render(text);
    out.innerHTML = html;
    ChatMarkdown.enhance(out);
    return { html, ms: performance.now() - started };
}"""
ANSWER_WITH_MATH = r"""The roots of $ax^2 + bx + c = 0$ are

$$
x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}
$$

and Euler's identity \(e^{i\pi} + 1 = 0\) follows from the series

\[
e^{x} = \sum_{n=0}^{\infty} \frac{x^n}{n!}, \qquad
\begin{pmatrix} a & b \\ c & d \end{pmatrix}^{-1}
= \frac{1}{ad - bc} \begin{pmatrix} d & -b \\ -c & a \end{pmatrix}
\]

A long one scrolls sideways on a phone:

$$
\int_0^1 \left( x^2 + 2x + 1 \right) dx + \int_0^1 \left( x^3 + 3x^2 + 3x + 1 \right) dx
+ \underbrace{1 + 2 + \cdots + n}_{n(n+1)/2}
$$

It costs $5 and $10; `$x$` in code stays as written.
"""


@dataclass
class SitePage:
    """A page served from SITE with the site's policy, static files from
    the checkout; dialogs, policy violations and requests anywhere else are
    recorded (and those requests refused)."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def serve(self, route) -> None:
        url = urlsplit(route.request.url)
        if f"{url.scheme}://{url.netloc}" != SITE:
            self.foreign.append(route.request.url)
            route.abort()
            return
        if url.path == "/":
            route.fulfill(
                body=SITE_PAGE,
                content_type="text/html",
                headers={"Content-Security-Policy": csp_format(DEFAULT_POLICY)},
            )
            return
        path = (REPO_ROOT / unquote(url.path).lstrip("/")).resolve()
        if url.path.startswith("/static/") and path.is_relative_to(STATIC) and path.is_file():
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            route.fulfill(path=str(path), content_type=content_type)
            return
        route.fulfill(status=404, body="")

    def render(self, text: str) -> dict:
        """Render text into #out; the HTML made and the milliseconds taken."""
        return self.page.evaluate(RENDER_TIMED, text)

    def violations(self) -> list[str]:
        return self.page.evaluate(
            "() => new Promise((r) => setTimeout(() => r(window.__violations.splice(0)), 0))"
        )


@pytest.fixture
def site_page(browser):
    """Open a SitePage in a new context made with the options given."""
    contexts = []

    def open_page(**options) -> SitePage:
        context = browser.new_context(**options)
        contexts.append(context)
        context.add_init_script(RECORD_VIOLATIONS)
        page = context.new_page()
        site = SitePage(page=page)

        def on_dialog(dialog) -> None:
            site.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.route("**/*", site.serve)
        page.goto(SITE + "/")
        page.wait_for_function("window.ChatMarkdown !== undefined")
        return site

    yield open_page
    for context in contexts:
        context.close()


def test_inline_and_display_math_render_as_katex_with_mathml(md):
    """$...$ and \\(...\\) typeset inline, $$...$$ and \\[...\\] as display
    math; each formula carries MathML with its TeX as the annotation."""
    md.render(
        "Inline $x^2$ and \\(a+b\\), display:\n\n$$\n\\frac{1}{2}\n$$\n\n"
        "\\[\\sqrt{y}\\]\n\nand $$z_1$$ within a sentence."
    )
    page = md.page
    assert page.locator("#out .katex").count() == 5
    assert page.locator("#out .katex-display").count() == 3
    assert page.locator("#out .katex math semantics").count() == 5
    annotations = page.eval_on_selector_all(
        "#out annotation[encoding='application/x-tex']", "(els) => els.map((a) => a.textContent)"
    )
    assert annotations == ["x^2", "a+b", "\\frac{1}{2}", "\\sqrt{y}", "z_1"]
    text = page.evaluate(
        """() => [...document.querySelectorAll("#out p")].map((p) => {
            const copy = p.cloneNode(true);
            copy.querySelectorAll(".katex").forEach((k) => k.replaceWith("M"));
            return copy.textContent;
        })"""
    )
    assert text == ["Inline M and M, display:", "and M within a sentence."]
    assert md.requests == []


@pytest.mark.parametrize(
    "text",
    [
        "It costs $5 and $10.",
        "Pay $5, or $6 with tax.",
        "US$5-$10 a month",
        "$ x$ and $y $ are not math",
        "A lone $ sign",
        "Escaped \\$x\\$ dollars",
    ],
)
def test_dollar_amounts_stay_text(md, text):
    """A $ followed by a space, a closing $ after a space or before a digit,
    and escaped dollars are text, not math."""
    md.render(text)
    assert md.page.locator("#out .katex").count() == 0
    assert md.page.inner_text("#out") == text.replace("\\$", "$")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Use `$x^2$` here", "$x^2$"),
        ("```\n$$\\frac{a}{b}$$ and \\(c\\)\n```", "$$\\frac{a}{b}$$ and \\(c\\)\n"),
        ("```latex\n\\[ x \\]\n```", "\\[ x \\]\n"),
        ("    $$\n    y\n    $$", "$$\ny\n$$\n"),
        ("It costs $5 and $10; `$x$` is code", "$x$"),
    ],
    ids=["code-span", "fence", "latex-fence", "indented", "dollar-before-code"],
)
def test_math_in_code_stays_literal(md, text, code):
    """Dollars and TeX delimiters in code spans and code blocks are shown as
    written."""
    md.render(text)
    page = md.page
    assert page.locator("#out .katex").count() == 0
    assert page.locator("#out code").first.text_content() == code


def test_unclosed_math_while_streaming_stays_text(md):
    """Every prefix of a streamed answer typesets exactly the formulas
    whose closing delimiter has arrived: an open $$ shows as text, never as
    a stray inline formula."""
    answer = (
        "Sum:\n\n$$\n\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}\n$$\n\n"
        "and inline $$a^2$$ too, plus \\(b\\) and $c$."
    )
    closes = [
        answer.index("$$", answer.index("{2}")) + 2,
        answer.index("$$", answer.index("a^2")) + 2,
        answer.index("\\)") + 2,
        answer.index("$c$") + 3,
    ]
    counts = md.page.evaluate(
        """(answer) => {
            const out = document.getElementById("out");
            const counts = [];
            for (let end = 0; end <= answer.length; end += 1) {
                out.innerHTML = ChatMarkdown.render(answer.slice(0, end));
                counts.push(out.querySelectorAll(".katex").length);
            }
            return counts;
        }""",
        answer,
    )
    expected = [sum(1 for close in closes if close <= end) for end in range(len(answer) + 1)]
    assert counts == expected
    partial = answer[: answer.index("{2}") + 3]
    md.render(partial)
    assert md.page.locator("#out .katex").count() == 0
    text = md.page.inner_text("#out")
    assert text.startswith("Sum:\n\n$$")
    assert "\\sum_{i=1}^{n} i" in text


def test_without_katex_math_shows_as_written(page):
    """With KaTeX missing, formulas are their source text, delimiters
    included."""
    page.route("**/*", lambda route: route.abort())
    page.set_content(BLANK)
    for script in SCRIPTS:
        if "katex" not in script.name:
            page.add_script_tag(path=str(script))
    page.evaluate(
        """(text) => {
            document.getElementById("out").innerHTML = ChatMarkdown.render(text);
        }""",
        "Inline $x^2$ and \\(y\\).\n\n$$\n\\frac{a}{b}\n$$",
    )
    assert page.locator("#out .katex, #out math").count() == 0
    assert page.inner_text("#out") == "Inline $x^2$ and \\(y\\).\n\n$$\n\\frac{a}{b}\n$$"


HOSTILE_MATH = {
    "href": "$\\href{javascript:alert(1)}{click}$",
    "url": "$$\\url{javascript:alert(1)}$$",
    "href-bracket": "\\[\\href{JaVaScRiPt:alert(1)}{x}\\]",
    "html-next-to-math": "<img src=x onerror=alert(1)> $x^2$ <img src=x onerror=alert(1)>",
    "html-in-text": "\\(\\text{<img src=x onerror=alert(1)>} \\verb|<svg onload=alert(1)>|\\)",
    "html-macros": (
        "$\\htmlClass{x}{a} \\htmlData{onclick=alert(1)}{b} "
        "\\htmlStyle{position:fixed;inset:0}{c} \\htmlId{out}{d}$"
    ),
    "includegraphics": "$\\includegraphics{https://127.0.0.2:9/x.png}$",
    "colour-injection": "$\\color{red;background:url(https://127.0.0.2:9/)}{x}$",
    "macro-bomb": "$\\def\\a{\\a\\a}\\a$ and $$\\def\\b#1{#1#1#1#1}\\b{\\b{\\b{\\b{\\b{x}}}}}$$",
    "deep-underbrace": "$$" + "\\underbrace{" * 2000 + "x" + "}_{a}" * 2000 + "$$",
    "deep-left": "$" + "\\left(" * 300 + "x" + "\\right)" * 300 + "$",
    "wide-underbrace": "$$" + "\\underbrace{x+y}_{n}" * 140 + "$$",
    "many-formulas": " ".join(f"$\\underbrace{{a_{i}}}_{{b}}$" for i in range(500)),
}


@pytest.mark.parametrize("text", HOSTILE_MATH.values(), ids=HOSTILE_MATH.keys())
def test_hostile_math_runs_nothing_links_nowhere_and_renders_quickly(site_page, text):
    """Under the site's policy, formulas that try links, raw HTML, KaTeX's
    HTML extensions, style injection or sheer size run no script (no dialog,
    even when clicked), leave no javascript: URL, no handler and no style
    attribute in the markup, fetch nothing, and render in well under a
    second."""
    site = site_page()
    page = site.page
    result = site.render(text)
    assert result["ms"] < 1000, result["ms"]
    assert ' style="' not in result["html"]
    for element in page.locator("#out .katex").all()[:20]:
        element.click(force=True)
    page.wait_for_timeout(200)
    assert site.dialogs == []
    found = page.evaluate(
        """() => [...document.querySelectorAll("#out *")].flatMap((el) =>
            [...el.attributes]
                .filter((a) => a.name.startsWith("on") || /href|src|action/.test(a.name)
                    || /javascript:/i.test(a.value))
                .map((a) => `${el.localName} ${a.name}=${a.value}`))"""
    )
    assert found == []
    assert page.locator("#out img, #out script, #out iframe, #out a").count() == 0
    assert page.evaluate("getComputedStyle(document.getElementById('out')).position") != "fixed"
    assert page.locator("#out [class='x'], #out #out").count() == 0
    assert site.violations() == []
    assert site.foreign == []


def test_sanitizer_keeps_only_math_layout_styles(page):
    """Should KaTeX itself produce hostile markup, the sanitizer drops links
    and handlers from MathML and SVG, and every style but KaTeX's layout
    declarations."""
    page.route("**/*", lambda route: route.abort())
    page.set_content(BLANK)
    for script in SCRIPTS:
        if "katex" in script.name:
            page.add_script_tag(
                content="""window.katex = { renderToString: () =>
                    '<span class="katex" style="position:fixed;top:0;left:0;height:2em;'
                    + 'background:url(https://127.0.0.2:9/);color:red">'
                    + '<math><mi href="javascript:alert(1)" onclick="alert(1)">y</mi></math>'
                    + '<svg><a href="javascript:alert(1)"><path d="M0 0"/></a>'
                    + '<image href="https://127.0.0.2:9/"/></svg>'
                    + '<span style="margin-left:expression(alert(1));width:1.5em">z</span>'
                    + '</span>' };"""
            )
        else:
            page.add_script_tag(path=str(script))
    page.evaluate(
        """() => {
            const out = document.getElementById("out");
            out.innerHTML = ChatMarkdown.render("$y$");
            ChatMarkdown.enhance(out);
        }"""
    )
    styles = page.eval_on_selector_all(
        "#out [data-math-style]", "(els) => els.map((el) => el.getAttribute('style'))"
    )
    assert styles == ["top: 0px; left: 0px; height: 2em; color: red;", "width: 1.5em;"]
    assert page.locator("#out [*|href], #out [onclick], #out image").count() == 0
    assert page.eval_on_selector("#out .katex", "(el) => getComputedStyle(el).position") != "fixed"


def test_math_lays_out_under_the_site_policy(site_page):
    """On a page with the site's policy, math renders without a single
    violation: KaTeX's fonts load from this site, its box styles are
    applied, and a fraction's numerator sits above its denominator."""
    site = site_page(viewport={"width": 1280, "height": 900})
    page = site.page
    site.render(ANSWER_WITH_MATH)
    page.evaluate("document.fonts.ready")
    assert page.evaluate(
        """() => [...document.fonts].some((f) => f.family.includes("KaTeX_Main")
            && f.status === "loaded")"""
    )
    assert page.locator("#out .katex").count() == 5
    heights = page.eval_on_selector_all(
        "#out .katex-html [data-math-style]", "(els) => els.map((el) => el.style.cssText)"
    )
    assert heights and all(heights)
    numerator, denominator = (
        page.locator("#out .katex-display .mfrac .vlist > span").nth(i).bounding_box()
        for i in (2, 0)
    )
    assert numerator["y"] < denominator["y"] - 5
    assert site.violations() == []
    assert site.foreign == []
    assert site.dialogs == []


@pytest.fixture
def math_conversation(transactional_db):
    """A conversation whose first answer is ANSWER_WITH_MATH and whose second
    is still pending; its id, the pending answer's id and a session."""
    user = UserFactory()
    conversation = conversation_create(user=user, title="Math")
    sent = message_send(
        user=user, conversation=conversation, content="Formulas?", client_id=uuid.uuid4()
    )
    message_generation_finish(
        generation_id=sent.answer.generation_id,
        final={"finish_reason": "stop"},
        text=ANSWER_WITH_MATH,
    )
    pending = message_send(
        user=user, conversation=conversation, content="And a fraction?", client_id=uuid.uuid4()
    )
    client = Client()
    client.force_login(user)
    return conversation.pk, pending.answer.pk, client.cookies[settings.SESSION_COOKIE_NAME].value


def _open_chat(browser, live_server, math_conversation, **options):
    """The chat page of math_conversation, its socket served here; the
    page, the socket and the context."""
    conversation, _answer, session = math_conversation
    context = browser.new_context(**options)
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    opened: list = []

    def serve(ws) -> None:
        def on_message(raw) -> None:
            if json.loads(raw).get("type") == "conversation.open":
                opened.append(ws)

        ws.on_message(on_message)
        ws.send(json.dumps({"type": "hello", "user": "x"}))

    page.route_web_socket("**/ws/chat/", serve)
    page.goto(f"{live_server.url}/c/{conversation}/")
    page.wait_for_function("() => document.querySelectorAll('.msg-assistant .katex').length > 0")
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    for _ in range(50):
        if opened:
            break
        page.wait_for_timeout(100)
    return page, opened, context


def _violations(page) -> list[str]:
    return page.evaluate(
        "() => new Promise((r) => setTimeout(() => r(window.__violations.splice(0)), 0))"
    )


def test_chat_page_typesets_answers_and_holds_an_open_formula_as_text(
    live_server, math_conversation, browser
):
    """On the chat page, under its own policy, a stored answer's math is
    typeset and laid out; a streamed $$ shows as text until its closing $$
    arrives, then becomes display math."""
    _conversation, answer, _session = math_conversation
    page, opened, context = _open_chat(browser, live_server, math_conversation)
    assert page.locator(".msg-assistant .katex").count() == 5
    assert page.eval_on_selector_all(
        ".msg-assistant .katex-html [data-math-style]",
        "(els) => els.length > 0 && els.every((el) => el.style.length > 0)",
    )
    assert opened, "the page did not open the conversation on its socket"
    ws = opened[-1]
    body = page.locator(f'[data-message-id="{answer}"] .msg-body')
    ws.send(json.dumps({"type": "generation.start", "message": answer, "seq": 1}))
    pieces = ["Here:\n\n", "$$\n\\frac{a", "}{b}\n", "$", "$\n\nDone."]
    for seq, piece in enumerate(pieces, start=2):
        ws.send(
            json.dumps({"type": "generation.text", "message": answer, "seq": seq, "text": piece})
        )
        if seq == 5:
            page.wait_for_function(
                "(node) => node.textContent.includes('{b}')", arg=body.element_handle()
            )
            assert body.locator(".katex").count() == 0
            assert body.inner_text().startswith("Here:\n\n$$")
    body.locator(".katex-display").wait_for()
    page.wait_for_function(
        "(node) => node.textContent.includes('Done.')", arg=body.element_handle()
    )
    assert body.locator(".katex").count() == 1
    assert _violations(page) == []
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_chat_page_math_screenshots(
    live_server, math_conversation, browser, artifacts_dir: Path, scheme
):
    """Math in an answer on the chat page, at desktop and phone width, light
    and dark, for a person to look at; a formula wider than a phone scrolls
    inside the answer rather than widening the page."""
    page, _opened, context = _open_chat(
        browser, live_server, math_conversation, color_scheme=scheme
    )
    for name, viewport in [
        ("desktop", {"width": 1280, "height": 900}),
        ("phone", {"width": 390, "height": 844}),
    ]:
        page.set_viewport_size(viewport)
        page.wait_for_timeout(100)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        answer = page.locator(".msg-assistant").first
        answer.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / f"math-{name}-{scheme}.png"))
    wide = page.eval_on_selector_all(
        ".msg-assistant .katex-display",
        "(els) => els.filter((el) => el.scrollWidth > el.clientWidth).length",
    )
    assert wide > 0
    assert _violations(page) == []
    context.close()
