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


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k", "min_p"),
    [(1.0, 1.0, 0, 0.05), (0.7, 0.9, 0, 0.1), (1.0, 0.95, 40, 0.2), (1.5, 1.0, 0, 0.5)],
)
def test_min_p_keeps_what_transformers_keeps(temperature, top_p, top_k, min_p):
    """Same tokens, same probabilities as transformers' warpers in its
    order: temperature, top-k, top-p, min-p."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(5000, generator=generator) * 4.0
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p)
    got = Sampler(params, torch.device("cpu"))._probs(logits)
    scores = logits[None].clone()
    warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    warpers.append(MinPLogitsWarper(min_p))
    for warper in warpers:
        scores = warper(None, scores)
    want = torch.softmax(scores[0], dim=-1)
    assert torch.equal(got > 0, want > 0), "the same tokens may be picked"
    assert torch.allclose(got, want, atol=1e-6)


def test_frequency_and_presence_penalties_follow_openai():
    """logit -= frequency * count + presence * (count > 0), on generated
    tokens only; the prompt's tokens are left alone."""
    logits = torch.zeros(10)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0)
    sampler = Sampler(params, torch.device("cpu"))
    assert sampler.penalizes
    seen = torch.tensor([1, 2, 2, 3, 3, 3])  # prompt 1, then generated 2, 2, 3, 3, 3
    got = sampler.penalize(logits, seen, torch.tensor([2, 2, 3, 3, 3]))
    want = torch.zeros(10)
    want[2] = -(0.5 * 2 + 1.0)
    want[3] = -(0.5 * 3 + 1.0)
    assert torch.equal(got, want)
    # A negative penalty encourages repeats.
    encouraging = Sampler(SamplingParams(presence_penalty=-1.0), torch.device("cpu"))
    assert encouraging.penalize(logits, seen, torch.tensor([4]))[4] == 1.0
    assert not Sampler(SamplingParams(), torch.device("cpu")).penalizes


@pytest.mark.parametrize(
    ("name", "value"),
    [("min_p", 1.5), ("min_p", -0.1), ("frequency_penalty", 2.5), ("presence_penalty", -3.0)],
)
def test_penalties_and_min_p_out_of_range_are_refused_by_name(name, value):
    from inference.protocol import SamplingError

    with pytest.raises(SamplingError, match=name):
        SamplingParams.from_dict({name: value})
