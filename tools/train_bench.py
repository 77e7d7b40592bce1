"""Measure fine-tuning and distillation on the demo dataset.

``python -m tools.train_bench`` (``make train-bench``) runs, in
one process on the default model: the base model's eval loss; a fine-tune
(wall time, eval loss, reduction from the base); preference tuning (DPO)
of the fine-tuned model on the demo pairs (wall time, held-out preference
accuracy and reward margin, the rise of the eval loss); then, with the
fine-tuned model as the teacher, the layer-dropped student before training,
a distillation (wall time, eval loss, share of the teacher-student gap
recovered, decode speed against the teacher) and the same student trained
with cross-entropy only for as many steps. It prints a
table and writes JSON under ``var/bench/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_admin.dataset_format import split_indices
from models_admin.demo_data import (
    DEMO_SYSTEM_PROMPT,
    demo_conversations,
    demo_preference_pairs,
    demo_prompts,
)
from models_admin.training.evaluate import evaluate
from models_admin.training.loop import Hooks, TrainConfig, Trainer, checkpoints
from models_admin.training.student import student_from_teacher


def _eval(path: Path, conversations: list) -> dict[str, Any]:
    metrics, _ = evaluate(path, eval_conversations=conversations, prompts=[])
    return metrics


def _train(config: TrainConfig) -> tuple[float, Path, list[dict[str, Any]]]:
    reports: list[dict[str, Any]] = []

    def show(report: dict[str, Any]) -> None:
        reports.append(report)
        shown = [f"  step {report['step']}/{report['total_steps']}"]
        for key in ("loss", "eval_loss", "accuracy", "eval_accuracy", "eval_margin"):
            if key in report:
                shown.append(f"{key.replace('_', ' ')} {report[key]:.4f}")
        print(" ".join(shown), flush=True)

    started = time.monotonic()
    Trainer(config, Hooks(progress=show, log=lambda line: print("  " + line, flush=True))).run()
    elapsed = time.monotonic() - started
    return elapsed, checkpoints(config.output_dir)[-1][1], reports


def _dpo(
    args: argparse.Namespace,
    policy_dir: Path,
    policy_metrics: dict[str, Any],
    evaluation: list,
    work: Path,
) -> dict[str, Any]:
    """Preference-tune policy_dir on the demo pairs; return the wall time,
    the held-out preference accuracy and margin (and the reference's own
    preference for the chosen answers), and how much the eval loss on the
    demo conversations rose."""
    pairs = demo_preference_pairs()
    train_idx, eval_idx = split_indices(len(pairs), eval_fraction=0.1, seed=0)
    print(f"Preference tuning (DPO), {args.dpo_steps} steps", flush=True)
    seconds, folder, reports = _train(
        TrainConfig(
            kind="dpo",
            base_dir=policy_dir,
            output_dir=work / "dpo",
            train=[],
            eval=[],
            train_pairs=[pairs[i] for i in train_idx],
            eval_pairs=[pairs[i] for i in eval_idx],
            steps=args.dpo_steps,
            learning_rate=args.dpo_lr,
            beta=args.dpo_beta,
            batch_size=args.batch_size,
            max_length=256,
            checkpoint_every=args.dpo_steps,
            eval_every=args.dpo_steps,
            eval_examples=len(eval_idx),
        )
    )
    start, end = reports[0], reports[-1]
    after = _eval(folder, evaluation)
    return {
        "seconds": round(seconds, 1),
        "steps": args.dpo_steps,
        "train_pairs": len(train_idx),
        "eval_pairs": len(eval_idx),
        "reference_logp_accuracy": start["base_logp_accuracy"],
        "pref_accuracy": end["eval_accuracy"],
        "logp_accuracy": end["eval_logp_accuracy"],
        "reward_margin": end["eval_margin"],
        "sft_eval_loss_before": policy_metrics["eval_loss"],
        "sft_eval_loss_after": after["eval_loss"],
        "sft_eval_loss_rise": round(after["eval_loss"] / policy_metrics["eval_loss"] - 1, 4),
    }


@torch.no_grad()
def _teacher_likelihood(teacher_dir: Path, student_dir: Path, tokens: int = 48) -> float:
    """The mean log-probability per token, under the teacher, of the
    student's greedy answers to the fixed prompts: how close the student's
    own words are to what the teacher would say."""
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    for prompt in demo_prompts():
        messages = [
            {"role": "system", "content": DEMO_SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        output = student.generate(
            input_ids=ids, max_new_tokens=tokens, do_sample=False, pad_token_id=0
        )
        answer = output[:, ids.shape[1] :]
        logits = teacher(input_ids=output).logits[:, ids.shape[1] - 1 : -1].float()
        picked = torch.log_softmax(logits, dim=-1).gather(2, answer.unsqueeze(-1))
        total += float(picked.sum())
        count += answer.shape[1]
    return round(total / max(count, 1), 4)


def _distill_study(
    args: argparse.Namespace,
    teacher_dir: Path,
    untrained: dict[str, Any],
    gap: float,
    evaluation: list,
    common: dict[str, Any],
    work: Path,
) -> list[dict[str, Any]]:
    """The student trained with cross-entropy only for --distill-steps, then
    with each distillation setting for the same wall time: eval loss, the
    share of the teacher-student gap recovered, steps reached, and the
    teacher's log-likelihood of the student's answers to the fixed prompts."""
    settings = [(0.0, 0.0, 0.0)] + [
        tuple(float(x) for x in item.split(":")) for item in args.study.split(",") if item
    ]
    rows: list[dict[str, Any]] = []
    budget = 0.0
    for temperature, alpha, on_policy in settings:
        name = "ce" if alpha == 0 else f"T{temperature:g}-a{alpha:g}-op{on_policy:g}"
        print(f"Study {name}" + (f", {budget:.0f} s" if budget else ""), flush=True)
        seconds, folder, reports = _train(
            TrainConfig(
                kind="distill",
                base_dir=teacher_dir,
                output_dir=work / f"study-{name}",
                steps=args.distill_steps if not budget else 100_000,
                max_seconds=budget,
                learning_rate=args.distill_lr,
                student_layers=args.layers,
                alpha=alpha,
                temperature=temperature or 1.0,
                on_policy=on_policy,
                checkpoint_every=100_000,
                eval_every=100_000,
                **common,
            )
        )
        budget = budget or seconds
        measured = _eval(folder, evaluation)
        rows.append(
            {
                "name": name,
                "temperature": temperature,
                "alpha": alpha,
                "on_policy": on_policy,
                "seconds": round(seconds, 1),
                "steps": reports[-1]["step"],
                "eval_loss": measured["eval_loss"],
                "gap_recovered": round((untrained["eval_loss"] - measured["eval_loss"]) / gap, 4)
                if gap > 0
                else None,
                "teacher_logp": _teacher_likelihood(teacher_dir, folder),
            }
        )
        print(f"  {json.dumps(rows[-1])}", flush=True)
        shutil.rmtree(folder.parent, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default model)")
    parser.add_argument("--finetune-steps", type=int, default=40)
    parser.add_argument("--finetune-lr", type=float, default=2e-4)
    parser.add_argument("--distill-steps", type=int, default=60)
    parser.add_argument("--distill-lr", type=float, default=3e-4)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=1.0, help="distillation T")
    parser.add_argument("--alpha", type=float, default=0.9, help="weight of the KL term")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--dpo-steps", type=int, default=40)
    parser.add_argument("--dpo-lr", type=float, default=5e-6)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument(
        "--distill-study",
        action="store_true",
        help="distill with each setting of --study (T:alpha:on_policy) for the wall time "
        "the cross-entropy-only student took, instead of one distillation for as many steps",
    )
    parser.add_argument(
        "--study",
        default="2:0.5:0,1:0.5:0,1:0.9:0,4:0.5:0,1:0.5:0.5",
        help="T:alpha:on_policy,...",
    )
    parser.add_argument("--skip", default="", help="comma list of: finetune, dpo, distill, ce")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model
    if model_dir is None:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
        django.setup()
        from django.conf import settings

        model_dir = Path(settings.DEFAULT_MODEL_DIR)
    skip = {s for s in args.skip.split(",") if s}
    conversations = demo_conversations()
    train_idx, eval_idx = split_indices(len(conversations), eval_fraction=0.1, seed=0)
    train = [conversations[i] for i in train_idx]
    evaluation = [conversations[i] for i in eval_idx]
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    results: dict[str, Any] = {
        "model": str(model_dir),
        "threads": torch.get_num_threads(),
        "train_examples": len(train),
        "eval_examples": len(evaluation),
    }
    try:
        print(f"Base model {model_dir}", flush=True)
        base = _eval(model_dir, evaluation)
        results["base"] = base
        print(
            f"  eval loss {base['eval_loss']:.4f}, {base['tokens_per_s']:.1f} tokens/s", flush=True
        )
        common = {
            "train": train,
            "eval": evaluation,
            "batch_size": args.batch_size,
            "max_length": 256,
        }

        if "finetune" not in skip:
            print(f"Fine-tune, {args.finetune_steps} steps", flush=True)
            seconds, folder, _ = _train(
                TrainConfig(
                    kind="finetune",
                    base_dir=model_dir,
                    output_dir=work / "finetune",
                    steps=args.finetune_steps,
                    learning_rate=args.finetune_lr,
                    checkpoint_every=args.finetune_steps,
                    eval_every=args.finetune_steps,
                    **common,
                )
            )
            tuned = _eval(folder, evaluation)
            results["finetune"] = {
                "seconds": round(seconds, 1),
                "steps": args.finetune_steps,
                "eval_loss": tuned["eval_loss"],
                "reduction": round(1 - tuned["eval_loss"] / base["eval_loss"], 4),
            }

        if "dpo" not in skip:
            # Preference tuning follows fine-tuning, as a shop would run it:
            # the fine-tuned model is the policy's start and its reference.
            policy_dir, policy_metrics = (
                (folder, tuned) if "finetune" in results else (model_dir, base)
            )
            results["dpo"] = _dpo(args, policy_dir, policy_metrics, evaluation, work)

        # The teacher is what a shop would distill: the fine-tuned model when
        # there is one (the base knows nothing of the shop), else the base.
        teacher_dir, teacher_metrics = model_dir, base
        if "finetune" in results:
            teacher_dir, teacher_metrics = folder, tuned
        results["teacher"] = str(teacher_dir)
        if "distill" not in skip or "ce" not in skip:
            tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
            teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
            student = student_from_teacher(teacher, layers=args.layers)
            untrained_dir = work / "student-untrained"
            student.save_pretrained(untrained_dir)
            tokenizer.save_pretrained(untrained_dir)
            del teacher, student
            untrained = _eval(untrained_dir, evaluation)
            results["student_untrained"] = untrained
            print(
                f"Student of {args.layers} layers before training: eval loss "
                f"{untrained['eval_loss']:.4f}",
                flush=True,
            )
            gap = untrained["eval_loss"] - teacher_metrics["eval_loss"]
            if args.distill_study:
                results["study"] = _distill_study(
                    args, teacher_dir, untrained, gap, evaluation, common, work
                )
                skip |= {"distill", "ce"}
            for name, alpha in (("distill", args.alpha), ("ce", 0.0)):
                if name in skip:
                    continue
                print(
                    f"{'Distill' if alpha else 'Cross-entropy only'}, {args.distill_steps} steps",
                    flush=True,
                )
                seconds, folder, _ = _train(
                    TrainConfig(
                        kind="distill",
                        base_dir=teacher_dir,
                        output_dir=work / name,
                        steps=args.distill_steps,
                        learning_rate=args.distill_lr,
                        student_layers=args.layers,
                        alpha=alpha,
                        temperature=args.temperature,
                        checkpoint_every=args.distill_steps,
                        eval_every=args.distill_steps,
                        **common,
                    )
                )
                measured = _eval(folder, evaluation)
                results[name] = {
                    "seconds": round(seconds, 1),
                    "steps": args.distill_steps,
                    "eval_loss": measured["eval_loss"],
                    "gap_recovered": round(
                        (untrained["eval_loss"] - measured["eval_loss"]) / gap, 4
                    )
                    if gap > 0
                    else None,
                    "tokens_per_s": measured["tokens_per_s"],
                    "speedup": round(
                        measured["tokens_per_s"] / teacher_metrics["tokens_per_s"], 3
                    ),
                    "parameters": measured["parameters"],
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\nResult")
    for key, value in results.items():
        print(f"  {key}: {json.dumps(value) if isinstance(value, dict) else value}")
    out = Path("var/bench")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"training-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nWritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
