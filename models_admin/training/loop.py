"""The training loop for fine-tune, distill and preference-tuning (DPO) jobs.

A run owns one folder. Checkpoints are written there as
``checkpoint-<step>/`` (a loadable transformers folder, in the dtype of the
model trained from, tied weights kept tied) through a temporary folder
renamed into place, so a killed run never leaves half a checkpoint. Beside
the newest checkpoint, ``trainer-state-<step>.pt`` holds what only a
restart needs (optimizer, schedule, random state, LoRA adapter, the float32
weights when the checkpoint is narrower): a restarted run continues from
it, the step numbers go on and the batches are the ones the first run
would have seen. It stays out of the checkpoint, which becomes a model
version the size of its base; ``states_drop`` deletes it once the run is
over for good.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from models_admin.training.data import (
    batch_indices,
    collate,
    encode_all,
)
from models_admin.training.dpo import dpo_eval, dpo_step, pair_batch, pair_encode
from models_admin.training.losses import distill_loss, eval_loss, token_losses
from models_admin.training.student import on_policy_draw, student_answers, student_from_teacher

logger = logging.getLogger(__name__)

#: Where older runs kept the restart state: inside the checkpoint.
LEGACY_STATE_FILE = "trainer_state.pt"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainConfig:
    kind: str  # "finetune", "distill" or "dpo"
    base_dir: Path  # the model trained (and DPO's reference), or the teacher
    output_dir: Path
    train: list[list[dict[str, str]]]
    eval: list[list[dict[str, str]]]
    student_dir: Path | None = None
    learning_rate: float = 1e-4
    steps: int = 60
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    warmup_steps: int = 5
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 20
    eval_every: int = 20
    eval_examples: int = 64
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    student_layers: int = 10
    temperature: float = 1.0
    alpha: float = 0.9
    beta: float = 0.1
    #: Distill: the share of batches whose answers the student writes
    #: itself (sampled, up to on_policy_tokens) for the teacher to score,
    #: as in generalized knowledge distillation; the rest use the dataset's.
    on_policy: float = 0.0
    on_policy_tokens: int = 48
    #: When above 0, the run ends (evaluated and checkpointed) at the first
    #: step that brings its training time to this many seconds.
    max_seconds: float = 0.0
    #: A DPO job's pairs ({"prompt", "chosen", "rejected"}) instead of
    #: train and eval.
    train_pairs: list[dict[str, Any]] = field(default_factory=list)
    eval_pairs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Hooks:
    """What the loop reports to, and asks, its caller."""

    progress: Callable[[dict[str, Any]], None] = lambda report: None
    checkpoint: Callable[[int, Path, dict[str, Any]], None] = lambda step, folder, metrics: None
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = field(default=lambda line: logger.info("%s", line))


@dataclass
class Outcome:
    state: str  # "completed" or "cancelled"
    step: int


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints in a run folder, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = CHECKPOINT.match(child.name)
        if match and (child / "config.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def state_path(folder: Path, step: int) -> Path:
    """The restart state saved with checkpoint ``step`` of a run folder."""
    return folder / f"trainer-state-{step}.pt"


def _resumable(folder: Path) -> tuple[int, Path, Path] | None:
    """(step, checkpoint, state file) of the newest checkpoint a run can
    continue from."""
    for step, path in reversed(checkpoints(folder)):
        for state in (state_path(folder, step), path / LEGACY_STATE_FILE):
            if state.is_file():
                return step, path, state
    return None


def _load(path: Path) -> Any:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config.use_cache = False
    return model


def states_drop(folder: Path) -> None:
    """Delete a run folder's restart state (the size of two models): for a
    run that will not be continued."""
    for state in folder.glob("trainer-state-*.pt"):
        state.unlink(missing_ok=True)


def folder_dtype(path: Path) -> torch.dtype:
    """The dtype a model folder's weights are stored in (float32 when its
    config does not say)."""
    config = AutoConfig.from_pretrained(path)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to a tenth of the peak."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(config.warmup_steps, 1)
        span = max(config.steps - config.warmup_steps, 1)
        progress = min((step - config.warmup_steps) / span, 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _pairs_encode(tokenizer: Any, pairs: list[dict[str, Any]], max_length: int) -> list[Any]:
    """Encode preference pairs; leave out those an answer of which the
    length limit cuts to nothing."""
    encoded = [pair_encode(tokenizer, pair, max_length=max_length) for pair in pairs]
    return [item for item in encoded if item is not None]


#: A DPO evaluation's measures as a checkpoint's metrics name them.
_CHECKPOINT_NAMES = {
    "eval_accuracy": "pref_accuracy",
    "eval_margin": "reward_margin",
    "eval_logp_accuracy": "pref_logp_accuracy",
    "eval_dpo_loss": "eval_dpo_loss",
}


def _checkpoint_metrics(measured: dict[str, float]) -> dict[str, float]:
    return {name: measured[key] for key, name in _CHECKPOINT_NAMES.items() if key in measured}


class Trainer:
    def __init__(self, config: TrainConfig, hooks: Hooks | None = None) -> None:
        self.config = config
        self.hooks = hooks or Hooks()

    # --- set-up ------------------------------------------------------------

    def _model_and_state(self) -> tuple[Any, Any, int, dict[str, Any] | None]:
        """Return (trained model, the frozen model (distill: the teacher;
        DPO: the reference, None when LoRA's adapters can be turned off
        instead) or None, first step, saved state)."""
        config = self.config
        teacher = None
        if config.kind == "distill" or (config.kind == "dpo" and not config.lora):
            teacher = _load(config.base_dir)
            teacher.eval()
            for parameter in teacher.parameters():
                parameter.requires_grad_(False)
        resume = _resumable(config.output_dir)
        if resume is not None:
            step, path, state_file = resume
            state = torch.load(state_file, map_location="cpu", weights_only=False)
            self.hooks.log(f"Resuming from checkpoint {step}")
            # A run killed between writing a checkpoint and reporting it
            # reports it now (the caller's registration is idempotent).
            metrics = dict(state.get("eval_metrics") or {})
            if state.get("eval_loss"):
                metrics["eval_loss"] = state["eval_loss"]
            self.hooks.checkpoint(step, path, metrics)
            if config.lora:
                model = self._lora(_load(config.base_dir))
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(model, state["adapter"])
            else:
                model = _load(path)
                if "weights" in state:
                    # The checkpoint is narrower than float32: go on from
                    # the exact weights the run had.
                    model.load_state_dict(state["weights"])
            return model, teacher, step, state
        if config.kind == "distill":
            if config.student_dir is not None:
                model = _load(config.student_dir)
            else:
                model = student_from_teacher(teacher, layers=config.student_layers)
                for parameter in model.parameters():
                    parameter.requires_grad_(True)
        else:
            model = _load(config.base_dir)
        if config.lora:
            model = self._lora(model)
        return model, teacher, 0, None

    def _lora(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=0.0,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)

    # --- checkpoints ---------------------------------------------------------

    def _save_dtype(self) -> torch.dtype:
        """Checkpoints are stored as the model trained from is (training
        itself runs in float32)."""
        config = self.config
        source = config.student_dir if config.kind == "distill" and config.student_dir else None
        return folder_dtype(source or config.base_dir)

    def _save(self, step: int, model: Any, tokenizer: Any, state: dict[str, Any]) -> Path:
        out = self.config.output_dir
        final = out / f"checkpoint-{step}"
        staging = out / f".checkpoint-{step}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        dtype = self._save_dtype()
        to_save = model
        if self.config.lora:
            # The candidate is a plain model: the adapter merged into a copy.
            to_save = copy.deepcopy(model).merge_and_unload()
        if dtype != torch.float32:
            if not self.config.lora:
                state["weights"] = model.state_dict()
                to_save = copy.deepcopy(model)
            # Cast as a module, so tied weights stay one tensor.
            to_save = to_save.to(dtype)
        to_save.config.use_cache = True
        to_save.save_pretrained(staging, safe_serialization=True)
        to_save.config.use_cache = False
        tokenizer.save_pretrained(staging)
        # The state first, then the checkpoint: a checkpoint in place always
        # has its state beside it.
        state_file = state_path(out, step)
        staging_state = out / f".{state_file.name}.tmp"
        torch.save(state, staging_state)
        staging_state.replace(state_file)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        # Only the newest checkpoint keeps the (large) optimizer state.
        for older in out.glob("trainer-state-*.pt"):
            if older != state_file:
                older.unlink(missing_ok=True)
        for _older_step, older in checkpoints(out):
            (older / LEGACY_STATE_FILE).unlink(missing_ok=True)
        return final

    # --- the loop ------------------------------------------------------------

    def run(self) -> Outcome:
        config = self.config
        config.output_dir.mkdir(parents=True, exist_ok=True)
        hf_logging.disable_progress_bar()  # a job's log is its reports
        for stale in config.output_dir.glob(".checkpoint-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in config.output_dir.glob(".trainer-state-*.tmp"):
            stale.unlink(missing_ok=True)
        torch.manual_seed(config.seed)
        tokenizer = AutoTokenizer.from_pretrained(config.base_dir)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train: list[Any]
        evaluation: list[Any]
        if config.kind == "dpo":
            train = _pairs_encode(tokenizer, config.train_pairs, config.max_length)
            evaluation = _pairs_encode(
                tokenizer, config.eval_pairs[: config.eval_examples], config.max_length
            )
        else:
            train = encode_all(tokenizer, config.train, config.max_length)
            evaluation = encode_all(
                tokenizer, config.eval[: config.eval_examples], config.max_length
            )
        if not train:
            raise ValueError("no training example has an assistant token within max_length")
        model, teacher, start, state = self._model_and_state()
        model.train()
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        self.hooks.log(
            f"{config.kind}: {len(train)} training and {len(evaluation)} eval examples, "
            f"steps {start + 1}..{config.steps}, "
            f"{sum(p.numel() for p in parameters):,} trainable parameters"
        )
        if config.kind == "dpo" and start == 0 and evaluation:
            # Where the base stands: its own preference for the chosen
            # answers (its reward accuracy against itself is 0 by definition).
            base = self._measure(model, teacher, evaluation, pad_id)
            self.hooks.progress(
                {"step": 0, "total_steps": config.steps, "base_logp_accuracy":
                 base["eval_logp_accuracy"], "eval_loss": base["eval_loss"],
                 "eval_accuracy": base["eval_accuracy"], "eval_margin": base["eval_margin"]}
            )  # fmt: skip
            self.hooks.log(
                f"base: chosen preferred in {base['eval_logp_accuracy']:.1%} of "
                f"{len(evaluation)} held-out pairs, eval loss {base['eval_loss']:.4f}"
            )
        began = time.monotonic()
        examples_seen = 0
        last_eval: float | None = state.get("eval_loss") if state else None
        eval_metrics: dict[str, float] = dict(state.get("eval_metrics") or {}) if state else {}
        step = start
        while step < config.steps:
            if self.hooks.should_stop():
                self.hooks.log(f"Cancelled before step {step + 1}")
                return Outcome("cancelled", step)
            report = self._step(step, model, teacher, train, optimizer, pad_id)
            scheduler.step()
            step += 1
            examples_seen += config.batch_size * config.grad_accum
            elapsed = time.monotonic() - began
            rate = examples_seen / elapsed if elapsed > 0 else 0.0
            steps_left = config.steps - step
            report.update(
                step=step,
                total_steps=config.steps,
                lr=scheduler.get_last_lr()[0],
                examples_per_s=round(rate, 3),
                eta_s=round(steps_left * elapsed / (step - start), 1),
            )
            at_end = step == config.steps or (
                config.max_seconds > 0 and elapsed >= config.max_seconds
            )
            if evaluation and (at_end or step % config.eval_every == 0):
                if config.kind == "dpo":
                    eval_metrics = self._measure(model, teacher, evaluation, pad_id)
                    last_eval = eval_metrics["eval_loss"]
                    report.update(eval_metrics)
                else:
                    last_eval = eval_loss(model, evaluation, pad_id=pad_id)
                    report["eval_loss"] = last_eval
            self.hooks.progress(report)
            if at_end or step % config.checkpoint_every == 0:
                saved = {
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "eval_loss": last_eval,
                    "eval_metrics": _checkpoint_metrics(eval_metrics),
                }
                if config.lora:
                    from peft import get_peft_model_state_dict

                    saved["adapter"] = get_peft_model_state_dict(model)
                folder = self._save(step, model, tokenizer, saved)
                metrics = {"train_loss": report["loss"], **_checkpoint_metrics(eval_metrics)}
                if last_eval is not None:
                    metrics["eval_loss"] = last_eval
                self.hooks.checkpoint(step, folder, metrics)
            if at_end:
                break
        return Outcome("completed", step)

    def _measure(
        self, model: Any, reference: Any, evaluation: list[Any], pad_id: int
    ) -> dict[str, float]:
        return dpo_eval(
            model,
            reference,
            evaluation,
            beta=self.config.beta,
            pad_id=pad_id,
            batch_size=self.config.batch_size,
        )

    def _step(
        self,
        step: int,
        model: Any,
        teacher: Any,
        train: list[Any],
        optimizer: torch.optim.Optimizer,
        pad_id: int,
    ) -> dict[str, Any]:
        config = self.config
        totals: dict[str, float] = {}
        for micro in range(config.grad_accum):
            indices = batch_indices(
                step=step * config.grad_accum + micro,
                batch_size=config.batch_size,
                count=len(train),
                seed=config.seed,
            )
            if config.kind == "dpo":
                out = dpo_step(
                    model,
                    teacher,
                    pair_batch([train[i] for i in indices], pad_id=pad_id),
                    beta=config.beta,
                )
                loss = out.loss
                parts = {
                    "loss": float(loss.detach()),
                    "accuracy": out.accuracy,
                    "margin": float(out.margins.mean()),
                }
                (loss / config.grad_accum).backward()
                for name, value in parts.items():
                    totals[name] = totals.get(name, 0.0) + value / config.grad_accum
                continue
            examples = [train[i] for i in indices]
            alpha = config.alpha
            number = step * config.grad_accum + micro
            if teacher is not None and on_policy_draw(config.on_policy, config.seed, number):
                examples = student_answers(model, examples, config.on_policy_tokens, pad_id)
                alpha = 1.0  # the student's own words have no reference answer
            batch = collate(examples, pad_id=pad_id)
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            if teacher is None:
                loss_sum, count = token_losses(logits, batch["labels"])
                loss = loss_sum / max(count, 1)
                parts = {"loss": float(loss.detach())}
            else:
                with torch.no_grad():
                    teacher_logits = teacher(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits
                loss, parts = distill_loss(
                    logits,
                    teacher_logits,
                    batch["labels"],
                    temperature=config.temperature,
                    alpha=alpha,
                )
                parts["loss"] = float(loss.detach())
            (loss / config.grad_accum).backward()
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value / config.grad_accum
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {name: round(value, 5) for name, value in totals.items()}
