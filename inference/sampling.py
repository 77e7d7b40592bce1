"""The sampler: the next token for one request from its logits. No Django
here; the parameters it follows live in ``inference.protocol``."""

from __future__ import annotations

import torch

from inference.engine_types import TokenLogprob
from inference.protocol import SamplingParams

#: How many of the most likely tokens top-p looks at first.
NUCLEUS_FIRST_K = 64
NUCLEUS_WIDER_K = 1024


class Sampler:
    """Pick the next token for one request from its logits row."""

    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed)

    @property
    def penalizes(self) -> bool:
        params = self.params
        return (
            params.repetition_penalty != 1.0
            or params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
        )

    def penalize(
        self, logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the repetition penalty (as transformers does) to the seen
        ids (prompt and answer), then OpenAI's frequency and presence
        penalties to the generated ones: logit -= frequency * count +
        presence * (count > 0)."""
        params = self.params
        penalty = params.repetition_penalty
        if penalty != 1.0 and seen.numel():
            logits = logits.clone()
            picked = logits.gather(0, seen)
            picked = torch.where(picked < 0, picked * penalty, picked / penalty)
            logits.scatter_(0, seen, picked)
        if (
            generated is not None
            and generated.numel()
            and (params.frequency_penalty != 0.0 or params.presence_penalty != 0.0)
        ):
            ids, counts = torch.unique(generated, return_counts=True)
            shift = params.frequency_penalty * counts.to(logits.dtype) + params.presence_penalty
            logits = logits.clone()
            logits.index_add_(0, ids, -shift)
        return logits

    def nucleus(self, logits: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The tokens that may be picked and their probabilities (summing to
        1): the top_k most likely, then the smallest prefix of those whose
        mass reaches top_p, then those within min_p of the most likely. ids
        is None when every token may be picked (probabilities of 0 are
        never picked).

        Top-p looks at the most likely tokens first and widens only when
        they do not hold top_p of the mass, so a peaked distribution costs
        a small top-k instead of a sort of the whole vocabulary."""
        params = self.params
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        vocab = probs.shape[-1]
        limit = params.top_k if 0 < params.top_k < vocab else vocab
        if limit == vocab and params.top_p >= 1.0:
            return None, self._min_p(probs)
        if limit < vocab:
            values, ids = torch.topk(probs, limit)
            values = values / values.sum()
        else:
            k = min(NUCLEUS_FIRST_K, vocab)
            while True:
                if k >= vocab:
                    # Everything, in order: a sort is cheaper than a top-k
                    # of the whole vocabulary.
                    values, ids = torch.sort(probs, descending=True)
                    break
                values, ids = torch.topk(probs, k)
                if float(values.sum()) >= params.top_p:
                    break
                # Then a wider look, then everything.
                k = NUCLEUS_WIDER_K if k < NUCLEUS_WIDER_K else vocab
        if params.top_p < 1.0:
            # Keep the smallest prefix whose mass reaches top_p (at least one).
            keep = int(((values.cumsum(dim=-1) - values) < params.top_p).sum())
            values, ids = values[: max(keep, 1)], ids[: max(keep, 1)]
        return ids, self._min_p(values / values.sum())

    def _min_p(self, probs: torch.Tensor) -> torch.Tensor:
        """Last, as transformers orders its warpers: drop the tokens under
        min_p times the most likely one's probability, and renormalize."""
        if self.params.min_p <= 0.0:
            return probs
        kept = torch.where(probs >= self.params.min_p * probs.max(), probs, 0.0)
        return kept / kept.sum()

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The nucleus as a distribution over the whole vocabulary."""
        ids, values = self.nucleus(logits)
        if ids is None:
            return values
        zeros = torch.zeros(logits.shape[-1], dtype=values.dtype, device=values.device)
        return zeros.scatter(0, ids, values)

    @staticmethod
    def prompt_logprobs(logits: torch.Tensor, tokens: list[int], count: int) -> list[TokenLogprob]:
        """Each token's log-probability from the logits row before it (the
        model's own distribution, no temperature), with count alternatives."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs.gather(1, torch.tensor(tokens, device=logits.device)[:, None])[:, 0]
        tops: list[tuple[tuple[int, float], ...]] = [()] * len(tokens)
        if count:
            values, ids = torch.topk(logprobs, min(count, logprobs.shape[-1]), dim=-1)
            tops = [
                tuple(zip(row_ids, row_values, strict=True))
                for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)
            ]
        return [
            TokenLogprob(token=token, logprob=float(lp), top=top)
            for token, lp, top in zip(tokens, chosen.tolist(), tops, strict=True)
        ]

    def logprobs(self, logits: torch.Tensor, token: int) -> TokenLogprob:
        """The chosen token's log-probability and the top alternatives',
        from logits as the sampler saw them (penalties applied), scaled by
        the temperature (1 when greedy)."""
        params = self.params
        temperature = params.temperature if params.temperature > 0 else 1.0
        logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
        top: tuple[tuple[int, float], ...] = ()
        count = params.logprobs or 0
        if count:
            values, ids = torch.topk(logprobs, min(count, logprobs.shape[-1]))
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        return TokenLogprob(token=token, logprob=float(logprobs[token]), top=top)

    def sample(self, logits: torch.Tensor) -> int:
        if self.params.greedy:
            return int(torch.argmax(logits))
        ids, values = self.nucleus(logits)
        # Inverse CDF: one cumulative sum and a binary search cost less
        # than multinomial on a large support, for the same distribution.
        cumulative = values.cumsum(dim=-1)
        target = torch.rand(1, generator=self.generator, device=values.device) * cumulative[-1]
        picked = torch.searchsorted(cumulative, target).clamp_(max=values.shape[-1] - 1)
        return int(ids[picked]) if ids is not None else int(picked)

    def verify(self, logits: torch.Tensor, draft: int) -> tuple[int, bool]:
        """Check a drafted token: return the token to keep and whether it
        is the draft. Greedy keeps the argmax. Sampling accepts the draft
        with its probability and otherwise samples from the rest, which
        leaves the output distribution exactly that of ``sample``."""
        if self.params.greedy:
            token = int(torch.argmax(logits))
            return token, token == draft
        probs = self._probs(logits)
        if float(torch.rand(1, generator=self.generator)) < float(probs[draft]):
            return draft, True
        probs[draft] = 0.0
        total = float(probs.sum())
        if total <= 0.0:
            return int(torch.argmax(logits)), False
        return int(torch.multinomial(probs / total, 1, generator=self.generator)), False
