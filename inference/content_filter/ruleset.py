"""Rule sets (the rules of one scope and surface) and rule books (every
rule of a site, compiled once)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from inference.content_filter.keywords import _KeywordIndex
from inference.content_filter.rules import (
    REGEX_TIMEOUT_CHARS,
    REGEX_TIMEOUT_S,
    Rule,
    RuleError,
    rule_compile,
)
from inference.content_filter.stream import StreamFilter
from inference.content_filter.text import canonical, skeleton
from inference.content_filter.verdict import Match, Verdict, _verdict


class RuleSet:
    """The rules for one scope and surface, in priority order."""

    def __init__(self, rules: Iterable[Rule], *, notice: str) -> None:
        self.rules = sorted(rules, key=lambda r: (r.priority, r.id or 0))
        self.notice = notice
        self._keywords = _KeywordIndex([r for r in self.rules if r.on_skeleton])
        self._others = [r for r in self.rules if not r.on_skeleton]

    @classmethod
    def from_specs(
        cls,
        specs: Iterable[dict[str, Any]],
        *,
        scope: str,
        surface: str,
        notice: str,
        site: int | None = None,
        on_error: Callable[[dict[str, Any], RuleError], None] | None = None,
    ) -> RuleSet:
        """Compile the specs that apply (see ``RuleBook``); a spec that does
        not compile is skipped and reported to on_error."""
        book = RuleBook(specs, notice=notice, on_error=on_error)
        return book.rule_set(scope=scope, surface=surface, site=site)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scan(
        self, text: str, *, partial: bool = False, start_at: int = 0
    ) -> tuple[list[Match], int]:
        """Find the matches in text that start at or after start_at.

        With ``partial``, also return where text must be held back from:
        the start of the earliest match still in progress at the end of
        text (or one that the next piece could extend); len(text) when
        nothing is. Matches overlapping an earlier, higher-priority one
        are dropped.
        """
        hold = len(text)
        found: list[Match] = []
        if self._keywords:
            letters, origin = skeleton(text)
            spans, keyword_hold = self._keywords.find(canonical(letters), partial=partial)
            if keyword_hold is not None and keyword_hold < len(origin):
                hold = min(hold, max(origin[keyword_hold], start_at))
            for rule, first, last in spans:
                start, end = origin[first], origin[last - 1] + 1
                if start >= start_at:
                    found.append(Match(rule, start, end, text[start:end]))
        timeout = REGEX_TIMEOUT_S * max(1.0, (len(text) - start_at) / REGEX_TIMEOUT_CHARS)
        for rule in self._others:
            try:
                for m in rule.compiled.finditer(
                    text, pos=start_at, partial=partial, timeout=timeout
                ):
                    start, end = m.start(), m.end()
                    if partial and (m.partial or end == len(text)):
                        hold = min(hold, start)
                        continue
                    if end == start:
                        continue
                    matched = text[start:end]
                    if rule.validate is not None and not rule.validate(matched):
                        continue
                    found.append(Match(rule, start, end, matched))
            except TimeoutError:
                # Fail closed: this text counts as matched by the rule.
                found.append(Match(rule, start_at, len(text), text[start_at:], timed_out=True))
        return _resolve(found), hold

    def check(self, text: str) -> Verdict:
        """Filter a whole text (an incoming message)."""
        matches, _hold = self.scan(text)
        return _verdict(text, matches, default_notice=self.notice)


class RuleBook:
    """Every rule of a site, compiled once from plain specs
    (``FilterRule.spec()``), and the rule set (keyword index and regular
    expressions) of each scope, surface and widget site, built on first
    use and kept. A book never changes: build a new one when the rules do.
    """

    def __init__(
        self,
        specs: Iterable[dict[str, Any]],
        *,
        notice: str,
        on_error: Callable[[dict[str, Any], RuleError], None] | None = None,
    ) -> None:
        """Compile every spec; one that does not compile is left out and
        reported to on_error. ``notice`` is what a block shows when its
        rule has no notice of its own."""
        self.notice = notice
        self.rules: list[Rule] = []
        for spec in specs:
            try:
                self.rules.append(rule_compile(spec))
            except RuleError as exc:
                if on_error is not None:
                    on_error(spec, exc)
        self._sets: dict[tuple[str, str, int | None], RuleSet] = {}
        #: Rule sets by the positions of their rules: scopes, surfaces and
        #: sites that run the same rules share one keyword index.
        self._shared: dict[tuple[int, ...], RuleSet] = {}

    def rule_set(self, *, scope: str, surface: str, site: int | None = None) -> RuleSet:
        """The rules that run on a text of this scope and surface (and
        widget site)."""
        key = (scope, surface, site)
        rules = self._sets.get(key)
        if rules is None:
            # Threads that race here build equal sets; either one will do.
            chosen = tuple(
                i
                for i, rule in enumerate(self.rules)
                if rule.applies(scope=scope, surface=surface, site=site)
            )
            rules = self._shared.get(chosen)
            if rules is None:
                rules = RuleSet([self.rules[i] for i in chosen], notice=self.notice)
                self._shared[chosen] = rules
            self._sets[key] = rules
        return rules

    def check(self, text: str, *, surface: str, site: int | None = None) -> Verdict:
        """Filter an incoming text with the input rules."""
        return self.rule_set(scope="input", surface=surface, site=site).check(text)

    def stream(self, *, surface: str, site: int | None = None) -> StreamFilter | None:
        """The output filter of one answer; None when no output rule
        applies."""
        rules = self.rule_set(scope="output", surface=surface, site=site)
        return StreamFilter(rules) if rules else None


_ACTION_RANK = {"block": 0, "mask": 1, "flag": 2}


def _resolve(matches: list[Match]) -> list[Match]:
    """Keep non-overlapping matches, blocking ones and higher priority
    first, then the longest."""
    ordered = sorted(
        matches,
        key=lambda m: (_ACTION_RANK[m.rule.action], m.rule.priority, m.start, m.start - m.end),
    )
    # One byte a character, set where a kept match lies: a candidate is
    # checked, and a kept one marked, over its own span only.
    covered = bytearray(max((m.end for m in matches), default=0))
    kept: list[Match] = []
    for match in ordered:
        if not match.timed_out and covered.find(1, match.start, match.end) != -1:
            continue
        covered[match.start : match.end] = b"\x01" * (match.end - match.start)
        kept.append(match)
    return sorted(kept, key=lambda m: m.start)
