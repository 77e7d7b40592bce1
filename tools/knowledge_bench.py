"""Benchmark: knowledge-base retrieval and grounded answers on the demo
shop's help center (``models_admin.demo_knowledge``).

    python -m tools.knowledge_bench [--limit N] [--skip-answers] [--k 3]

``make knowledge-bench`` runs it. Three parts, all in memory (no
database: the articles are parsed, split and indexed here as the index
build task does):

1. Retrieval: recall@1 and recall@k of the held-out questions (a
   question is retrieved when a passage under its expected heading is
   among the top k), by BM25 alone and by BM25 fused with the embedding
   model's vectors when its folder exists (``KNOWLEDGE_EMBEDDING_DIR``);
   target recall@k >= 90%. Then how well the "found" gate, at the
   knowledge base's default thresholds, tells the questions from
   off-topic ones.
2. Answers: the default model (llama.cpp when its GGUF folder and
   llama.cpp are there, else transformers; greedy, CPU) answers every
   question without and with the top passages in its system message, as
   the chat puts them; the share of answers holding the expected fact
   (also as a plain substring, and over the questions that do not name
   their fact themselves), the ratio of the two (target >= 3x) and the
   share of grounded answers citing a passage.
3. Latency: a synthetic 10,000-passage index (BM25 and random vectors:
   it measures search cost, not quality) answers 200 questions; p50 and
   p95 of BM25 alone and of a query embedding plus hybrid search (target
   p95 <= 50 ms), the build time, the size and the load time.

Prints a short report and writes the figures to
``var/bench/knowledge.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models_admin.demo_knowledge import QUESTIONS, UNANSWERABLE, Question, demo_articles
from models_admin.knowledge.chunks import HEADING_JOIN, Passage, passages_split
from models_admin.knowledge.documents import document_parse
from models_admin.knowledge.embeddings import BertEncoder, model_folder_is_complete, model_key
from models_admin.knowledge.index import SearchIndex
from tools.knowledge_latency import SYNTHETIC_PASSAGES, latency_measure

TARGET_RECALL = 0.90
TARGET_ANSWER_RATIO = 3.0
TARGET_P95_MS = 50.0


@dataclass(frozen=True)
class DocPassage:
    """A passage with the title of its document, as the index reads it."""

    title: str
    passage: Passage

    @property
    def section(self) -> str:
        """The last heading of the passage: what a question names."""
        return self.passage.heading.split(HEADING_JOIN)[-1]

    @property
    def indexed(self) -> str:
        return self.passage.indexed(self.title)


def demo_passages(articles: dict[str, bytes] | None = None) -> list[DocPassage]:
    """The help center's passages, in the order the index build reads
    them (article by article, in reading order)."""
    passages: list[DocPassage] = []
    for filename, data in (articles or demo_articles()).items():
        document = document_parse(data, kind="markdown", filename=filename)
        passages.extend(DocPassage(document.title, p) for p in passages_split(document))
    return passages


def encoder_load(folder: Path | None) -> BertEncoder | None:
    """The sentence encoder of ``folder``, or None when it is not there."""
    if folder is None or not model_folder_is_complete(folder):
        return None
    return BertEncoder(folder)


def index_build(passages: Sequence[DocPassage], encoder: BertEncoder | None) -> SearchIndex:
    """The search index of ``passages`` (chunk id = position), with the
    encoder's vectors when there is one."""
    texts = [p.indexed for p in passages]
    vectors = encoder.encode(texts) if encoder is not None else None
    return SearchIndex.build(list(enumerate(texts)), vectors)


def _gate_defaults() -> tuple[int, float, float]:
    """A knowledge base's default passages, min_match and min_similarity."""
    from models_admin.models import KnowledgeBase

    base = KnowledgeBase()
    return base.passages, base.min_match, base.min_similarity


