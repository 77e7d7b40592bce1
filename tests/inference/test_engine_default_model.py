"""The engine on the default model gives the same text as transformers
``generate`` on a fixed prompt set, with and without speculative drafts."""

from __future__ import annotations

import pytest
import torch

from inference.engine import Engine
from inference.loading import model_load
from inference.protocol import SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Repeat this sentence exactly, twice: The quick brown fox jumps over the lazy dog.",
    "List three colours of the rainbow.",
    "Write a Python function that adds two numbers.",
]


@pytest.fixture(scope="module")
def smollm(default_model_dir):
    if default_model_dir is None:
        pytest.fail("the default model is missing: run `make test` (it fetches it first)")
    return model_load(default_model_dir, device="cpu", dtype="float32")


def _hf(loaded, messages, max_new_tokens: int) -> str:
    inputs = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = loaded.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=sorted(loaded.eos_token_ids),
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    return loaded.tokenizer.decode(
        output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )


@pytest.fixture(scope="module")
def expected(smollm) -> list[str]:
    return [_hf(smollm, [{"role": "user", "content": prompt}], 40) for prompt in PROMPTS]


@pytest.mark.parametrize("speculative_tokens", [0, 4])
def test_batched_greedy_answers_equal_generate_one_by_one(smollm, expected, speculative_tokens):
    engine = Engine(smollm, slots=4, max_context=1024, speculative_tokens=speculative_tokens)
    params = SamplingParams(temperature=0, max_new_tokens=40)
    texts: dict[str, str] = {}
    finals = {}
    steps = 0
    pending = list(enumerate(PROMPTS))
    while pending or engine.has_work():
        if pending:  # staggered arrivals, one per step
            index, prompt = pending.pop(0)
            messages = [{"role": "user", "content": prompt}]
            engine.submit(str(index), messages=messages, params=params)
        for event in engine.step():
            texts[event.request_id] = texts.get(event.request_id, "") + event.text
            if event.finished:
                finals[event.request_id] = event
        steps += 1
    for index, prompt in enumerate(PROMPTS):
        assert texts.get(str(index), "") == expected[index], prompt
    produced = sum(e.completion_tokens for e in finals.values())
    if speculative_tokens:
        # The copying prompt lets drafts through: fewer steps than tokens.
        assert steps < produced


def test_speculative_sampling_is_reproducible_with_a_seed(smollm):
    params = SamplingParams(temperature=0.8, top_p=0.9, seed=3, max_new_tokens=30)
    messages = [{"role": "user", "content": PROMPTS[1]}]
    runs = []
    for _ in range(2):
        engine = Engine(smollm, slots=2)
        engine.submit("x", messages=messages, params=params)
        text = ""
        while engine.has_work():
            text += "".join(e.text for e in engine.step())
        runs.append(text)
    assert runs[0] == runs[1]
    assert torch.get_num_threads() >= 1


def test_beam_search_and_logprobs_equal_transformers_on_the_default_model(smollm):
    """Four beams give transformers' beams token for token; each greedy
    token's log-probability and its alternatives' are transformers' own
    (scores of generate) within 1e-4."""
    from inference.engine_base import chat_prompt_ids
    from tests.inference.test_choices_beams import _hf_beams

    prompts = [
        chat_prompt_ids(smollm.tokenizer, [{"role": "user", "content": text}])
        for text in PROMPTS[:2]
    ]
    engine = Engine(smollm, slots=8, max_context=1024)
    beams = SamplingParams(temperature=0, beams=4, n=2, max_new_tokens=16)
    for index, prompt in enumerate(prompts):
        engine.submit(f"b{index}", prompt=prompt, params=beams)
    greedy = SamplingParams(temperature=0, max_new_tokens=12, logprobs=5)
    engine.submit("g", prompt=prompts[0], params=greedy)
    finals: dict[tuple[str, int], list[int]] = {}
    logprobs = []
    while engine.has_work():
        for event in engine.step():
            if event.request_id == "g" and event.logprobs:
                logprobs.extend(event.logprobs)
            if event.finished:
                finals[(event.request_id, event.index)] = event.token_ids
    for index, prompt in enumerate(prompts):
        expected = _hf_beams(
            smollm, prompt, beams=4, n=2, max_new_tokens=16, length_penalty=1.0,
            early_stopping=False,
        )  # fmt: skip
        assert [finals[(f"b{index}", 0)], finals[(f"b{index}", 1)]] == expected
    output = smollm.model.generate(
        torch.tensor([prompts[0]]),
        max_new_tokens=12,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        output_logits=True,
        return_dict_in_generate=True,
        eos_token_id=sorted(smollm.eos_token_ids),
        pad_token_id=smollm.tokenizer.pad_token_id,
    )
    reference = [torch.log_softmax(step[0].float(), dim=-1) for step in output.logits]
    assert [e.token for e in logprobs] == output.sequences[0, len(prompts[0]) :].tolist()
    for entry, row in zip(logprobs, reference, strict=True):
        assert abs(entry.logprob - float(row[entry.token])) < 1e-4
        values, ids = torch.topk(row, 5)
        assert [t for t, _lp in entry.top] == ids.tolist()
        gaps = [abs(lp - float(v)) for (_t, lp), v in zip(entry.top, values, strict=True)]
        assert max(gaps) < 1e-4
