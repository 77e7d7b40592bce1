"""A smaller student made from a teacher by keeping some of its layers."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn


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
