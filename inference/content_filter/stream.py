"""The output filter of a streamed answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inference.content_filter.rules import CONTEXT_CHARS, MAX_HITS, MAX_HOLD_CHARS
from inference.content_filter.verdict import Hit, Match, _nearby, _verdict, excerpt

if TYPE_CHECKING:
    from inference.content_filter.ruleset import RuleSet


@dataclass
class FilterResult:
    """What an output filter lets through now; ``block`` ends the answer."""

    text: str
    block: bool = False


class StreamFilter:
    """The output filter of one generation (``inference.engine.OutputFilter``).

    ``hits`` collects what matched; ``notice`` is set when it blocked.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.context = ""  # emitted text, for boundaries and spacing
        self.pending = ""
        self.hits: list[Hit] = []
        self.blocked = False
        self.notice = ""

    def push(self, text: str) -> FilterResult:
        self.pending += text
        return self._release(final=False)

    def finish(self) -> FilterResult:
        return self._release(final=True)

    def _release(self, *, final: bool) -> FilterResult:
        if self.blocked:
            return FilterResult("", block=True)
        if not self.pending:
            return FilterResult("")
        buffer = self.context + self.pending
        base = len(self.context)
        matches, hold = self.rules.scan(buffer, partial=not final, start_at=base)
        if len(buffer) - hold > MAX_HOLD_CHARS:
            # Something keeps a match open too long: let the oldest go.
            hold = len(buffer) - MAX_HOLD_CHARS
        # A complete match reaching into the held text waits with it.
        while True:
            crossing = [m for m in matches if m.start < hold < m.end]
            if not crossing:
                break
            hold = min(m.start for m in crossing)
        ready = [m for m in matches if m.end <= hold]
        released = buffer[base:hold]
        shifted = [Match(m.rule, m.start - base, m.end - base, m.text, m.timed_out) for m in ready]
        verdict = _verdict(
            released,
            shifted,
            default_notice=self.rules.notice,
            hit_limit=max(MAX_HITS - len(self.hits), 0),
        )
        # Excerpts take their context from the whole buffer.
        starts = [m.start for m in ready]
        for hit, match in zip(verdict.hits, ready, strict=False):
            hit.excerpt = excerpt(buffer[:hold], match, _nearby(ready, starts, match))
        self.hits.extend(verdict.hits)
        if verdict.blocked:
            self.blocked = True
            self.notice = verdict.notice
            return FilterResult("", block=True)
        self.context = (self.context + released)[-CONTEXT_CHARS:]
        self.pending = buffer[hold:]
        return FilterResult(verdict.text)

    def report(self) -> dict[str, Any]:
        return {"hits": [hit.as_dict() for hit in self.hits], "notice": self.notice}
