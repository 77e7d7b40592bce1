"""Citation marks in a streamed answer: ``[1]``, ``[2, 3]``, ``[1][4]``.

An answer written from numbered passages may cite only the numbers it was
given. ``CitationFilter`` is an output filter (``push``/``finish``) that
removes the marks naming a passage that was not given, holding back just
enough text that a mark split across tokens is judged whole.
``citations_used`` reads which numbers a finished answer cites.
"""

from __future__ import annotations

import re
from typing import Any

from inference.content_filter.stream import FilterResult

#: A complete mark: one or more numbers in brackets, with commas, spaces
#: or "and" between them.
MARK = re.compile(r"(\s*)\[(\d{1,3}(?:(?:\s*(?:,|and|&|;)\s*|\s+)\d{1,3})*)\]")
_NUMBER = re.compile(r"\d{1,3}")
#: What may still become a mark: an opening bracket followed by numbers
#: and separators only, not yet closed.
_OPEN = re.compile(r"\s*\[[\d\s,;&and]*$|\s+$")
#: The longest text a possible mark holds back; longer, it is not a mark.
MAX_HOLD = 24


def _rewrite(match: re.Match[str], allowed: int) -> str:
    numbers = [int(n) for n in _NUMBER.findall(match.group(2))]
    kept: list[int] = []
    for number in numbers:
        if 1 <= number <= allowed and number not in kept:
            kept.append(number)
    if not kept:
        return ""  # with the space before it
    return match.group(1) + "".join(f"[{number}]" for number in kept)


def citations_clean(text: str, *, allowed: int) -> str:
    """``text`` with every mark naming a number outside 1..``allowed``
    removed with the space before it (a mark with some valid numbers
    keeps those)."""
    return MARK.sub(lambda m: _rewrite(m, allowed), text)


def citations_used(text: str, *, allowed: int) -> list[int]:
    """The passage numbers ``text`` cites, in order of first mention."""
    used: list[int] = []
    for match in MARK.finditer(text):
        for number in (int(n) for n in _NUMBER.findall(match.group(2))):
            if 1 <= number <= allowed and number not in used:
                used.append(number)
    return used


class CitationFilter:
    """Remove citation marks outside 1..``allowed`` from streamed text, then
    pass the text on to ``inner`` (the content rules), if any.

    The content rules see the cleaned text, so what they hold back and
    match is what the reader gets; their hits and notice are reported as
    theirs (``report``), and ``blocked`` and ``notice`` are read through.
    """

    def __init__(self, allowed: int, inner: Any = None) -> None:
        self.allowed = allowed
        self.inner = inner
        self.pending = ""

    @property
    def blocked(self) -> bool:
        return bool(getattr(self.inner, "blocked", False))

    @property
    def notice(self) -> str:
        return str(getattr(self.inner, "notice", ""))

    @property
    def hits(self) -> list[Any]:
        return list(getattr(self.inner, "hits", []))

    def report(self) -> dict[str, Any]:
        report = getattr(self.inner, "report", None)
        return report() if report is not None else {}

    def push(self, text: str) -> FilterResult:
        self.pending += text
        ready = self._release(final=False)
        if self.inner is None:
            return FilterResult(ready)
        return self.inner.push(ready) if ready else FilterResult("", block=self.blocked)

    def finish(self) -> FilterResult:
        ready = self._release(final=True)
        if self.inner is None:
            return FilterResult(ready)
        if ready:
            first = self.inner.push(ready)
            if first.block:
                return first
            rest = self.inner.finish()
            return FilterResult(first.text + rest.text, block=rest.block)
        return self.inner.finish()

    def _release(self, *, final: bool) -> str:
        text = self.pending
        hold = len(text)
        if not final:
            opened = _OPEN.search(text)
            if opened is not None and len(text) - opened.start() <= MAX_HOLD:
                hold = opened.start()
        ready, self.pending = text[:hold], text[hold:]
        return citations_clean(ready, allowed=self.allowed)
