"""Scoring text with a GGUF model: the cross-entropy of labelled tokens,
as the training loop measures it for a transformers model. No Django."""

from __future__ import annotations

import numpy as np

from inference.llamacpp.runtime import LlamaRuntime

IGNORE = -100


def labelled_token_losses(
    runtime: LlamaRuntime, examples: list[tuple[list[int], list[int]]], *, sequence: int = 0
) -> tuple[float, int]:
    """Summed cross-entropy of every labelled token given the ones before
    it, and how many there were. labels[i] is the id expected at position
    i, or IGNORE for tokens that are not scored (the prompt)."""
    total, count = 0.0, 0
    for ids, labels in examples:
        runtime.sequence_clear(sequence)
        for start in range(0, len(ids), runtime.batch_tokens):
            chunk = ids[start : start + runtime.batch_tokens]
            runtime.decode([(t, start + k, sequence, True) for k, t in enumerate(chunk)])
            for k in range(len(chunk)):
                target = start + k + 1
                if target >= len(ids) or labels[target] == IGNORE:
                    continue
                logits = runtime.logits(k).astype(np.float64)
                peak = logits.max()
                log_total = peak + np.log(np.exp(logits - peak).sum())
                total += float(log_total - logits[labels[target]])
                count += 1
    runtime.sequence_clear(sequence)
    return total, count
