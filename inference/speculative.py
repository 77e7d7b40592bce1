"""Prompt-lookup drafts for speculative decoding. No Django here.

A request's own text (prompt and answer so far) often predicts what comes
next: code being edited, names, quoted passages, lists. ``PromptLookup``
finds the latest earlier occurrence of the last few tokens and proposes
the tokens that followed it; the engine checks the whole draft in one
forward and keeps what the model would have produced anyway, so greedy
output is unchanged and sampled output keeps its distribution.
"""

from __future__ import annotations

NGRAM_SIZES = (3, 2)
#: Stop drafting for a request whose drafts are rarely right.
MIN_ACCEPT_RATE = 0.1
PROBATION = 32


class PromptLookup:
    def __init__(self) -> None:
        self._index: dict[tuple[int, ...], int] = {}
        self._tokens: list[int] = []
        self.proposed = 0
        self.accepted = 0

    def observe(self, prompt: list[int], generated: list[int]) -> None:
        """Index the tokens added since the last call."""
        total = len(prompt) + len(generated)
        if len(self._tokens) < len(prompt):
            self._tokens = list(prompt)
            self._index_from(1)
        if len(self._tokens) < total:
            start = len(self._tokens)
            self._tokens.extend(generated[start - len(prompt) :])
            self._index_from(start)

    def _index_from(self, start: int) -> None:
        tokens, index = self._tokens, self._index
        for follower in range(max(start, 1), len(tokens)):
            for size in NGRAM_SIZES:
                if follower >= size:
                    index[tuple(tokens[follower - size : follower])] = follower

    def propose(self, prompt: list[int], generated: list[int], room: int) -> list[int]:
        """Up to room tokens that followed the latest earlier occurrence of
        the current tail, or nothing."""
        if room <= 0 or (
            self.proposed >= PROBATION and self.accepted < MIN_ACCEPT_RATE * self.proposed
        ):
            return []
        self.observe(prompt, generated)
        tokens = self._tokens
        for size in NGRAM_SIZES:
            if len(tokens) <= size:
                continue
            follower = self._index.get(tuple(tokens[-size:]))
            if follower is not None:
                return tokens[follower : follower + room]
        return []

    def record(self, *, proposed: bool, accepted: bool) -> None:
        if proposed:
            self.proposed += 1
            self.accepted += int(accepted)
