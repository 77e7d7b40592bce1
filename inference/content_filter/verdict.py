"""Matches, the audit's hits and excerpts, and the verdict on a text."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from inference.content_filter.rules import EXCERPT_CHARS, MAX_HITS, Rule


@dataclass(frozen=True)
class Match:
    rule: Rule
    start: int
    end: int
    text: str
    timed_out: bool = False


@dataclass
class Hit:
    """What the audit keeps of a match."""

    rule_id: int | None
    rule_name: str
    action: str
    excerpt: str
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "action": self.action,
            "excerpt": self.excerpt,
            "timed_out": self.timed_out,
        }


def excerpt(text: str, match: Match, others: Iterable[Match] = ()) -> str:
    """The text around a match, the match marked; personal data (preset
    matches, this one or others nearby) stays masked."""
    low, high = max(match.start - EXCERPT_CHARS, 0), min(match.end + EXCERPT_CHARS, len(text))
    nearby = [
        m for m in others if m.rule.pii and m is not match and m.start < high and m.end > low
    ]
    for other in nearby:  # never cut personal data in half at the edges
        low, high = min(low, other.start), max(high, other.end)
    parts: list[str] = []
    position = low
    for item in sorted([*nearby, match], key=lambda m: (m.start, m is not match)):
        if item.start < position:
            continue
        parts.append(text[position : item.start])
        if item is match:
            parts.append(match.rule.mask(match.text) if match.rule.pii else f"«{match.text}»")
        else:
            parts.append(item.rule.mask(item.text))
        position = item.end
    parts.append(text[position:high])
    return "".join(parts).replace("\n", " ")[:500]


def _nearby(matches: list[Match], starts: list[int], match: Match) -> list[Match]:
    """The matches of a sorted list close enough to show in match's
    excerpt (the ones a span that overlaps others could reach too)."""
    low = bisect.bisect_left(starts, match.start - EXCERPT_CHARS)
    high = bisect.bisect_right(starts, match.end + EXCERPT_CHARS)
    # Kept matches do not overlap: of those starting further left, only
    # the last can reach into the excerpt.
    return matches[max(low - 1, 0) : high]


@dataclass
class Verdict:
    """What a text becomes: masked text, or blocked with a notice."""

    text: str
    blocked: bool = False
    notice: str = ""
    hits: list[Hit] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return any(hit.action == "flag" for hit in self.hits)


def _hits(text: str, matches: list[Match], *, limit: int = MAX_HITS) -> list[Hit]:
    """The audit rows of the first ``limit`` matches (sorted by start)."""
    starts = [m.start for m in matches]
    return [
        Hit(m.rule.id, m.rule.name, "block" if m.timed_out else m.rule.action,
            excerpt(text, m, _nearby(matches, starts, m)), m.timed_out)
        for m in matches[:limit]
    ]  # fmt: skip


def _verdict(
    text: str, matches: list[Match], *, default_notice: str, hit_limit: int = MAX_HITS
) -> Verdict:
    hits = _hits(text, matches, limit=hit_limit)
    blocking = [m for m in matches if m.timed_out or m.rule.action == "block"]
    if blocking:
        notice = blocking[0].rule.notice or default_notice
        return Verdict(text="", blocked=True, notice=notice, hits=hits)
    out = []
    position = 0
    for match in matches:
        if match.rule.action == "mask":
            out.append(text[position : match.start])
            out.append(match.rule.mask(match.text))
            position = match.end
    out.append(text[position:])
    return Verdict(text="".join(out), hits=hits)
