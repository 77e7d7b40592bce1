"""Turning conversations into token ids with an assistant-only loss mask.

The mask is computed from the rendered chat template, not from markers in
it: SmolLM2's template has no generation markers, so options that rely on
them would silently train on nothing. Each assistant turn's span is the
text its message adds to the rendering of everything before it (rendered
with the generation prompt), so the role header is context and the answer
with its end-of-turn token is what is learned.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

IGNORE = -100


class TemplateError(ValueError):
    """The chat template does not render conversations incrementally."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation; return the text and the character spans of
    the assistant turns (answer text through the end-of-turn marker)."""
    text = _render(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True) if index else ""
        through = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not through.startswith(before) or not text.startswith(through):
            raise TemplateError(
                "the chat template does not render a conversation as the sum of its turns"
            )
        spans.append((len(before), len(through)))
    return text, spans


def encode(tokenizer: Any, messages: list[dict[str, str]], *, max_length: int) -> Encoded:
    """Token ids and labels: labels are the ids on assistant spans and
    IGNORE elsewhere. Longer conversations are cut at max_length tokens."""
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    labels = []
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        inside = any(start >= lo and end <= hi and end > start for lo, hi in spans)
        labels.append(token_id if inside else IGNORE)
    return Encoded(input_ids=ids[:max_length], labels=labels[:max_length])


def last_answer_span(labels: list[int]) -> tuple[int, int]:
    """(start, end) of the last labelled run of labels: the final answer."""
    end = len(labels)
    while end > 0 and labels[end - 1] == IGNORE:
        end -= 1
    start = end
    while start > 0 and labels[start - 1] != IGNORE:
        start -= 1
    return start, end


def collate(batch: list[Encoded], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked and ignored."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item.input_ids)
        input_ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


@lru_cache(maxsize=8)
def _epoch_order(count: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # noqa: S311 (data order, not secrets)
    return tuple(order)


def batch_indices(*, step: int, batch_size: int, count: int, seed: int) -> list[int]:
    """The example indices of a step (0-based): each epoch is reshuffled
    from the seed, so a resumed run sees exactly the batches it would have."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, count)
        indices.append(_epoch_order(count, seed, epoch)[offset])
    return indices


def shift_for_causal_lm(labels: torch.Tensor) -> torch.Tensor:
    """Labels aligned with the logits that predict them."""
    return labels[:, 1:]


def encode_all(
    tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int
) -> list[Encoded]:
    """Encode each conversation; leave out those with no trained token."""
    encoded = [encode(tokenizer, messages, max_length=max_length) for messages in conversations]
    return [item for item in encoded if item.trained_tokens > 0]
