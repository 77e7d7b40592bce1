"""Measuring a model folder: eval loss and perplexity on a dataset's eval
split (the training mask), decode speed, size, and answers to a fixed
prompt set."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from inference.engine import Engine, chat_answer
from inference.loading import model_load
from inference.protocol import SamplingParams
from models_admin.training.data import encode
from models_admin.training.loop import eval_loss

SPEED_PROMPT = [{"role": "user", "content": "Describe a lighthouse in a few sentences."}]


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def decode_speed(loaded: Any, *, tokens: int = 64, warmup: int = 8, runs: int = 3) -> float:
    """Tokens per second of one stream after the first few tokens, greedy,
    with the end-of-sequence token ignored so every model decodes as many;
    the median of a few runs, as a shared machine is noisy."""
    engine = Engine(loaded, slots=1, max_context=1024, speculative_tokens=0)
    params = SamplingParams(temperature=0.0, max_new_tokens=tokens + warmup, ignore_eos=True)
    rates = []
    for run in range(runs):
        engine.submit(f"speed-{run}", messages=SPEED_PROMPT, params=params)
        gaps: list[float] = []
        while engine.has_work():
            for event in engine.step():
                if event.finished and event.token_gaps:
                    gaps = list(event.token_gaps)
        measured = gaps[warmup:]
        rates.append(len(measured) / sum(measured) if measured and sum(measured) > 0 else 0.0)
    return statistics.median(rates)


def evaluate(
    path: Path,
    *,
    eval_conversations: list[list[dict[str, str]]],
    prompts: list[str],
    system_prompt: str = "",
    max_length: int = 256,
    answer_tokens: int = 96,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Return (metrics, answers) for the model folder at path."""
    loaded = model_load(path, device="cpu", dtype="float32")
    metrics: dict[str, Any] = {
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "size_bytes": folder_size(path),
        "layers": int(getattr(loaded.model.config, "num_hidden_layers", 0)),
    }
    if eval_conversations:
        encoded = [
            e
            for e in (
                encode(loaded.tokenizer, c, max_length=max_length) for c in eval_conversations
            )
            if e.trained_tokens
        ]
        pad_id = loaded.tokenizer.pad_token_id or 0
        loss = eval_loss(loaded.model, encoded, pad_id=pad_id)
        metrics["eval_loss"] = round(loss, 5)
        metrics["perplexity"] = round(math.exp(min(loss, 50)), 3)
        metrics["eval_examples"] = len(encoded)
    metrics["tokens_per_s"] = round(decode_speed(loaded), 2)
    answers = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        answer = chat_answer(loaded, messages, max_new_tokens=answer_tokens, temperature=0.0)
        answers.append({"prompt": prompt, "answer": answer})
    return metrics, answers
