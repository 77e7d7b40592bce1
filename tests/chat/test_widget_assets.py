"""The widget's static assets, read as text: the loader stays small, every
postMessage names its target origin, HTML reaches the frame only through the
Markdown sanitizer, the composer does not trigger iOS zoom, and the frame
page carries the hooks the browser tests rely on."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from django.template.loader import render_to_string

ROOT = Path(__file__).resolve().parents[2]
EMBED = ROOT / "static" / "widget" / "embed.js"
FRAME_JS = ROOT / "static" / "widget" / "frame.js"
FRAME_CSS = ROOT / "static" / "widget" / "frame.css"
CHAT_UI_JS = ROOT / "static" / "js" / "chat_ui.js"
STREAM_JS = ROOT / "static" / "js" / "stream_client.js"
#: The frame's own scripts, in the order its page loads them.
FRAME_SCRIPTS = ("js/markdown.js", "js/chat_ui.js", "js/stream_client.js", "widget/frame.js")

EMBED_MAX_GZIPPED_BYTES = 15_000
SANITIZED = re.compile(r"(?:window\.)?ChatMarkdown\.render\(")
IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _strip_comments(source: str) -> str:
    """Drop /* */ and // comments so prose cannot satisfy or fail a check.

    Good enough for these files: no string in them holds `//` or `/*`
    except URLs, which sit inside template literals without a leading
    space.
    """
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return re.sub(r"(?m)(^|\s)//.*$", r"\1", source)


def _call_arguments(source: str, start: int) -> list[str]:
    """The top-level arguments of the call whose "(" is at ``start``."""
    depth = 0
    quote = ""
    args: list[str] = []
    current: list[str] = []
    i = start
    while i < len(source):
        char = source[i]
        if quote:
            current.append(char)
            if char == "\\":
                current.append(source[i + 1])
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
            current.append(char)
        elif char in "([{":
            depth += 1
            if depth > 1:
                current.append(char)
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return args
            current.append(char)
        elif char == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    raise AssertionError(f"unbalanced call at offset {start}")


def _post_message_targets(source: str) -> list[str]:
    """The target-origin argument of every postMessage call."""
    targets = []
    for match in re.finditer(r"\.postMessage\(", source):
        args = _call_arguments(source, match.end() - 1)
        targets.append(args[1] if len(args) > 1 else "")
    return targets


def _unsafe_post_messages(source: str) -> list[str]:
    """Targets that are missing, a wildcard or anything but a variable."""
    return [
        target
        for target in _post_message_targets(_strip_comments(source))
        if not IDENTIFIER.fullmatch(target) or "*" in target
    ]


def _unsanitized_html_sinks(source: str) -> list[str]:
    """HTML written from anything but ChatMarkdown.render(...)."""
    code = _strip_comments(source)
    problems = []
    for match in re.finditer(r"\.innerHTML\s*(\+?=)(?!=)\s*", code):
        rest = code[match.end() :]
        if match.group(1) == "+=" or not SANITIZED.match(rest):
            problems.append(code[match.start() : match.end() + 40])
    for sink in ("outerHTML", "insertAdjacentHTML", "document.write", "DOMParser"):
        if sink in code:
            problems.append(sink)
    return problems


def _css_rules(css: str) -> list[tuple[str, str]]:
    """(selector, declarations) of every rule, media queries flattened."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    return [
        (selector.strip(), body)
        for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css)
        if not selector.strip().startswith("@")
    ]


def _font_size_px(value: str) -> float:
    value = value.strip().removesuffix("!important").strip()
    if value.endswith("px"):
        return float(value[:-2])
    if value.endswith("rem"):
        return float(value[:-3]) * 16
    raise AssertionError(f"font-size {value!r} is not in px or rem")


def _composer_font_sizes(css: str) -> list[float]:
    sizes = []
    for selector, body in _css_rules(css):
        if not any("composer" in part and "textarea" in part for part in selector.split(",")):
            continue
        sizes += [_font_size_px(v) for v in re.findall(r"font-size\s*:\s*([^;]+)", body)]
    return sizes


def test_embed_script_stays_under_its_gzipped_budget():
    """The loader runs on customers' pages: at most 15 KB gzipped."""
    size = len(gzip.compress(EMBED.read_bytes(), compresslevel=6))
    assert 0 < size <= EMBED_MAX_GZIPPED_BYTES


@pytest.mark.parametrize("path", [EMBED, FRAME_JS], ids=["embed", "frame"])
def test_every_post_message_names_its_target_origin(path):
    """postMessage never broadcasts with "*": the target is a checked origin."""
    source = _read(path)
    assert _post_message_targets(_strip_comments(source)), "no postMessage call found"
    assert _unsafe_post_messages(source) == []


def test_post_message_check_catches_wildcards_and_literals():
    """The origin check above refuses the shapes it is meant to refuse."""
    bad = (
        'win.postMessage({ chatWidget: 1, type: "ready" }, "*");\n'
        "win.postMessage(data, '*');\n"
        "win.postMessage(data);\n"
        'win.postMessage(Object.assign({}, m), "https://example.com");\n'
    )
    assert len(_unsafe_post_messages(bad)) == 4
    assert _unsafe_post_messages("w.postMessage(Object.assign({ a: 1 }, m), frameOrigin);") == []


@pytest.mark.parametrize(
    "path", [FRAME_JS, CHAT_UI_JS, STREAM_JS], ids=["frame", "chat_ui", "stream_client"]
)
def test_frame_writes_html_only_from_the_markdown_sanitizer(path):
    """Message text becomes HTML only through ChatMarkdown.render, which
    the frame reaches through ChatUI.setMarkdown."""
    assert _unsanitized_html_sinks(_read(path)) == []
    assert re.search(r"\.innerHTML\s*=\s*window\.ChatMarkdown\.render\(", _read(CHAT_UI_JS))
    assert "setMarkdown(" in _strip_comments(_read(FRAME_JS))


