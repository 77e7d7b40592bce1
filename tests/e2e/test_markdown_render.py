"""static/js/markdown.js in real Chromium: untrusted model output renders as
safe Markdown, never runs script and never makes the page fetch anything."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest
from playwright.sync_api import Page

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

SCRIPTS = [
    REPO_ROOT / "static/vendor/markdown-it/markdown-it.min.js",
    REPO_ROOT / "static/vendor/dompurify/purify.min.js",
    REPO_ROOT / "static/vendor/highlight/highlight.min.js",
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