def _found(hits: list[Any], *, dense: bool, min_match: float, min_similarity: float) -> bool:
    """The gate of ``knowledge_search``: the best of the hits is close
    enough in meaning (with vectors) or speaks to enough of the question
    (words alone)."""
    if not hits:
        return False
    if dense:
        best = max((h.similarity for h in hits if h.similarity is not None), default=0.0)
        return best >= min_similarity
    return max(h.match for h in hits) >= min_match


def retrieval_measure(
    passages: Sequence[DocPassage],
    *,
    encoder: BertEncoder | None,
    k: int = 3,
    questions: Sequence[Question] = QUESTIONS,
    unanswerable: Sequence[str] = UNANSWERABLE,
) -> dict[str, dict[str, Any]]:
    """Recall@1 and recall@``k`` of ``questions`` and the shares the found
    gate lets through, for BM25 alone and (with an encoder) hybrid."""
    depth, min_match, min_similarity = _gate_defaults()
    index = index_build(passages, encoder)
    texts = [q.text for q in questions]
    vectors = encoder.encode(texts) if encoder is not None else None
    off_vectors = encoder.encode(list(unanswerable)) if encoder is not None else None
    modes: list[tuple[str, Any, Any]] = [("bm25", None, None)]
    if vectors is not None:
        modes.append(("hybrid", vectors, off_vectors))
    results: dict[str, dict[str, Any]] = {}
    for mode, asked, off in modes:
        dense = asked is not None
        recalled = {1: 0, k: 0}
        found = 0
        for number, question in enumerate(questions):
            vector = asked[number] if dense else None
            for top in recalled:
                hits = index.search(question.text, k=top, vector=vector)
                if any(passages[h.chunk_id].section == question.heading for h in hits):
                    recalled[top] += 1
            hits = index.search(question.text, k=depth, vector=vector)
            found += _found(hits, dense=dense, min_match=min_match, min_similarity=min_similarity)
        off_found = 0
        for number, text in enumerate(unanswerable):
            hits = index.search(text, k=depth, vector=off[number] if dense else None)
            off_found += _found(
                hits, dense=dense, min_match=min_match, min_similarity=min_similarity
            )
        results[mode] = {
            "recall@1": recalled[1] / len(questions),
            f"recall@{k}": recalled[k] / len(questions),
            "found_answerable": found / len(questions),
            "found_unanswerable": off_found / max(len(unanswerable), 1),
            "gate": f"min_similarity {min_similarity}" if dense else f"min_match {min_match}",
        }
    return results


# --- answers ---------------------------------------------------------------

_DASHES = re.compile("[\u2010-\u2015\u2212]")
#: "40 pounds", "40 GBP", "GBP 40", "£ 40" -> "£40"
_POUNDS_AFTER = re.compile(r"(\d+(?:\.\d+)?)\s*(?:pounds?|gbp)\b")
_POUNDS_BEFORE = re.compile(r"(?:£|\bgbp)\s*(\d)")


def _normal(text: str) -> str:
    text = _DASHES.sub("-", text.lower())
    text = _POUNDS_AFTER.sub(r"£\1", text)
    text = _POUNDS_BEFORE.sub(r"£\1", text)
    text = re.sub(r"\s*-\s*", "-", text)  # "7 - 14" as "7-14"
    return " ".join(text.split())


def fact_in(answer: str, fact: str) -> bool:
    """Whether ``answer`` holds ``fact``: case-insensitive, with dashes,
    spaces and pound signs written one way ("40 pounds" is "£40"), and a
    number not read inside a longer one ("£6" is not in "£60")."""
    pattern = re.escape(_normal(fact))
    if fact[:1].isdigit():
        pattern = r"(?<![\d.])" + pattern
    if fact[-1:].isdigit():
        pattern += r"(?![\d])"
    return re.search(pattern, _normal(answer)) is not None


