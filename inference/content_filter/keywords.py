"""The linear keyword index: keyword rules matched on a canonical
skeleton."""

from __future__ import annotations

import re

from inference.content_filter.rules import Rule

_TOKEN = re.compile(r"[^ ]+")


class _KeywordIndex:
    """Every keyword rule's canonical forms, found by dictionary look-ups
    on the words of a canonical skeleton rather than one pattern each:
    the cost hardly grows with the number of rules.

    The work is linear in the length of the text: no look-up reaches
    further than the longest keyword, and a stretch of text is only
    extended while it still spells the beginning of some keyword.
    """

    def __init__(self, rules: list[Rule]) -> None:
        self.whole: dict[str, list[Rule]] = {}
        self.inside: dict[str, list[Rule]] = {}
        self.prefixes: set[str] = set()
        #: Beginnings of the one-word whole-word forms, for letters
        #: written apart.
        self.run_prefixes: set[str] = set()
        self.longest_words = 1
        self.longest_form = 0
        for rule in rules:
            for form in rule.keywords:
                target = self.whole if rule.whole_word else self.inside
                target.setdefault(form, []).append(rule)
                self.longest_words = max(self.longest_words, form.count(" ") + 1)
                self.longest_form = max(self.longest_form, len(form))
                spaced = [form, " ".join(form)] if " " not in form and len(form) >= 3 else [form]
                for spelling in spaced:
                    self.prefixes.update(spelling[:n] for n in range(1, len(spelling) + 1))
                if rule.whole_word and " " not in form:
                    self.run_prefixes.update(form[:n] for n in range(1, len(form) + 1))
        self.longest_prefix = max((len(p) for p in self.prefixes), default=0)

    def __bool__(self) -> bool:
        return bool(self.whole or self.inside)

    def _phrases(self, canon: str, words: list[tuple[int, int]]) -> list[tuple[Rule, int, int]]:
        """Whole-word keywords and phrases: spans of whole words."""
        spans: list[tuple[Rule, int, int]] = []
        longest = self.longest_form
        for i, (start, _end) in enumerate(words):
            for n in range(self.longest_words):
                if i + n >= len(words):
                    break
                end = words[i + n][1]
                if end - start > longest:
                    break
                for rule in self.whole.get(canon[start:end], ()):
                    spans.append((rule, start, end))
        return spans

    def _run(self, canon: str, run: list[tuple[int, int]]) -> list[tuple[Rule, int, int]]:
        """Letters written apart ("b a d"): a run of one-letter words read
        as one word, in which any stretch of three letters or more may be
        a whole-word keyword ("a z y l o p h i n" holds one)."""
        spans: list[tuple[Rule, int, int]] = []
        joined = "".join(canon[start] for start, _end in run)
        prefixes = self.run_prefixes
        for first in range(len(joined) - 2):
            last = first + 1
            # Only as long as the stretch still begins some keyword.
            while last <= len(joined) and joined[first:last] in prefixes:
                if last - first >= 3:
                    for rule in self.whole.get(joined[first:last], ()):
                        spans.append((rule, run[first][0], run[last - 1][1]))
                last += 1
        for form, rules in self.inside.items():
            at = joined.find(form)
            while at != -1:
                spans.extend((r, run[at][0], run[at + len(form) - 1][1]) for r in rules)
                at = joined.find(form, at + 1)
        return spans

    def find(self, canon: str, *, partial: bool) -> tuple[list[tuple[Rule, int, int]], int | None]:
        """Return (rule, start, end) spans in canon and, with partial, the
        earliest position a keyword may still be in progress from."""
        words = [(m.start(), m.end()) for m in _TOKEN.finditer(canon)]
        spans = self._phrases(canon, words)
        i = 0
        last_run_start = None
        while i < len(words):
            j = i
            while j < len(words) and words[j][1] - words[j][0] == 1:
                j += 1
            if j == len(words) and j > i:
                last_run_start = words[i][0]
            if j - i >= 3:
                spans.extend(self._run(canon, words[i:j]))
            i = max(j, i + 1)
        for form, rules in self.inside.items():
            at = canon.find(form)
            while at != -1:
                spans.extend((rule, at, at + len(form)) for rule in rules)
                at = canon.find(form, at + 1)
        if not partial:
            return spans, None
        hold = None
        # The longest end of the text that begins some keyword may grow
        # into it (a complete keyword too: the next letter may make it a
        # longer, innocent word).
        for n in range(min(self.longest_prefix, len(canon)), 0, -1):
            if canon[-n:] in self.prefixes:
                hold = len(canon) - n
                break
        if last_run_start is not None and not canon.endswith(" "):
            # Letters written apart, the last one perhaps the start of a
            # longer word: wait for the word to end before reading the run.
            hold = last_run_start if hold is None else min(hold, last_run_start)
        ending = [s for s in spans if s[2] == len(canon)]
        if ending:
            first = min(s[1] for s in ending)
            hold = first if hold is None else min(hold, first)
        if hold is not None:
            spans = [s for s in spans if s[2] <= hold]
        return spans, hold
