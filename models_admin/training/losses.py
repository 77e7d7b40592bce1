"""Losses of the training loop: cross-entropy on the labelled tokens,
distillation's KL + cross-entropy, and the eval loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from models_admin.training.data import IGNORE, Encoded, collate


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the labelled tokens and their count."""
    shifted_logits = logits[:, :-1].reshape(-1, logits.size(-1))
    shifted_labels = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE, reduction="sum")
    return total, int((shifted_labels != IGNORE).sum())


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha)
    * cross-entropy, both averaged over the assistant tokens."""
    mask = labels[:, 1:] != IGNORE
    count = int(mask.sum())
    student = student_logits[:, :-1][mask] / temperature
    teacher = teacher_logits[:, :-1][mask] / temperature
    kl = F.kl_div(
        F.log_softmax(student, dim=-1),
        F.log_softmax(teacher, dim=-1),
        log_target=True,
        reduction="sum",
    ) / max(count, 1)
    ce_sum, _ = token_losses(student_logits, labels)
    ce = ce_sum / max(count, 1)
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss, {"kl": float(kl.detach()), "ce": float(ce.detach())}


@torch.no_grad()
def eval_loss(
    model: Any,
    examples: list[Encoded],
    *,
    pad_id: int,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Mean cross-entropy per assistant token (the training mask);
    progress is told how many examples are scored after each batch."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id=pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_sum, n = token_losses(logits.float(), batch["labels"])
        total += float(loss_sum)
        count += n
        if progress is not None:
            progress(min(start + batch_size, len(examples)))
    if was_training:
        model.train()
    return total / max(count, 1)
