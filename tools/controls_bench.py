"""What the generation controls cost per token, against plain decoding of
the same prompt in the same process: log-probabilities (5 and 20
alternatives), beam search (4 beams), structured output (a JSON schema)
and n=4 answers from one prefill (against 4 separate requests).

    python -m tools.controls_bench [--model DIR] [--gguf DIR] [--tokens N]

Each row is a ratio of milliseconds per generated token (per search step
for beam search) to plain decoding's, the median of ``--repeats`` runs;
below 1.00 is cheaper. Runs on the torch engine and, when a GGUF version
folder is given (default: the default model's), on llama.cpp.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inference.engine_base import EngineBase, chat_prompt_ids
from inference.protocol import SamplingParams

PROMPT = "Describe a customer of a small tea shop: name, age, plan and what they like."
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "plan": {"enum": ["free", "pro"]},
        "likes": {"type": "array", "items": {"type": "string"}},
        "note": {"type": "string"},
    },
    "required": ["name", "age", "plan", "likes", "note"],
    "additionalProperties": False,
}


def _run(engine: EngineBase, prompt: list[int], params: SamplingParams, copies: int = 1):
    """Seconds and tokens (search steps for a beam search) to answer."""
    for index in range(copies):
        engine.submit(f"r{index}", prompt=prompt, params=params)
    tokens = 0
    started = time.perf_counter()
    while engine.has_work():
        for event in engine.step():
            if event.finished and event.index == 0:
                tokens += event.completion_tokens
    return time.perf_counter() - started, tokens


def _cases(tokens: int) -> list[tuple[str, SamplingParams, SamplingParams, int]]:
    """(name, params, baseline params, copies of the baseline request)."""
    plain = SamplingParams(temperature=0.7, top_p=0.95, seed=1, max_new_tokens=tokens,
                           ignore_eos=True)  # fmt: skip
    greedy = SamplingParams(temperature=0.0, max_new_tokens=tokens, ignore_eos=True)
    shaped = SamplingParams(
        temperature=0.7,
        seed=1,
        max_new_tokens=tokens,
        response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    )
    return [
        ("logprobs, 5 alternatives", _with(plain, logprobs=5), plain, 1),
        ("logprobs, 20 alternatives", _with(plain, logprobs=20), plain, 1),
        ("beam search, 4 beams (per step)", _with(greedy, beams=4), greedy, 1),
        ("structured output (JSON schema)", shaped, _with(plain, ignore_eos=False), 1),
        ("n=4 from one prefill vs 4 requests", _with(plain, n=4), plain, 4),
    ]


def _with(params: SamplingParams, **changes: Any) -> SamplingParams:
    data = {name: getattr(params, name) for name in params.__dataclass_fields__}
    data.update(changes)
    return SamplingParams(**data)


def measure(make: Callable[[], EngineBase], tokens: int, repeats: int) -> list[tuple[str, float]]:
    engine = make()
    prompt = chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": PROMPT}])
    _run(engine, prompt, SamplingParams(temperature=0, max_new_tokens=8))  # warm up
    rows = []
    for name, params, baseline, copies in _cases(tokens):
        ratios = []
        for _ in range(repeats):
            base_s, base_tokens = _run(engine, prompt, baseline, copies)
            # n answers are compared with as many requests, whole against whole.
            if params.n > 1:
                test_s, _ = _run(engine, prompt, params)
                ratios.append(test_s / base_s)
                continue
            test_s, test_tokens = _run(engine, prompt, params)
            ratios.append((test_s / max(test_tokens, 1)) / (base_s / max(base_tokens, 1)))
        rows.append((name, statistics.median(ratios)))
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.conf import settings

    from inference.engine import Engine
    from inference.loading import model_load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(settings.DEFAULT_MODEL_DIR))
    parser.add_argument("--gguf", type=Path, default=Path(settings.DEFAULT_MODEL_GGUF_DIR))
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    systems: list[tuple[str, Callable[[], EngineBase]]] = []
    if args.model.is_dir():
        loaded = model_load(args.model, device="cpu", dtype="auto")
        systems.append(("transformers", lambda: Engine(loaded, slots=8, max_context=1024)))
    if args.gguf.is_dir() and any(args.gguf.glob("*.gguf")):
        from inference.llamacpp.engine import LlamaCppEngine
        from inference.llamacpp.loading import gguf_model_load

        gguf = gguf_model_load(args.gguf)
        systems.append(("llama.cpp", lambda: LlamaCppEngine(gguf, slots=8, max_context=1024)))
    if not systems:
        parser.error("no model folder: run `make model` first")
    print(f"cost per token against plain decoding ({args.tokens} tokens, "
          f"median of {args.repeats}; below 1.00 is cheaper)")  # fmt: skip
    for system, make in systems:
        print(f"\n{system}")
        for name, ratio in measure(make, args.tokens, args.repeats):
            print(f"  {name:40} {ratio:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
