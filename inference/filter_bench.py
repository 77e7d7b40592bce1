"""Benchmark: what output filter rules add to each streamed token.

Streams the answers of the demo shop conversations token by token (the
default model's tokenizer when it is present, else 4-character pieces)
through a ``StreamFilter`` and times every ``push``: with no rules (the
baseline, in the same process) and with 200 rules (150 keyword lists of
5 to 10 words, 40 regular expressions and 10 presets). Target: the added
latency per token has a p50 under 1 ms. Prints a table and writes JSON
under ``var/bench/``. Run with ``make bench`` or
``python -m inference.filter_bench --help``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import time
from pathlib import Path
from typing import Any

TARGET_P50_MS = 1.0


def rule_specs(count: int = 200, *, seed: int = 0) -> list[dict[str, Any]]:
    """count rules in the proportions of a busy site: 75% keyword lists,
    20% regular expressions, 5% presets."""
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret

    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 10)))

    presets = ["email", "phone", "card", "url"]
    specs: list[dict[str, Any]] = []
    for i in range(count):
        share = i / count
        if share < 0.75:
            spec = {
                "kind": "keywords",
                "keywords": [word() for _ in range(rng.randint(5, 10))],
                "whole_word": rng.random() < 0.8,
            }
        elif share < 0.95:
            spec = {"kind": "regex", "pattern": rf"(?i)\b{word()}[ -]?\d{{2,6}}\b"}
        else:
            spec = {"kind": "preset", "preset": presets[i % len(presets)]}
        spec.update(
            id=i,
            name=f"rule {i}",
            action=rng.choice(["mask", "mask", "flag", "block"]),
            scope="output",
            priority=i,
        )
        specs.append(spec)
    return specs


def token_pieces(model_dir: Path | None, texts: list[str]) -> list[list[str]]:
    """Each text cut the way the model streams it."""
    if model_dir is not None and (model_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return [
            [str(tokenizer.decode([t])) for t in tokenizer.encode(text, add_special_tokens=False)]
            for text in texts
        ]
    return [[text[i : i + 4] for i in range(0, len(text), 4)] for text in texts]


def _time_pushes(rules: Any, answers: list[list[str]]) -> list[float]:
    from inference.content_filter import StreamFilter

    timings: list[float] = []
    for pieces in answers:
        stream = StreamFilter(rules)
        for piece in pieces:
            started = time.perf_counter()
            result = stream.push(piece)
            timings.append(time.perf_counter() - started)
            if result.block:
                break
        stream.finish()
    return timings


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


def main(argv: list[str] | None = None) -> int:
    import django

    django.setup()
    from django.conf import settings

    from inference.content_filter import RuleSet
    from models_admin.demo_data import demo_conversations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--answers", type=int, default=200, help="demo answers streamed")
    parser.add_argument("--model", type=Path, default=None, help="tokenizer folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    conversations = demo_conversations(count=min(args.answers, 300), seed=args.seed)
    texts = [m["content"] for c in conversations for m in c if m["role"] == "assistant"]
    texts = texts[: args.answers]
    answers = token_pieces(args.model or Path(settings.DEFAULT_MODEL_DIR), texts)
    tokens = sum(len(a) for a in answers)

    baseline_rules = RuleSet([], notice="")
    rules = RuleSet.from_specs(
        rule_specs(args.rules, seed=args.seed), scope="output", surface="chat", notice="Blocked."
    )
    _time_pushes(rules, answers[:5])  # warm caches
    baseline = _percentiles(_time_pushes(baseline_rules, answers))
    loaded = _percentiles(_time_pushes(rules, answers))
    added = loaded["p50_ms"] - baseline["p50_ms"]
    print(f"{tokens} tokens in {len(answers)} answers; {len(rules.rules)} rules")
    print(f"{'':12} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, row in (("no rules", baseline), (f"{args.rules} rules", loaded)):
        cells = " ".join(f"{row[k]:8.3f}" for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        print(f"{name:12} {cells}")
    ratio = loaded["p50_ms"] / baseline["p50_ms"] if baseline["p50_ms"] else float("inf")
    verdict = "met" if added < TARGET_P50_MS else "NOT met"
    print(f"added p50 per token: {added:.3f} ms ({ratio:.1f}x the no-rule baseline); "
          f"target < {TARGET_P50_MS} ms: {verdict}")  # fmt: skip
    report = {
        "tokens": tokens,
        "answers": len(answers),
        "rules": len(rules.rules),
        "baseline": baseline,
        "with_rules": loaded,
        "added_p50_ms": added,
        "target_met": added < TARGET_P50_MS,
    }
    out = args.out or Path(settings.VAR_DIR) / "bench" / f"filter-bench-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.exit(main())
