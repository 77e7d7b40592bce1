"""Beam search over the rows of a request group. No Django here.

The search keeps ``beams`` running sequences and up to ``beams`` finished
ones, and at each step follows transformers' ``generate(num_beams=...)``
step for step (the same float32 operations in the same order, so the same
ties break the same way): the log-softmax of each running beam's logits
plus its score; the best ``2 x beams`` continuations (more with several
end tokens); the best ``beams`` that do not end run on; those among the
first ``beams`` that end (an end token, or the length limit) join the
finished set when they score well enough, a finished score being the
log-probability over the answer's length to the power
``length_penalty``.

The engine owns the rows: it feeds each running beam's last token, hands
the logits here (``step``), and moves KV memory as the returned parents
say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from inference.protocol import SamplingParams

#: What transformers adds to a score to rule a sequence out.
RULED_OUT = -1.0e9


@dataclass(frozen=True)
class BeamStep:
    """The running beams after a step: beam j continues beam parents[j]
    with tokens[j]. ``done``: the search has ended."""

    parents: list[int]
    tokens: list[int]
    done: bool


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]
    score: float
    #: Ended by an end token (rather than by the length limit).
    ended: bool


class BeamSearch:
    def __init__(self, params: SamplingParams, *, eos_ids: set[int], max_context: int) -> None:
        self.params = params
        self.beams = params.beams
        self.eos_ids = set() if params.ignore_eos else set(eos_ids)
        self.eos_tensor = torch.tensor(sorted(self.eos_ids), dtype=torch.long)
        self.max_context = max_context
        self.keep = max(2, 1 + len(self.eos_ids)) * self.beams
        beams = self.beams
        self.running_scores = torch.zeros((1, beams), dtype=torch.float32)
        self.running_scores[:, 1:] = RULED_OUT
        self.sequences: list[list[int]] = [[] for _ in range(beams)]
        self.finished_scores = torch.full((1, beams), RULED_OUT, dtype=torch.float32)
        self.finished: list[list[int]] = [[] for _ in range(beams)]
        self.is_finished = torch.zeros((1, beams), dtype=torch.bool)
        self.improvable = torch.ones((1, 1), dtype=torch.bool)
        self.top_mask = torch.cat(
            (torch.ones(beams, dtype=torch.bool), torch.zeros(self.keep - beams, dtype=torch.bool))
        )
        self.generated = 0
        self.limit = 0
        # Engine bookkeeping: the requests holding the running beams (one
        # before the first step), those not started yet, and the logits
        # gathered this step.
        self.rows: list[Any] = []
        self.spare: list[Any] = []
        self.gathered: dict[int, torch.Tensor] = {}

    def start(self, prompt_tokens: int) -> None:
        """Fix the length limit once the prompt's length is known."""
        self.limit = max(min(self.params.max_new_tokens, self.max_context - prompt_tokens), 1)

    def step(self, log_probs: torch.Tensor) -> BeamStep:
        """Advance by one token. log_probs: [beams, vocab], each running
        beam's next-token log-probabilities (penalties applied)."""
        beams, vocab = log_probs.shape
        assert beams == self.beams
        scores = log_probs.float()[None] + self.running_scores[:, :, None]
        scores = scores.reshape(1, beams * vocab)
        top_scores, top_indices = torch.topk(scores, k=min(self.keep, beams * vocab))
        keep = top_scores.shape[1]
        parents = torch.div(top_indices, vocab, rounding_mode="floor")[0]
        tokens = (top_indices % vocab)[0]
        length = self.generated + 1
        at_limit = length >= self.limit
        if at_limit:
            hits = torch.ones((1, keep), dtype=torch.bool)
        elif len(self.eos_tensor):
            hits = torch.isin(tokens, self.eos_tensor)[None]
        else:
            hits = torch.zeros((1, keep), dtype=torch.bool)
        # The best continuations that do not end run on.
        running = top_scores + hits.to(torch.float32) * RULED_OUT
        chosen = torch.topk(running, k=beams)[1][0]
        next_scores = running[:, chosen]
        next_parents = [int(parents[c]) for c in chosen]
        next_tokens = [int(tokens[c]) for c in chosen]
        # Those of the first ``beams`` that end may join the finished set.
        just_finished = hits & self.top_mask[None, :keep]
        normalized = top_scores / (length**self.params.length_penalty)
        full = torch.all(self.is_finished, dim=-1, keepdim=True) & (
            self.params.early_stopping is True
        )
        normalized = normalized + full.to(torch.float32) * RULED_OUT
        normalized = normalized + (~self.improvable).to(torch.float32) * RULED_OUT
        normalized = normalized + (~just_finished).to(torch.float32) * RULED_OUT
        merged_scores = torch.cat((self.finished_scores, normalized), dim=1)
        merged_finished = torch.cat((self.is_finished, just_finished), dim=1)
        picked = torch.topk(merged_scores, k=beams)[1][0]
        candidates = [self.sequences[int(parents[c])] + [int(tokens[c])] for c in range(keep)]
        merged_sequences = self.finished + candidates
        self.finished = [merged_sequences[int(i)] for i in picked]
        self.finished_scores = merged_scores[:, picked]
        self.is_finished = merged_finished[:, picked]
        # The running beams move on.
        self.sequences = [
            self.sequences[p] + [t] for p, t in zip(next_parents, next_tokens, strict=True)
        ]
        self.running_scores = next_scores
        self.generated = length
        self._improvable_update()
        done = not self._unfinished(hits)
        return BeamStep(parents=next_parents, tokens=next_tokens, done=done)

    def _improvable_update(self) -> None:
        """Whether the best running beam could still beat the worst
        finished one (transformers' early-stopping heuristic)."""
        penalty = self.params.length_penalty
        if self.params.early_stopping == "never" and penalty > 0.0:
            best = self.running_scores[:, :1] / (self.limit**penalty)
        else:
            best = self.running_scores[:, :1] / (self.generated**penalty)
        worst = torch.where(
            self.is_finished,
            torch.min(self.finished_scores, dim=1, keepdim=True)[0],
            torch.tensor(RULED_OUT),
        )
        self.improvable = self.improvable & torch.any(best > worst, dim=-1, keepdim=True)

    def _unfinished(self, hits: torch.Tensor) -> bool:
        improvement = bool(torch.any(self.improvable))
        open_beam = not (bool(torch.all(self.is_finished)) and self.params.early_stopping is True)
        continuations = not bool(torch.all(hits))
        return improvement and open_beam and continuations

    def best(self, count: int) -> list[Hypothesis]:
        """The best count finished sequences, best first."""
        out = []
        for index in range(min(count, self.beams)):
            tokens = self.finished[index]
            if not bool(self.is_finished[0, index]) and not tokens:
                continue
            out.append(
                Hypothesis(
                    tokens=list(tokens),
                    score=float(self.finished_scores[0, index]),
                    ended=bool(tokens) and tokens[-1] in self.eos_ids,
                )
            )
        return out
