"""Reads of the knowledge bases: searching a base for a question, and the
bases a member or a staff page may list.

Each process keeps the index of a base it has searched in memory and
loads it again only when the database holds a newer version.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from models_admin.knowledge.embeddings import encoder_get, model_folder_is_complete, model_key
from models_admin.knowledge.index import SearchIndex
from models_admin.models import KnowledgeBase, KnowledgeChunk, KnowledgeIndex, KnowledgeSource

logger = logging.getLogger(__name__)

#: Characters of a passage a source card shows.
EXCERPT_CHARS = 280


@dataclass(frozen=True)
class Passage:
    """A retrieved passage, numbered as the prompt gives it."""

    chunk_id: int
    source_id: int
    title: str
    url: str
    heading: str
    text: str
    score: float
    match: float
    similarity: float | None = None

    def card(self, number: int) -> dict[str, Any]:
        """What a source card under an answer shows."""
        excerpt = " ".join(self.text.split())
        if len(excerpt) > EXCERPT_CHARS:
            excerpt = excerpt[: EXCERPT_CHARS - 1].rsplit(" ", 1)[0] + "…"
        return {
            "n": number,
            "chunk": self.chunk_id,
            "source": self.source_id,
            "title": self.title,
            "url": self.url,
            "heading": self.heading,
            "excerpt": excerpt,
            "score": round(self.score, 3),
            "match": round(self.match, 3),
            "similarity": None if self.similarity is None else round(self.similarity, 3),
        }


@dataclass
class Retrieval:
    """What a search found: ``passages`` best first; ``found`` when the
    best is relevant enough to answer from."""

    base_id: int
    query: str
    passages: list[Passage] = field(default_factory=list)
    found: bool = False
    best_match: float = 0.0
    #: Ranked by meaning too (the index has vectors of the model in use).
    dense: bool = False
    best_similarity: float = 0.0
    index_version: int = 0
    seconds: float = 0.0


class _IndexCache:
    """Indexes loaded in this process, by base, with their version."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indexes: dict[int, tuple[int, SearchIndex]] = {}

    def get(self, base_id: int) -> tuple[int, SearchIndex] | None:
        version = (
            KnowledgeIndex.objects.filter(base_id=base_id)
            .values_list("version", flat=True)
            .first()
        )
        if version is None:
            return None
        with self.lock:
            held = self.indexes.get(base_id)
        if held is not None and held[0] == version:
            return held
        row = KnowledgeIndex.objects.filter(base_id=base_id).values_list("version", "data").first()
        if row is None:
            return None
        loaded = (int(row[0]), SearchIndex.from_bytes(bytes(row[1])))
        with self.lock:
            self.indexes[base_id] = loaded
        return loaded

    def clear(self) -> None:
        with self.lock:
            self.indexes.clear()


_cache = _IndexCache()


def embedding_model() -> tuple[Path, str] | None:
    """The embedding model folder in use and its key, or None."""
    folder = settings.KNOWLEDGE_EMBEDDING_DIR
    if not folder:
        return None
    path = Path(folder)
    if not model_folder_is_complete(path):
        return None
    return path, model_key(path)


def _query_vector(index: SearchIndex, query: str) -> Any:
    """The query's embedding by the model of the index's vectors, or None
    (no vectors, another model now, or it failed: words alone rank)."""
    if index.vectors is None or not index.model_key:
        return None
    model = embedding_model()
    if model is None or model[1] != index.model_key:
        return None
    try:
        return encoder_get(model[0]).encode([query])[0]
    except Exception:
        logger.exception("Embedding a question failed; searching by words alone")
        return None