def test_embed_builds_its_dom_without_html_strings():
    """The loader creates elements and sets textContent; it never parses HTML."""
    source = _read(EMBED)
    assert "innerHTML" not in _strip_comments(source)
    assert _unsanitized_html_sinks(source) == []
    assert "createElement(" in source


def test_html_sink_check_catches_unsanitized_writes():
    """The sanitizer check above refuses raw and appended HTML."""
    assert _unsanitized_html_sinks("node.innerHTML = frame.text;")
    assert _unsanitized_html_sinks("node.innerHTML += ChatMarkdown.render(text);")
    assert _unsanitized_html_sinks("node.insertAdjacentHTML('beforeend', text);")
    assert _unsanitized_html_sinks("a.innerHTML = window.ChatMarkdown.render(t);") == []


def test_both_sides_check_origin_and_source_of_messages():
    """Each side accepts messages only from the other's window and origin."""
    embed = _strip_comments(_read(EMBED))
    frame = _strip_comments(_read(FRAME_JS))
    assert "event.origin !== frameOrigin" in embed
    assert "event.source !== iframe.contentWindow" in embed
    assert "event.origin !== hostOrigin" in frame
    assert "event.source !== window.parent" in frame


def test_embed_reports_a_refused_configuration_by_key_and_origin():
    """A failed config fetch logs "Chat widget: ..." naming key and origin."""
    embed = _read(EMBED)
    assert "console.error(`Chat widget: ${message}`)" in embed
    refused = re.search(r"const refused =(.*?);", embed, re.S)
    assert refused, "no message for a refused configuration"
    assert "${key}" in refused.group(1)
    assert "${location.origin}" in refused.group(1)


def test_embed_stores_the_visitor_token_under_the_site_key_guarded():
    """The token lives under chatWidget:<KEY>:token; blocked storage is caught."""
    embed = _read(EMBED)
    assert "`chatWidget:${key}:token`" in embed
    for call in ("localStorage.getItem", "localStorage.setItem", "localStorage.removeItem"):
        index = embed.index(call)
        assert "try {" in embed[max(0, index - 120) : index], f"{call} is not guarded"


def test_composer_font_size_stops_ios_zoom():
    """The composer's textarea uses 16px or more everywhere it is styled."""
    sizes = _composer_font_sizes(_read(FRAME_CSS))
    assert sizes, "no font-size for the composer textarea"
    assert min(sizes) >= 16


def test_composer_font_size_check_reads_media_queries_and_rem():
    """A smaller size in a media query, or in rem, fails the check above."""
    css = (
        ".composer textarea { font-size: 16px; }\n"
        "@media (max-width: 600px) { .composer textarea { font-size: 0.875rem; } }"
    )
    assert min(_composer_font_sizes(css)) == 14


def test_frame_css_respects_reduced_motion():
    """Animations stop for visitors who ask for less motion."""
    css = _read(FRAME_CSS)
    block = css[css.index("prefers-reduced-motion") :]
    assert "animation: none" in block


def test_loader_and_frame_script_expose_the_test_hooks():
    """Browser tests find the widget's parts by stable data-testid values."""
    embed = _read(EMBED)
    frame = _read(FRAME_JS)
    for testid in ("widget-launcher", "widget-unread", "widget-container"):
        assert f'"data-testid": "{testid}"' in embed
    for testid in ("widget-answer", "widget-question", "widget-suggestion"):
        assert f'"data-testid": "{testid}"' in frame


def _frame_config(**overrides):
    config = {
        "key": "pk_test",
        "title": "Help </script><b>desk</b>",
        "greeting": "Hello!",
        "suggestions": ["Where is my order?"],
        "color": "#ffcc00",
        "position": "right",
        "avatar_url": "https://cdn.example.com/a.png",
        "handoff_enabled": True,
        "online": True,
        "offline_message": "Away.",
        "host_origin": "https://shop.example",
        "ws_path": "/ws/widget/",
    }
    config.update(overrides)
    return config


def test_frame_page_renders_its_parts_and_config():
    """The frame page has every hooked control and its config as JSON."""
    config = _frame_config()
    page = render_to_string("widget/frame.html", {"config": config})
    for testid in (
        "widget-messages",
        "widget-input",
        "widget-send",
        "widget-stop",
        "widget-handoff",
        "widget-close",
        "widget-email",
        "widget-email-send",
        "widget-status",
    ):
        assert f'data-testid="{testid}"' in page, testid
    assert re.search(r'id="messages" role="log" aria-live="polite"', page)
    assert 'type="email"' in page
    assert "<b>desk</b>" not in page  # the title is escaped
    data = re.search(r'<script id="widget-config" type="application/json">(.*?)</script>', page)
    assert data and json.loads(data.group(1)) == config
    for script in ("markdown-it.min.js", "purify.min.js", *FRAME_SCRIPTS):
        assert script in page
    # The frame's script uses the shared ones, so they load before it.
    order = [page.index(f"/static/{script}") for script in FRAME_SCRIPTS]
    assert order == sorted(order)
    assert 'src="https://cdn.example.com/a.png"' in page


def test_frame_page_leaves_out_handoff_and_avatar_when_unset():
    """No person to talk to, no button; no avatar, no image."""
    page = render_to_string(
        "widget/frame.html", {"config": _frame_config(handoff_enabled=False, avatar_url="")}
    )
    assert 'data-testid="widget-handoff"' not in page
    assert "<img" not in page