def engine_make(model_dir: Path, gguf_dir: Path) -> tuple[Any, str]:
    """An engine of the default model and its backend's name: llama.cpp
    on the GGUF folder when it can run here, else transformers."""
    from inference.engines import EngineOptions, engine_open
    from inference.formats import is_gguf_folder
    from inference.llamacpp.runtime import available
    from inference.loading import ModelLoadError

    options = EngineOptions(slots=16, max_context=2048)
    # ``available()`` is the reason llama.cpp cannot run here, or "".
    if gguf_dir.is_dir() and is_gguf_folder(gguf_dir) and available() == "":
        try:
            return engine_open(gguf_dir, device="cpu", options=options), "llama.cpp"
        except ModelLoadError as exc:
            print(f"llama.cpp cannot load {gguf_dir} ({exc}); using transformers")
    if not model_dir.is_dir():
        raise SystemExit(f"no model at {model_dir}: run `make model` first")
    return engine_open(model_dir, device="cpu", dtype="auto", options=options), "transformers"


def answers_generate(
    engine: Any, conversations: list[list[dict[str, str]]], *, max_tokens: int
) -> list[str]:
    """Greedy answers to every conversation, submitted at once so the
    engine batches them."""
    from inference.protocol import SamplingParams

    params = SamplingParams(temperature=0.0, max_new_tokens=max_tokens)
    texts = [""] * len(conversations)
    for number, messages in enumerate(conversations):
        engine.submit(str(number), messages=messages, params=params)
    while engine.has_work():
        for event in engine.step():
            if event.error:
                raise RuntimeError(f"request {event.request_id} failed: {event.error}")
            texts[int(event.request_id)] += event.text
    return texts


def answers_measure(
    passages: Sequence[DocPassage],
    *,
    encoder: BertEncoder | None,
    questions: Sequence[Question],
    engine: Any,
    max_tokens: int,
) -> dict[str, Any]:
    """Answers with and without the passages the chat would give, and the
    shares holding the fact and citing a passage."""
    from chat.services.knowledge import Grounding, messages_grounded
    from inference.citations import citations_used
    from models_admin.demo_knowledge import DEMO_KNOWLEDGE_NAME
    from models_admin.models import KnowledgeBase
    from models_admin.selectors.knowledge import Passage as Retrieved
    from models_admin.selectors.knowledge import Retrieval

    depth, min_match, min_similarity = _gate_defaults()
    base = KnowledgeBase(name=DEMO_KNOWLEDGE_NAME)
    index = index_build(passages, encoder)
    vectors = encoder.encode([q.text for q in questions]) if encoder is not None else None
    plain: list[list[dict[str, str]]] = []
    grounded: list[list[dict[str, str]]] = []
    gated: list[bool] = []
    knowledge_tokens = 0
    for number, question in enumerate(questions):
        hits = index.search(
            question.text, k=depth, vector=None if vectors is None else vectors[number]
        )
        retrieval = Retrieval(base_id=0, query=question.text, dense=vectors is not None)
        retrieval.found = _found(
            hits, dense=vectors is not None, min_match=min_match, min_similarity=min_similarity
        )
        grounding = Grounding(base=base, retrieval=retrieval)
        for hit in hits:
            source = passages[hit.chunk_id]
            grounding.passages.append(
                Retrieved(
                    chunk_id=hit.chunk_id,
                    source_id=0,
                    title=source.title,
                    url="",
                    heading=source.passage.heading,
                    text=source.passage.text,
                    score=hit.score,
                    match=hit.match,
                    similarity=hit.similarity,
                )
            )
        messages = [{"role": "user", "content": question.text}]
        plain.append(messages)
        # Every question gets its passages, found or not: this measures
        # what they are worth to the model. The gate is applied after.
        grounded.append(messages_grounded(messages, grounding))
        gated.append(retrieval.found)
        system = grounded[-1][0]["content"]
        knowledge_tokens = max(knowledge_tokens, len(engine.tokenizer.encode(system)))
    started = time.perf_counter()
    answers = answers_generate(engine, plain + grounded, max_tokens=max_tokens)
    seconds = time.perf_counter() - started
    without, with_ = answers[: len(questions)], answers[len(questions) :]
    count = len(questions)

    # A fact the question itself names ("Do you take American Express?")
    # is found in any answer that repeats the question: these are also
    # counted apart.
    unasked = [not fact_in(q.text, q.fact) for q in questions]

    def share(texts: list[str], *, raw: bool = False, only_unasked: bool = False) -> float:
        hits = [
            (q.fact.lower() in t.lower()) if raw else fact_in(t, q.fact)
            for q, t, keep in zip(questions, texts, unasked, strict=True)
            if keep or not only_unasked
        ]
        return sum(hits) / max(len(hits), 1)

    with_share, without_share = share(with_), share(without)
    # As the chat answers: a question the gate finds nothing for gets the
    # base's "nothing found" reply, which holds no fact.
    chat_share = (
        sum(
            found and fact_in(text, q.fact)
            for q, text, found in zip(questions, with_, gated, strict=True)
        )
        / count
    )
    cited = sum(bool(citations_used(text, allowed=depth)) for text in with_)
    return {
        "questions": count,
        "passages": depth,
        "seconds": round(seconds, 1),
        "fact_without": without_share,
        "fact_with": with_share,
        "fact_without_raw": share(without, raw=True),
        "fact_with_raw": share(with_, raw=True),
        "unasked": sum(unasked),
        "fact_without_unasked": share(without, only_unasked=True),
        "fact_with_unasked": share(with_, only_unasked=True),
        "ratio": with_share / without_share if without_share else None,
        "fact_with_gated": chat_share,
        "cite_share": cited / count,
        "knowledge_tokens_max": knowledge_tokens,
        "examples": [
            {"question": q.text, "fact": q.fact, "without": a, "with": b}
            for q, a, b in zip(questions, without, with_, strict=True)
        ],
    }