def knowledge_search(
    *,
    base: KnowledgeBase,
    query: str,
    k: int | None = None,
    min_match: float | None = None,
    min_similarity: float | None = None,
) -> Retrieval:
    """The ``k`` (the base's ``passages``) best passages of ``base`` for
    ``query``, from the index last built. ``found`` says whether the best
    is close enough to answer from: by meaning, a cosine similarity of at
    least ``min_similarity``; by words alone, speaking to at least
    ``min_match`` of the question (``Hit.match``); both default to the
    base's."""
    started = time.perf_counter()
    k = k or base.passages
    retrieval = Retrieval(base_id=base.pk, query=query)
    held = _cache.get(base.pk)
    if held is None:
        retrieval.seconds = time.perf_counter() - started
        return retrieval
    retrieval.index_version, index = held
    vector = _query_vector(index, query)
    retrieval.dense = vector is not None
    hits = index.search(query, k=k, vector=vector)
    rows = {
        row.pk: row
        for row in KnowledgeChunk.objects.filter(pk__in=[hit.chunk_id for hit in hits])
        .select_related("source")
        .only("pk", "heading", "text", "source__id", "source__title", "source__url")
    }
    for hit in hits:
        row = rows.get(hit.chunk_id)
        if row is None:  # deleted since the index was built
            continue
        retrieval.passages.append(
            Passage(
                chunk_id=row.pk,
                source_id=row.source.pk,
                title=row.source.title,
                url=row.source.url,
                heading=row.heading,
                text=row.text,
                score=hit.score,
                match=hit.match,
                similarity=hit.similarity,
            )
        )
    retrieval.best_match = max((p.match for p in retrieval.passages), default=0.0)
    if retrieval.dense:
        retrieval.best_similarity = max(
            (p.similarity for p in retrieval.passages if p.similarity is not None), default=0.0
        )
        threshold = base.min_similarity if min_similarity is None else min_similarity
        retrieval.found = bool(retrieval.passages) and retrieval.best_similarity >= threshold
    else:
        threshold = base.min_match if min_match is None else min_match
        retrieval.found = bool(retrieval.passages) and retrieval.best_match >= threshold
    retrieval.seconds = time.perf_counter() - started
    return retrieval


def knowledge_cache_clear() -> None:
    _cache.clear()


def knowledge_bases_for_chat() -> QuerySet[KnowledgeBase]:
    """The bases members may attach to a conversation or name in the API."""
    return KnowledgeBase.objects.filter(in_chat=True).order_by("name")


def knowledge_base_for_api(*, name: Any, default: KnowledgeBase | None) -> KnowledgeBase | None:
    """The base an API call names (by name or id): one members may use, or
    its key's own; None when it names none that fits."""
    if not isinstance(name, str | int) or isinstance(name, bool):
        return None
    text = str(name).strip()
    if default is not None and text in (default.name, str(default.pk)):
        return default
    usable = knowledge_bases_for_chat()
    match = usable.filter(name=text).first()
    if match is None and text.isdigit():
        match = usable.filter(pk=int(text)).first()
    return match


def knowledge_bases_overview() -> QuerySet[KnowledgeBase]:
    """Every base with its counts of sources (ready, failed) and passages."""
    return (
        KnowledgeBase.objects.annotate(
            source_total=Count("sources", distinct=True),
            source_failed=Count(
                "sources", filter=Q(sources__status=KnowledgeSource.Status.FAILED), distinct=True
            ),
            source_pending=Count(
                "sources",
                filter=Q(
                    sources__status__in=[
                        KnowledgeSource.Status.QUEUED,
                        KnowledgeSource.Status.FETCHING,
                    ]
                ),
                distinct=True,
            ),
        )
        .select_related("index")
        .defer("index__data")
    )


def knowledge_index_describe(base: KnowledgeBase, index: KnowledgeIndex | None) -> dict[str, Any]:
    """What is known of a base's index: ``version`` (0 when none was
    built), ``chunks``, ``built_at``, ``build_seconds``, ``stale`` while a
    change waits for its build, ``vectors`` when it holds any and
    ``dense`` when they are the embedding model's in use (else ranking is
    by words alone)."""
    stale = base.changed_at is not None and (
        index is None or index.covers is None or index.covers < base.changed_at
    )
    if index is None:
        return {"version": 0, "chunks": 0, "stale": stale, "dense": False, "vectors": False}
    model = embedding_model()
    return {
        "version": index.version,
        "chunks": index.chunk_count,
        "built_at": index.built_at,
        "build_seconds": index.build_seconds,
        "stale": stale,
        "dense": model is not None
        and bool(index.embedding_key)
        and model[1] == index.embedding_key,
        "vectors": bool(index.embedding_key),
    }


def knowledge_index_state(*, base: KnowledgeBase) -> dict[str, Any]:
    """``knowledge_index_describe`` of the base's index, read without its
    data."""
    return knowledge_index_describe(
        base, KnowledgeIndex.objects.filter(base=base).defer("data").first()
    )
