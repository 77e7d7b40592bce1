"""Measuring a model folder: eval loss and perplexity on a dataset's eval
split (the training mask), decode speed, size, and answers to a fixed
prompt set."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.engine import Engine, chat_answer
from inference.engine_base import EngineBase
from inference.formats import folder_backend
from inference.llamacpp.engine import LlamaCppEngine
from inference.llamacpp.loading import gguf_model_load
from inference.llamacpp.scoring import labelled_token_losses
from inference.loading import model_load
from inference.protocol import SamplingParams
from models_admin.training.data import encode_all
from models_admin.training.losses import eval_loss

SPEED_PROMPT = [{"role": "user", "content": "Describe a lighthouse in a few sentences."}]
#: Told each phase's progress: (phase, done, total). Phases: "loading",
#: "eval loss" (examples), "decode speed" (runs), "answers" (prompts).
Progress = Callable[[str, int, int], None]
#: Examples scored between two progress reports.
LOSS_CHUNK = 16


def _quiet(_phase: str, _done: int, _total: int) -> None:
    return None


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def decode_speed(
    engine: EngineBase,
    *,
    tokens: int = 64,
    warmup: int = 8,
    runs: int = 3,
    progress: Progress = _quiet,
) -> float:
    """Tokens per second of one stream after the first few tokens, greedy,
    with the end-of-sequence token ignored so every model decodes as many;
    the median of a few runs, as a shared machine is noisy. engine is idle
    and has one slot."""
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
        progress("decode speed", run + 1, runs)
    return statistics.median(rates)


def _answers(
    engine: EngineBase,
    prompts: list[str],
    system_prompt: str,
    answer_tokens: int,
    progress: Progress = _quiet,
) -> list[dict[str, str]]:
    answers: list[dict[str, str]] = []
    progress("answers", 0, len(prompts))
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        answer = chat_answer(engine, messages, max_new_tokens=answer_tokens, temperature=0.0)
        answers.append({"prompt": prompt, "answer": answer})
        progress("answers", len(answers), len(prompts))
    return answers


def _loss_metrics(loss: float, examples: int) -> dict[str, Any]:
    return {
        "eval_loss": round(loss, 5),
        "perplexity": round(math.exp(min(loss, 50)), 3),
        "eval_examples": examples,
    }


def evaluate(
    path: Path,
    *,
    eval_conversations: list[list[dict[str, str]]],
    prompts: list[str],
    system_prompt: str = "",
    max_length: int = 256,
    answer_tokens: int = 96,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Return (metrics, answers) for the model folder at path, whichever
    runtime serves it, telling progress how far each phase is."""
    report = progress or _quiet
    report("loading", 0, 0)
    if folder_backend(path) == "llama.cpp":
        return _evaluate_gguf(
            path,
            eval_conversations=eval_conversations,
            prompts=prompts,
            system_prompt=system_prompt,
            max_length=max_length,
            answer_tokens=answer_tokens,
            progress=report,
        )
    loaded = model_load(path, device="cpu", dtype="float32")
    metrics: dict[str, Any] = {
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "size_bytes": folder_size(path),
        "layers": int(getattr(loaded.model.config, "num_hidden_layers", 0)),
    }
    if eval_conversations:
        encoded = encode_all(loaded.tokenizer, eval_conversations, max_length)
        pad_id = loaded.tokenizer.pad_token_id or 0
        loss = eval_loss(
            loaded.model,
            encoded,
            pad_id=pad_id,
            progress=lambda done: report("eval loss", done, len(encoded)),
        )
        metrics.update(_loss_metrics(loss, len(encoded)))
    engine = Engine(loaded, slots=1, max_context=1024, speculative_tokens=0)
    metrics["tokens_per_s"] = round(decode_speed(engine, progress=report), 2)
    return metrics, _answers(engine, prompts, system_prompt, answer_tokens, report)


def _evaluate_gguf(
    path: Path,
    *,
    eval_conversations: list[list[dict[str, str]]],
    prompts: list[str],
    system_prompt: str,
    max_length: int,
    answer_tokens: int,
    progress: Progress,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    engine = LlamaCppEngine(
        gguf_model_load(path), slots=1, max_context=max(1024, max_length), kv_tokens=1024
    )
    try:
        metrics: dict[str, Any] = {
            "parameters": engine.info.parameters,
            "size_bytes": folder_size(path),
            "layers": engine.info.layers,
            "quantization": engine.loaded.dtype,
        }
        if eval_conversations:
            encoded = encode_all(engine.tokenizer, eval_conversations, max_length)
            total, count = 0.0, 0
            for start in range(0, len(encoded), LOSS_CHUNK):
                chunk = encoded[start : start + LOSS_CHUNK]
                chunk_total, chunk_count = labelled_token_losses(
                    engine.runtime, [(e.input_ids, e.labels) for e in chunk]
                )
                total, count = total + chunk_total, count + chunk_count
                progress("eval loss", start + len(chunk), len(encoded))
            metrics.update(_loss_metrics(total / max(count, 1), len(encoded)))
        metrics["tokens_per_s"] = round(decode_speed(engine, progress=progress), 2)
        return metrics, _answers(engine, prompts, system_prompt, answer_tokens, progress)
    finally:
        engine.close()
