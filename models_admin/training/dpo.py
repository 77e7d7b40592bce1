"""Direct preference optimisation (DPO): the loss, and preference pairs
as the model reads them. No Django here.

A pair is a prompt (a conversation ending with a user's turn) with a
chosen and a rejected answer. The policy is trained so that, relative to
a frozen reference model (the base version), it makes the chosen answer
more likely than the rejected one:

    margin = beta * ((log pi(chosen) - log ref(chosen))
                     - (log pi(rejected) - log ref(rejected)))
    loss = -log sigmoid(margin)

where log p(answer) sums the log-probabilities of the answer's tokens
given the prompt (Rafailov et al., 2023, the "sigmoid" loss). The
rewards beta * (log pi - log ref) of each answer, their margin and the
share of pairs whose chosen answer earns more (preference accuracy) are
what the job reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from models_admin.training.data import IGNORE, Encoded, collate, encode, last_answer_span

Pair = dict[str, Any]


@dataclass(frozen=True)
class EncodedPair:
    chosen: Encoded
    rejected: Encoded


def _last_answer_only(encoded: Encoded) -> Encoded:
    """Labels on the final answer's tokens only (earlier answers in the
    prompt are context)."""
    labels = list(encoded.labels)
    start, end = last_answer_span(labels)
    return Encoded(
        input_ids=encoded.input_ids,
        labels=[label if start <= i < end else IGNORE for i, label in enumerate(labels)],
    )


def pair_encode(tokenizer: Any, pair: Pair, *, max_length: int) -> EncodedPair | None:
    """Token ids of prompt + chosen and prompt + rejected, labels on each
    answer; None when the length limit leaves either answer no token."""
    encoded = []
    for key in ("chosen", "rejected"):
        messages = [*pair["prompt"], {"role": "assistant", "content": pair[key]}]
        item = _last_answer_only(encode(tokenizer, messages, max_length=max_length))
        if item.trained_tokens == 0:
            return None
        encoded.append(item)
    return EncodedPair(chosen=encoded[0], rejected=encoded[1])


def pair_batch(pairs: list[EncodedPair], *, pad_id: int) -> dict[str, torch.Tensor]:
    """One batch: the chosen answers first, then the rejected ones."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id=pad_id)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of each row's log-probabilities of its labelled tokens (labels
    are shifted: position t's logits predict token t + 1)."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE
    picked = torch.gather(
        F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    return (picked * mask).sum(dim=-1)


@dataclass(frozen=True)
class DpoOutput:
    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> float:
        """Share of pairs whose chosen answer earns the higher reward."""
        return float((self.margins > 0).float().mean())


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
) -> DpoOutput:
    """The DPO loss of a batch from the answers' summed log-probabilities
    under the policy and the reference (see the module)."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return DpoOutput(loss, chosen_rewards.detach(), rejected_rewards.detach())


def reference_logps(
    policy: Any, reference: Any | None, inputs: dict[str, Any], labels: Any
) -> Any:
    """The reference's log-probabilities of a batch's answers, without
    gradients. A LoRA policy (reference None) is its own reference with
    its adapters turned off."""
    with torch.no_grad():
        if reference is not None:
            return sequence_logps(reference(**inputs).logits, labels)
        with policy.disable_adapter():
            return sequence_logps(policy(**inputs).logits, labels)


def dpo_step(
    policy: Any, reference: Any | None, batch: dict[str, torch.Tensor], *, beta: float
) -> DpoOutput:
    """Forward a pair batch (``pair_batch``) through the policy (with
    gradients) and the reference (without) and return the loss."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    half = batch["input_ids"].shape[0] // 2
    policy_logps = sequence_logps(policy(**inputs).logits, batch["labels"])
    ref_logps = reference_logps(policy, reference, inputs, batch["labels"])
    return dpo_loss(
        policy_logps[:half],
        policy_logps[half:],
        ref_logps[:half],
        ref_logps[half:],
        beta=beta,
    )


@torch.no_grad()
def dpo_eval(
    policy: Any,
    reference: Any | None,
    pairs: list[EncodedPair],
    *,
    beta: float,
    pad_id: int,
    batch_size: int = 4,
) -> dict[str, float]:
    """Held-out measures of a policy on pairs:

    - ``eval_accuracy``: share of pairs whose chosen answer earns the higher
      reward (beta * (log pi - log ref)), the preference accuracy;
    - ``eval_margin``: the mean reward margin; ``eval_dpo_loss``;
    - ``eval_logp_accuracy``: share of pairs whose chosen answer the policy
      alone finds more likely (a measure the reference itself has);
    - ``eval_loss``: cross-entropy per token of the chosen answers.
    """
    was_training = policy.training
    policy.eval()
    chosen_rewards, rejected_rewards, logp_wins = [], [], 0
    chosen_nll, chosen_tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        part = pairs[start : start + batch_size]
        batch = pair_batch(part, pad_id=pad_id)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        half = len(part)
        logps = sequence_logps(policy(**inputs).logits, batch["labels"])
        ref = reference_logps(policy, reference, inputs, batch["labels"])
        out = dpo_loss(logps[:half], logps[half:], ref[:half], ref[half:], beta=beta)
        chosen_rewards.append(out.chosen_rewards)
        rejected_rewards.append(out.rejected_rewards)
        logp_wins += int((logps[:half] > logps[half:]).sum())
        chosen_nll -= float(logps[:half].sum())
        chosen_tokens += sum(p.chosen.trained_tokens for p in part)
    if was_training:
        policy.train()
    if not pairs:
        return {}
    chosen = torch.cat(chosen_rewards)
    rejected = torch.cat(rejected_rewards)
    margins = chosen - rejected
    return {
        "eval_accuracy": round(float((margins > 0).float().mean()), 5),
        "eval_margin": round(float(margins.mean()), 5),
        "eval_dpo_loss": round(float(-F.logsigmoid(margins).mean()), 5),
        "eval_logp_accuracy": round(logp_wins / len(pairs), 5),
        "eval_loss": chosen_nll / max(chosen_tokens, 1),
    }
