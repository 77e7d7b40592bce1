"""The search index of a knowledge base: BM25 over the passages (bm25s,
English stemming and stop words), optionally combined with dense vectors
(cosine similarity) in a weighted sum.

An index is built from ``(chunk id, text)`` pairs and kept as bytes (a
zip of bm25s's own files plus the chunk ids and vectors), so every
process that answers can load the version the database holds.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

#: The share of meaning (cosine similarity) in the hybrid ranking; the
#: rest is the BM25 score scaled to the best one. Measured on the demo help
#: center (``tools/knowledge_bench.py``): 0.5 to 0.8 rank alike, 0.7 best
#: at the top; reciprocal-rank fusion let a lone word match outrank the
#: passage that means the same.
DENSE_WEIGHT = 0.7


@lru_cache(maxsize=1)
def _bm25s() -> Any:
    """bm25s, imported once; it sets its own logger to DEBUG on import,
    which would log every index build."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokens(texts: list[str]) -> list[list[str]]:
    """Each text as the stemmed words the index reads (stop words out)."""
    return _bm25s().tokenize(
        texts, stopwords="en_plus", stemmer=_stemmer(), return_ids=False, show_progress=False
    )


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float  # BM25 score (0 when found by the vectors alone)
    rank_score: float  # what the ranking used: BM25, or the fused score
    #: How much of the question the passage speaks to: the share of the
    #: question's words that the base uses (each weighted by its inverse
    #: document frequency) which the passage contains, times the square root
    #: of the share of the question's words the base uses at all.
    match: float = 0.0
    #: Cosine similarity to the question, when the index has vectors.
    similarity: float | None = None


