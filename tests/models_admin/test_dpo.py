"""Preference pairs (the upload format) and the DPO loss, against a
computation written out token by token on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models_admin.dataset_format import DatasetFormatError, jsonl_parse, pair_parse
from models_admin.training.dpo import dpo_loss, dpo_step, pair_batch, pair_encode

PROMPT = [{"role": "user", "content": "Can I return a used kettle?"}]
PAIR = {
    "prompt": PROMPT,
    "chosen": "Only unused items can be returned within 30 days.",
    "rejected": "Yes, return anything at any time.",
}


def _lines(*values) -> bytes:
    return "\n".join(v if isinstance(v, str) else json.dumps(v) for v in values).encode()


def test_a_good_pair_file_is_read():
    history = [
        {"role": "system", "content": "You work for a shop."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Returns?"},
    ]
    pairs = jsonl_parse(
        _lines(PAIR, {**PAIR, "prompt": history}), parse_line=pair_parse
    )  # fmt: skip
    assert pairs[0] == PAIR and pairs[1]["prompt"] == history


def test_a_bad_pair_file_is_refused_whole_with_every_bad_line_named():
    bad = [
        PAIR,
        {**PAIR, "chosen": ""},
        {k: v for k, v in PAIR.items() if k != "rejected"},
        {**PAIR, "prompt": [{"role": "assistant", "content": "Hi"}]},
        {**PAIR, "prompt": [*PROMPT, {"role": "assistant", "content": "So?"}]},
        {**PAIR, "rejected": PAIR["chosen"]},
        {**PAIR, "rejected": 5},
        "not json",
    ]
    with pytest.raises(DatasetFormatError) as caught:
        jsonl_parse(_lines(*bad), parse_line=pair_parse)
    errors = {error.line: error.error for error in caught.value.errors}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8]
    assert errors[2] == '"chosen" is empty'
    assert errors[3] == 'the object has no "rejected" key'
    assert "in the prompt" in errors[4] and "should be" in errors[4]
    assert "must end with an assistant" not in errors[5] and "in the prompt" in errors[5]
    assert errors[6] == '"chosen" and "rejected" are the same answer'
    assert errors[7].startswith('"rejected" must be a string')
    assert errors[8].startswith("not valid JSON")


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # A policy a little away from the reference, so the rewards are not 0.
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return policy, reference, AutoTokenizer.from_pretrained(tiny_model_dir)


def _answer_logp(model, tokenizer, prompt, answer) -> float:
    """log p(answer | prompt), one token at a time with its own forward."""
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=False
    )
    ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    # The answer's tokens, its end of turn and the line break after it
    # (as the template closes a turn; fine-tuning learns them too).
    total = 0.0
    with torch.no_grad():
        for position in range(start, len(ids)):
            logits = model(torch.tensor([ids[:position]])).logits[0, -1]
            total += float(torch.log_softmax(logits.double(), -1)[ids[position]])
    return total


def test_the_dpo_loss_equals_the_formula_computed_token_by_token(models):
    policy, reference, tokenizer = models
    pairs = [
        PAIR,
        {"prompt": [{"role": "user", "content": "Do you ship abroad?"}],
         "chosen": "Yes, to most of Europe.", "rejected": "No."},
    ]  # fmt: skip
    encoded = [pair_encode(tokenizer, p, max_length=256) for p in pairs]
    assert all(e is not None for e in encoded)
    batch = pair_batch(encoded, pad_id=tokenizer.pad_token_id or 0)
    beta = 0.1
    output = dpo_step(policy, reference, batch, beta=beta)
    expected_losses, margins = [], []
    for pair in pairs:
        pc, pr = (_answer_logp(policy, tokenizer, pair["prompt"], pair[k])
                  for k in ("chosen", "rejected"))  # fmt: skip
        rc, rr = (_answer_logp(reference, tokenizer, pair["prompt"], pair[k])
                  for k in ("chosen", "rejected"))  # fmt: skip
        margin = beta * ((pc - rc) - (pr - rr))
        margins.append(margin)
        expected_losses.append(-math.log(1 / (1 + math.exp(-margin))))
    assert float(output.loss) == pytest.approx(sum(expected_losses) / 2, abs=1e-4)
    assert output.margins.tolist() == pytest.approx(margins, abs=1e-4)
    assert output.accuracy == sum(m > 0 for m in margins) / 2


def test_at_the_reference_the_loss_is_log_2_and_gradients_favour_the_chosen(models):
    _policy, reference, tokenizer = models
    batch = pair_batch([pair_encode(tokenizer, PAIR, max_length=256)], pad_id=0)
    output = dpo_step(reference, reference, batch, beta=0.5)
    assert float(output.loss) == pytest.approx(math.log(2), abs=1e-6)
    zero = torch.zeros(1)
    assert float(dpo_loss(zero + 1, zero, zero, zero, beta=1.0).loss) < math.log(2)
