"""A smaller student made from a teacher by keeping some of its layers,
and the student's own answers for on-policy distillation."""

from __future__ import annotations

import copy
import random
from typing import Any

import torch
from torch import nn

from models_admin.training.data import IGNORE, Encoded, last_answer_span


def layers_to_keep(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced layer indices out of ``total``, the first and
    the last always among them."""
    if not 1 <= keep <= total:
        raise ValueError(f"a student keeps between 1 and {total} layers, not {keep}")
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def student_from_teacher(teacher: Any, *, layers: int) -> Any:
    """A copy of the teacher with only the kept decoder layers; embeddings,
    final norm and head are copied as they are."""
    student = copy.deepcopy(teacher)
    decoder = student.model
    kept = layers_to_keep(len(decoder.layers), layers)
    decoder.layers = nn.ModuleList(decoder.layers[i] for i in kept)
    for new_index, layer in enumerate(decoder.layers):
        # Attention modules index their slot in the KV cache by layer.
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_index
    student.config.num_hidden_layers = len(kept)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in kept]
    return student


def on_policy_draw(share: float, seed: int, batch_number: int) -> bool:
    """Whether a distill batch is written by the student: drawn from the
    seed and the batch's number, so a resumed run draws the same."""
    if share <= 0:
        return False
    draw = random.Random(seed * 1_000_003 + batch_number).random()  # noqa: S311
    return draw < share


@torch.no_grad()
def student_answers(
    model: Any, examples: list[Encoded], max_new_tokens: int, pad_id: int
) -> list[Encoded]:
    """Each example's conversation up to its last answer, answered by the
    model itself (sampled at temperature 1); labels on the new tokens."""
    answered = []
    for example in examples:
        prompt = example.input_ids[: last_answer_span(example.labels)[0]]
        output = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            use_cache=True,
            pad_token_id=pad_id,
        )
        new = output[0, len(prompt) :].tolist()
        if not new:
            answered.append(example)
            continue
        answered.append(Encoded(input_ids=prompt + new, labels=[IGNORE] * len(prompt) + new))
    return answered