class SearchIndex:
    """BM25 over passages, with optional unit-length dense vectors."""

    def __init__(
        self,
        retriever: Any,
        chunk_ids: list[int],
        vectors: np.ndarray | None,
        model_key: str = "",
    ) -> None:
        self.retriever = retriever
        self.chunk_ids = chunk_ids
        self.vectors = vectors
        #: Which embedding model made ``vectors``: a query is embedded by it.
        self.model_key = model_key

    @property
    def size(self) -> int:
        return len(self.chunk_ids)

    @classmethod
    def build(
        cls,
        passages: list[tuple[int, str]],
        vectors: np.ndarray | None = None,
        model_key: str = "",
    ) -> SearchIndex:
        """Index ``(chunk id, text)`` pairs; ``vectors`` (one row per pair)
        are normalised to unit length."""
        retriever = _bm25s().BM25()
        if passages:
            corpus = tokens([text for _, text in passages])
            retriever.index(corpus, show_progress=False)
        if vectors is not None:
            vectors = _unit(np.asarray(vectors, dtype=np.float32))
            if len(vectors) != len(passages):
                raise ValueError("one vector per passage")
        return cls(retriever, [chunk_id for chunk_id, _ in passages], vectors, model_key)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("chunks.json", json.dumps(self.chunk_ids))
            archive.writestr("model.json", json.dumps({"embedding": self.model_key}))
            if self.chunk_ids:
                with tempfile.TemporaryDirectory() as folder:
                    self.retriever.save(folder)
                    for path in sorted(Path(folder).iterdir()):
                        archive.write(path, f"bm25/{path.name}")
            if self.vectors is not None:
                stream = io.BytesIO()
                np.save(stream, self.vectors, allow_pickle=False)
                archive.writestr("vectors.npy", stream.getvalue())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SearchIndex:
        bm25s = _bm25s()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            chunk_ids = [int(i) for i in json.loads(archive.read("chunks.json"))]
            model_key = ""
            if "model.json" in names:
                model_key = str(json.loads(archive.read("model.json")).get("embedding") or "")
            vectors = None
            if "vectors.npy" in names:
                vectors = np.load(io.BytesIO(archive.read("vectors.npy")), allow_pickle=False)
            retriever = bm25s.BM25()
            if chunk_ids:
                with tempfile.TemporaryDirectory() as folder:
                    for name in names:
                        if name.startswith("bm25/") and "/" not in name[5:] and name[5:]:
                            (Path(folder) / name[5:]).write_bytes(archive.read(name))
                    retriever = bm25s.BM25.load(folder, mmap=False, load_corpus=False)
        return cls(retriever, chunk_ids, vectors, model_key)

    def bm25(self, words: list[str], k: int) -> list[tuple[int, float]]:
        """The ``k`` best ``(position, score)`` for the query's ``words``
        by BM25, best first; only passages sharing a word with it."""
        if not self.chunk_ids:
            return []
        ids = self.retriever.get_tokens_ids(words)
        if not ids:
            return []
        scores = self.retriever.get_scores(ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def matches(self, words: list[str], positions: list[int]) -> dict[int, float]:
        """For each passage position, the IDF-weighted share of the query's
        distinct ``words`` it contains (see ``Hit.match``)."""
        distinct = [w for w in dict.fromkeys(words) if w]
        if not distinct or not positions:
            return dict.fromkeys(positions, 0.0)
        total = len(self.chunk_ids)
        indptr = self.retriever.scores["indptr"]
        indices = self.retriever.scores["indices"]
        vocab = self.retriever.vocab_dict
        wanted = np.asarray(positions)
        weight_all = 0.0
        matched = np.zeros(len(positions), dtype=np.float64)
        for word in distinct:
            token = vocab.get(word)
            if token is None:
                # A word the base never uses says nothing of which passage
                # fits (it may be filler); a question of such words only
                # matches nothing.
                continue
            docs = indices[indptr[token] : indptr[token + 1]]
            weight = float(np.log(1.0 + (total - len(docs) + 0.5) / (len(docs) + 0.5)))
            weight_all += weight
            matched += weight * np.isin(wanted, docs)
        if weight_all <= 0:
            return dict.fromkeys(positions, 0.0)
        # Scaled by the share of the question's words the base uses at all:
        # one common word in common is not a question the base answers.
        known = (sum(1 for word in distinct if word in vocab) / len(distinct)) ** 0.5
        return {p: float(m / weight_all) * known for p, m in zip(positions, matched, strict=True)}

    def dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(position, cosine)`` to ``vector``."""
        if self.vectors is None or not len(self.vectors):
            return []
        query = _unit(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        similarity = self.vectors @ query
        k = min(k, len(similarity))
        top = np.argpartition(-similarity, k - 1)[:k]
        top = top[np.argsort(-similarity[top], kind="stable")]
        return [(int(i), float(similarity[i])) for i in top]

    def search(self, query: str, *, k: int, vector: np.ndarray | None = None) -> list[Hit]:
        """The ``k`` best passages for ``query``: by BM25, or, given the
        query's ``vector`` and an index with vectors, by a weighted sum of
        the cosine similarity (``DENSE_WEIGHT``) and the BM25 score scaled
        to the best one times ``Hit.match``, over the ``4 k`` best of each
        ranking."""
        depth = max(k * 4, 20)
        words = tokens([query])[0] if self.chunk_ids else []
        lexical = self.bm25(words, depth if vector is not None else k)
        if vector is None or self.vectors is None or not len(self.vectors):
            match = self.matches(words, [i for i, _ in lexical[:k]])
            return [Hit(self.chunk_ids[i], score, score, match[i]) for i, score in lexical[:k]]
        query_vector = _unit(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        similarity = self.vectors @ query_vector
        bm25_score = dict(lexical)
        best = max(bm25_score.values(), default=0.0) or 1.0
        candidates = sorted(set(bm25_score) | {p for p, _ in self.dense(query_vector, depth)})
        # The BM25 score scaled to the best one says only how the word
        # matches rank; times ``match`` it also says how much of the
        # question they cover (a lone common word in common counts little).
        match = self.matches(words, candidates)
        fused = {
            p: DENSE_WEIGHT * float(similarity[p])
            + (1 - DENSE_WEIGHT) * bm25_score.get(p, 0.0) / best * match[p]
            for p in candidates
        }
        order = sorted(fused, key=lambda p: (-fused[p], p))[:k]
        return [
            Hit(
                self.chunk_ids[p], bm25_score.get(p, 0.0), fused[p], match[p], float(similarity[p])
            )
            for p in order
        ]


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
