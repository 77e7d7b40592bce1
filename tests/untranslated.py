"""Finding English left on a page meant to be in another language.

``untranslated(html, allowed=...)`` lists every visible text and every
text a person is read or shown on hover (``title``, ``placeholder``,
``aria-label``, ``alt``, a button's ``value``) that still holds an English
word. Scripts, styles, code and text marked with another ``lang`` are left
out; brand and technical words (model names, "API", "JSON" ...) and the
data a test made itself are allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser

#: Words that are the same in every language of the site: names of
#: formats, protocols, products and keys.
_ALLOWED_WORDS = """
    API APIs GGUF JSON JSONL CSV URL URLs HTTP HTTPS HTML PDF Markdown OpenAI Redis
    SQLite PostgreSQL Celery Django Python curl BM25 DPO LoRA PII ID IDs UUID SSE
    KV CPU GPU CUDA F16 Q8 Q4 KB MB GB ms Top top-p top-k Top-p Top-k min max
    Ctrl Shift Esc Enter Tab Alt Mac Cmd SmolLM2 SmolLM Instruct MiniLM L6 v2 all
    espeak ng readyz healthz metrics English ok OK md AdamW KL CE UTC Luhn MinHash
    Jaccard IANA WebM Ogg WAV MP3 Chromium Playwright README beat
    transformers torch llama cpp
"""
ALLOWED = frozenset(_ALLOWED_WORDS.split())

# A word of two letters or more standing on its own: not part of an
# address, a file name, an identifier or a number ("b4dw0rd", "top-p",
# "https://shop.example", "export.md").
_WORD = re.compile(r"(?<![\w@/.:#=-])[A-Za-z][A-Za-z'\u2019]+(?![\w@/.:=-]|\(\))")
# Quoted literals and bracketed placeholders are examples of data: JSON
# keys in a format's description, a preset's mask, the word a keyword
# filter matches.
_QUOTED = re.compile(r'"[^"]*"|\u201c[^\u201d]*\u201d|\[[^\]]*\]|\{[^}]*\}')
_SKIPPED = {"script", "style", "code", "pre", "kbd", "samp", "template", "noscript"}
_VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
    "source", "track", "wbr",
}  # fmt: skip
_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")


class _Texts(HTMLParser):
    def __init__(self, language: str) -> None:
        super().__init__(convert_charrefs=True)
        self.language = language.lower()
        self.stack: list[tuple[str, bool]] = []
        self.texts: list[str] = []

    def _skipping(self) -> bool:
        return any(skip for _tag, skip in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        lang = (values.get("lang") or "").lower()
        other = bool(lang) and not lang.startswith(self.language.split("-")[0])
        skip = tag in _SKIPPED or other or values.get("translate") == "no"
        if not (self._skipping() or skip):
            for name in _ATTRIBUTES:
                if values.get(name):
                    self.texts.append(str(values[name]))
            if (
                tag == "input"
                and values.get("type") in ("submit", "button")
                and values.get("value")
            ):
                self.texts.append(str(values["value"]))
        if tag not in _VOID:
            self.stack.append((tag, skip))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if not self._skipping() and data.strip():
            self.texts.append(" ".join(data.split()))


def english_words(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """Return the English words of ``text`` that are not allowed."""
    extra = {word.lower() for phrase in allowed for word in _WORD.findall(phrase)}
    extra |= {phrase.lower() for phrase in allowed}
    known = {word.lower() for word in ALLOWED} | extra
    return [word for word in _WORD.findall(_QUOTED.sub(" ", text)) if word.lower() not in known]


def untranslated(html: str, *, allowed: Iterable[str] = (), language: str = "zh") -> list[str]:
    """Return the texts of a page that still hold English words, each once,
    in the order the page has them."""
    parser = _Texts(language)
    parser.feed(html)
    allowed = list(allowed)
    found: list[str] = []
    for text in parser.texts:
        if english_words(text, allowed) and text not in found:
            found.append(text)
    return found


def texts_report(pages: dict[str, list[str]]) -> str:
    """One line per untranslated text, under the page it is on."""
    lines = []
    for page, texts in pages.items():
        lines.extend(f"{page}: {text!r}" for text in texts)
    return "\n".join(lines)