# --- report ----------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:5.1f}%"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    import bm25s  # noqa: F401

    # bm25s sets its logger to DEBUG when imported, over the settings'
    # WARNING, and logs every index build at DEBUG.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    from django.conf import settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="use only the first N questions")
    parser.add_argument("--skip-answers", action="store_true", help="skip the model's answers")
    parser.add_argument("--k", type=int, default=3, help="recall@k")
    parser.add_argument("--max-tokens", type=int, default=80, help="new tokens per answer")
    parser.add_argument("--model", type=Path, default=Path(settings.DEFAULT_MODEL_DIR))
    parser.add_argument("--gguf", type=Path, default=Path(settings.DEFAULT_MODEL_GGUF_DIR))
    parser.add_argument(
        "--embedding", type=Path, default=Path(settings.KNOWLEDGE_EMBEDDING_DIR or "-")
    )
    parser.add_argument("--passages", type=int, default=SYNTHETIC_PASSAGES)
    parser.add_argument(
        "--out", type=Path, default=Path(settings.VAR_DIR) / "bench/knowledge.json"
    )
    args = parser.parse_args(argv)

    questions = QUESTIONS[: args.limit] if args.limit > 0 else QUESTIONS
    passages = demo_passages()
    encoder = encoder_load(args.embedding)
    report: dict[str, Any] = {
        "embedding": model_key(args.embedding) if encoder is not None else None,
        "questions": len(questions),
        "unanswerable": len(UNANSWERABLE),
        "demo_passages": len(passages),
    }
    print(f"{len(passages)} passages from {len(demo_articles())} articles; "
          f"{len(questions)} questions, {len(UNANSWERABLE)} off-topic")  # fmt: skip
    if encoder is None:
        print(f"no embedding model at {args.embedding}: BM25 alone, no hybrid")
    else:
        print(f"embedding model {args.embedding.name} ({encoder.dimension} dimensions)")

    k = args.k
    retrieval = retrieval_measure(passages, encoder=encoder, k=k, questions=questions)
    report["retrieval"] = retrieval
    print(f"\nretrieval{'':9} {'recall@1':>9} {f'recall@{k}':>9}  found: questions  off-topic")
    for mode, row in retrieval.items():
        print(f"  {mode:16} {_pct(row['recall@1']):>9} {_pct(row[f'recall@{k}']):>9}  "
              f"{_pct(row['found_answerable']):>16} {_pct(row['found_unanswerable']):>10}"
              f"  ({row['gate']})")  # fmt: skip
    best = max(row[f"recall@{k}"] for row in retrieval.values())
    print(f"  best recall@{k} {_pct(best).strip()}; target >= {TARGET_RECALL:.0%}: "
          f"{_met(best >= TARGET_RECALL)}")  # fmt: skip

    if not args.skip_answers:
        engine, backend = engine_make(args.model, args.gguf)
        answers = answers_measure(
            passages,
            encoder=encoder,
            questions=questions,
            engine=engine,
            max_tokens=args.max_tokens,
        )
        if hasattr(engine, "close"):
            engine.close()
        answers["backend"] = backend
        report["answers"] = answers
        mode = "hybrid" if encoder is not None else "BM25"
        seconds = answers["seconds"]
        print(f"\nanswers ({backend}, greedy, {args.max_tokens} new tokens, top "
              f"{answers['passages']} passages by {mode}; {seconds:.0f} s)")  # fmt: skip
        print(f"  {'share holding the fact':28} {'all':>6} {'raw':>6} "
              f"{'fact not in question (' + str(answers['unasked']) + ')':>28}")  # fmt: skip
        for name, key in (("without knowledge", "without"), ("with knowledge", "with")):
            print(f"  {name:28} {_pct(answers[f'fact_{key}'])} {_pct(answers[f'fact_{key}_raw'])} "
                  f"{_pct(answers[f'fact_{key}_unasked']):>28}")  # fmt: skip
        # As the chat answers: the "nothing found" reply where the gate
        # finds nothing.
        print(f"  {'with knowledge, found gate':28} {_pct(answers['fact_with_gated'])}")
        ratio = answers["ratio"]
        if ratio is None:  # no answer without knowledge held its fact
            ok = answers["fact_with"] > 0
            shown = "unbounded (none right without knowledge)" if ok else "n/a (none right)"
        else:
            ok = ratio >= TARGET_ANSWER_RATIO
            shown = f"{ratio:.1f}x"
        print(f"  with / without {shown}; target >= {TARGET_ANSWER_RATIO:.0f}x: {_met(ok)}")
        print(f"  grounded answers citing a passage: {_pct(answers['cite_share']).strip()}")
        budget = settings.KNOWLEDGE_PROMPT_TOKENS
        if answers["knowledge_tokens_max"] > budget:
            print(f"  note: a system message of {answers['knowledge_tokens_max']} tokens is over "
                  f"KNOWLEDGE_PROMPT_TOKENS ({budget}); the chat would drop passages")  # fmt: skip

    latency = latency_measure(passages, encoder=encoder, count=args.passages)
    report["latency"] = latency
    print(f"\nlatency: {latency['passages']:,} synthetic passages of ~{latency['mean_words']:.0f} "
          f"words, {latency['queries']} queries, top 4")  # fmt: skip
    print(f"  vectors are random unit vectors of {latency['dimension']} dimensions: "
          "this measures search cost, not quality")  # fmt: skip
    if latency["query_vectors"] == "random":
        print("  no embedding model: query vectors random too (no embedding time)")
    print(f"  {'':34} {'p50 ms':>8} {'p95 ms':>8}")
    print(f"  {'BM25 alone':34} {latency['bm25']['p50_ms']:8.2f} "
          f"{latency['bm25']['p95_ms']:8.2f}")  # fmt: skip
    label = "query embedding + hybrid search"
    print(f"  {label:34} {latency['hybrid']['p50_ms']:8.2f} "
          f"{latency['hybrid']['p95_ms']:8.2f}")  # fmt: skip
    p95 = latency["hybrid"]["p95_ms"]
    print(f"  hybrid p95 target <= {TARGET_P95_MS:.0f} ms on {os.cpu_count()} cores: "
          f"{_met(p95 <= TARGET_P95_MS)}")  # fmt: skip
    print(f"  index build {latency['build_s']:.1f} s, {latency['bytes']:,} bytes, "
          f"load {latency['load_s'] * 1000:.0f} ms")  # fmt: skip

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
