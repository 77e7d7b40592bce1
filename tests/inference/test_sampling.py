"""The sampler's nucleus against the plain definition: sort everything,
keep the top_k, then the smallest prefix holding top_p of the mass."""

from __future__ import annotations

import pytest
import torch

from inference.protocol import SamplingParams
from inference.sampling import Sampler


def _reference(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        threshold = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("scale", [0.5, 4.0, 12.0], ids=["flat", "peaked", "very-peaked"])
@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k"),
    [(1.0, 0.95, 0), (0.7, 0.9, 0), (1.0, 1.0, 0), (1.0, 0.8, 40), (1.3, 1.0, 100)],
)
def test_the_nucleus_matches_the_definition(scale, temperature, top_p, top_k):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5000, generator=generator) * scale
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    got = Sampler(params, torch.device("cpu"))._probs(logits)
    want = _reference(logits, params)
    assert torch.equal(got > 0, want > 0), "the same tokens may be picked"
    assert torch.allclose(got, want, atol=1e-6)


def test_samples_come_only_from_the_nucleus():
    logits = torch.full((1000,), -20.0)
    logits[[3, 7, 11]] = torch.tensor([5.0, 4.0, 3.0])
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=5), torch.device("cpu"))
    picked = {sampler.sample(logits) for _ in range(200)}
    assert picked <= {3, 7} and 3 in picked


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_samples_follow_the_nucleus_distribution(top_p):
    logits = torch.full((2000,), -30.0)
    logits[[10, 20, 30, 40]] = torch.tensor([2.0, 1.5, 1.0, 0.0])
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=top_p, seed=11), torch.device("cpu"))
    want = sampler._probs(logits)
    counts = torch.zeros(2000)
    for _ in range(20_000):
        counts[sampler.sample(logits)] += 1
    assert torch.allclose(counts / counts.sum(), want, atol=0.01)
