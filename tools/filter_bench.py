"""Benchmark: what output filter rules add to each streamed token.

Streams the answers of the demo shop conversations token by token (the
default model's tokenizer when it is present, else 4-character pieces)
through a ``StreamFilter`` and times every ``push``: with no rules (the
baseline, in the same process) and with 200 rules (150 keyword lists of
5 to 10 words, 40 regular expressions and 10 presets). Target: the added
latency per token has a p50 under 1 ms.

Then checks whole hostile texts of 16k and 200k characters (letters
written apart, Cyrillic look-alikes written apart, a keyword's beginning
spelled apart again and again, one endless word, digits for the presets,
keyword soup) with the same 200 rules, in ms per text: the matcher is
linear, so 200k costs about 12x 16k. Prints tables and writes JSON under
``var/bench/``. Run with ``make bench`` or
``python -m tools.filter_bench --help``.
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


def hostile_texts(specs: list[dict[str, Any]], size: int) -> dict[str, str]:
    """Texts built to make a keyword matcher work hard, size characters each."""
    keyword = next(s for s in specs if s["kind"] == "keywords")["keywords"][0]
    words = [k for s in specs if s["kind"] == "keywords" for k in s["keywords"]]
    soup = " ".join(words[i % len(words)] for i in range(size // 4))
    spaced = " ".join(keyword[:-1]) + " "
    return {
        "letters apart": ("a b " * size)[:size],
        "look-alikes apart": ("\u0430 \u0432 " * size)[:size],
        "keyword start apart": (spaced * (size // len(spaced) + 1))[:size],
        "one word": "a" * size,
        "digits": ("1 2 " * size)[:size],
        "keyword soup": soup[:size],
    }


def hostile_timings(
    rules: Any, specs: list[dict[str, Any]], sizes: list[int], repeat: int = 3
) -> list[dict[str, Any]]:
    """The best of ``repeat`` whole-text checks of each hostile text, in ms."""
    rows = []
    for size in sizes:
        for shape, text in hostile_texts(specs, size).items():
            best = float("inf")
            for _ in range(repeat):
                started = time.perf_counter()
                rules.check(text)
                best = min(best, time.perf_counter() - started)
            rows.append({"shape": shape, "chars": size, "ms": best * 1000})
    return rows


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
    parser.add_argument(
        "--hostile-sizes", default="16000,200000", help="hostile text sizes, comma-separated"
    )
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
    specs = rule_specs(args.rules, seed=args.seed)
    for spec in specs:
        spec["scope"] = "both"
    input_rules = RuleSet.from_specs(specs, scope="input", surface="chat", notice="Blocked.")
    sizes = [int(size) for size in args.hostile_sizes.split(",") if size.strip()]
    hostile = hostile_timings(input_rules, specs, sizes)
    hostile_base = hostile_timings(baseline_rules, specs, sizes, repeat=1)
    print(f"\nhostile whole texts, {len(input_rules.rules)} rules (ms per text)")
    print(f"{'text':22} {'chars':>8} {'no rules':>9} {'rules':>9}")
    for row, base in zip(hostile, hostile_base, strict=True):
        print(f"{row['shape']:22} {row['chars']:8,} {base['ms']:9.1f} {row['ms']:9.1f}")
    if len(sizes) >= 2:
        small = sum(r["ms"] for r in hostile if r["chars"] == sizes[0])
        large = sum(r["ms"] for r in hostile if r["chars"] == sizes[-1])
        print(f"{sizes[-1]:,} vs {sizes[0]:,} characters: {large / small:.1f}x the time "
              f"for {sizes[-1] / sizes[0]:.1f}x the text")  # fmt: skip
    report = {
        "hostile": hostile,
        "hostile_no_rules": hostile_base,
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
