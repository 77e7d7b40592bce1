"""The latency part of ``tools.knowledge_bench``: a synthetic corpus of
10,000 passages built from the demo help center, indexed with random
vectors (search cost, not quality), and the time of each search."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from models_admin.demo_knowledge import QUESTIONS
from models_admin.knowledge.embeddings import BertEncoder
from models_admin.knowledge.index import SearchIndex

#: The synthetic corpus.
SYNTHETIC_PASSAGES = 10_000
SYNTHETIC_WORDS = 120
LATENCY_QUERIES = 200

_PRODUCTS = ("mug", "teapot", "candle", "board", "cushion", "throw", "vase", "plate", "bowl",
    "jug", "tray", "lamp", "rug", "basket", "blanket", "coaster", "apron", "towel", "planter",
    "spoon")  # fmt: skip
_COLOURS = ("sage", "ochre", "slate", "oat", "rust", "moss", "ink", "chalk", "clay", "honey")
_PLACES = ("Bristol", "Leeds", "Cardiff", "York", "Bath", "Glasgow", "Belfast", "Exeter",
    "Norwich", "Derby")  # fmt: skip


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    """Made-up words: a corpus's long tail of names, codes and jargon."""
    syllables = ("ka", "lo", "mi", "ne", "ra", "to", "su", "ve", "li", "da", "po", "re", "sa",
        "ti", "mo", "ga", "fe")  # fmt: skip
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def synthetic_texts(
    passages: Sequence[Any], count: int, *, words: int = SYNTHETIC_WORDS, seed: int = 0
) -> list[str]:
    """``count`` passages of about ``words`` words: the demo passages in
    turn, each filled out with sentences of products, numbers, places and
    words drawn from the help center's vocabulary and a Zipf-like tail of
    made-up ones."""
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    vocabulary = sorted({w for p in passages for w in re.findall(r"[a-z]+", p.indexed.lower())})
    vocabulary += _pseudo_words(rng, 20_000)
    rng.shuffle(vocabulary)
    weights = np.cumsum(1.0 / np.arange(1, len(vocabulary) + 1)).tolist()
    texts: list[str] = []
    for number in range(count):
        source = passages[number % len(passages)]
        parts = [source.indexed]
        length = len(source.indexed.split())
        while length < words:
            if rng.random() < 0.4:
                sentence = (
                    f"The {rng.choice(_COLOURS)} {rng.choice(_PRODUCTS)} "
                    f"FH-{rng.randint(100000, 999999)} costs £{rng.randint(2, 200)}."
                    f"{rng.randint(0, 99):02d} and ships from {rng.choice(_PLACES)} in "
                    f"{rng.randint(1, 14)} days."
                )
            else:
                chosen = rng.choices(vocabulary, cum_weights=weights, k=rng.randint(8, 16))
                sentence = " ".join(chosen).capitalize() + "."
            parts.append(sentence)
            length += len(sentence.split())
        texts.append(" ".join(parts))
    return texts


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95)}


def latency_measure(
    passages: Sequence[Any],
    *,
    encoder: BertEncoder | None,
    count: int = SYNTHETIC_PASSAGES,
    queries: int = LATENCY_QUERIES,
    dimension: int = 384,
) -> dict[str, Any]:
    """Build a ``count``-passage index with random unit vectors of the
    encoder's dimension and time ``queries`` searches end to end."""
    texts = synthetic_texts(passages, count)
    dimension = encoder.dimension if encoder is not None else dimension
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    started = time.perf_counter()
    index = SearchIndex.build(list(enumerate(texts)), vectors, "synthetic")
    build_s = time.perf_counter() - started
    data = index.to_bytes()
    started = time.perf_counter()
    index = SearchIndex.from_bytes(data)
    load_s = time.perf_counter() - started
    asked = [QUESTIONS[n % len(QUESTIONS)].text for n in range(queries)]
    for text in asked[:5]:  # warm the encoder and the stemmer
        index.search(text, k=4, vector=_query_vector(encoder, text, rng, dimension))
    bm25: list[float] = []
    hybrid: list[float] = []
    for text in asked:
        started = time.perf_counter()
        index.search(text, k=4)
        bm25.append(time.perf_counter() - started)
        started = time.perf_counter()
        index.search(text, k=4, vector=_query_vector(encoder, text, rng, dimension))
        hybrid.append(time.perf_counter() - started)
    words = [len(t.split()) for t in texts]
    return {
        "passages": count,
        "mean_words": round(sum(words) / len(words), 1),
        "dimension": dimension,
        "queries": queries,
        "query_vectors": "encoder" if encoder is not None else "random",
        "build_s": round(build_s, 2),
        "bytes": len(data),
        "load_s": round(load_s, 3),
        "bm25": _percentiles(bm25),
        "hybrid": _percentiles(hybrid),
    }


def _query_vector(
    encoder: BertEncoder | None, text: str, rng: np.random.Generator, dimension: int
) -> np.ndarray:
    if encoder is not None:
        return encoder.encode([text])[0]
    return rng.standard_normal(dimension).astype(np.float32)
