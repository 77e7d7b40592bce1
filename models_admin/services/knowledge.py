"""Knowledge bases and their sources: creating bases, importing files and
URLs into passages (a new import replaces a source's passages in one
transaction), deleting, and building the search index that answers read.

Every change marks the base changed and queues its index build after
commit; answering reads the index last built and never waits for one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext

from models_admin.knowledge.chunks import passages_split
from models_admin.knowledge.documents import (
    Document,
    DocumentError,
    document_kind,
    document_parse,
)
from models_admin.knowledge.embeddings import encoder_get
from models_admin.knowledge.fetch import FetchError, url_fetch
from models_admin.knowledge.index import SearchIndex
from models_admin.models import KnowledgeBase, KnowledgeChunk, KnowledgeIndex, KnowledgeSource
from models_admin.selectors.knowledge import embedding_model

logger = logging.getLogger(__name__)

#: URLs one request may add.
MAX_URLS = 100


def knowledge_base_create(
    *,
    name: str,
    description: str = "",
    in_chat: bool = False,
    passages: int = 4,
    min_match: float | None = None,
    min_similarity: float | None = None,
    nothing_found: str = "",
    user: AbstractBaseUser | None = None,
) -> KnowledgeBase:
    base = KnowledgeBase(
        name=name.strip(),
        description=description.strip(),
        in_chat=in_chat,
        passages=passages,
        created_by_id=user.pk if user is not None and user.pk else None,
    )
    if min_match is not None:
        base.min_match = min_match
    if min_similarity is not None:
        base.min_similarity = min_similarity
    if nothing_found.strip():
        base.nothing_found = nothing_found.strip()
    base.full_clean()
    base.save()
    return base


def knowledge_base_update(*, base: KnowledgeBase, **fields: Any) -> KnowledgeBase:
    """Change a base's settings (``name``, ``description``, ``in_chat``,
    ``passages``, ``min_match``, ``min_similarity``, ``nothing_found``)."""
    allowed = {
        "name",
        "description",
        "in_chat",
        "passages",
        "min_match",
        "min_similarity",
        "nothing_found",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise TypeError(f"unknown fields: {sorted(unknown)}")
    for name, value in fields.items():
        setattr(base, name, value.strip() if isinstance(value, str) else value)
    base.full_clean()
    base.save(update_fields=[*fields, "updated_at"])
    return base


def knowledge_base_delete(*, base: KnowledgeBase) -> None:
    base.delete()


def _changed(base_id: int, *, queue: bool = True) -> None:
    """Mark the base changed and (``queue``) queue its index build after
    commit."""
    KnowledgeBase.objects.filter(pk=base_id).update(changed_at=timezone.now())
    if queue:
        transaction.on_commit(lambda: knowledge_index_queue(base_id=base_id))


def knowledge_index_queue(*, base_id: int) -> None:
    from models_admin.tasks import knowledge_index_build_task

    try:
        knowledge_index_build_task.delay(base_id)
    except Exception:
        # The broker is away: the base stays marked changed, and the next
        # change or a rebuild from the dashboard builds it.
        logger.exception("Could not queue the index build of knowledge base %s", base_id)


def _document_read(
    *, data: bytes, filename: str, content_type: str, charset: str = ""
) -> Document:
    limit = settings.KNOWLEDGE_MAX_FILE_BYTES
    if len(data) > limit:
        raise ValidationError(
            gettext("The file is %(data)s bytes; the limit is %(limit)s bytes.")
            % {
                "data": number_format(len(data), force_grouping=True),
                "limit": number_format(limit, force_grouping=True),
            }
        )
    try:
        kind = document_kind(filename=filename, content_type=content_type, data=data)
        return document_parse(data, kind=kind, filename=filename, charset=charset)
    except DocumentError as exc:
        raise ValidationError(str(exc)) from None


def _passages_store(
    *,
    source: KnowledgeSource,
    document: Document,
    data: bytes,
    title: str = "",
    queue: bool = True,
) -> KnowledgeSource:
    """Replace ``source``'s passages with ``document``'s. Call inside a
    transaction that holds the source's row lock."""
    passages = passages_split(document)
    KnowledgeChunk.objects.filter(source=source).delete()
    KnowledgeChunk.objects.bulk_create(
        [
            KnowledgeChunk(
                source=source,
                base_id=source.base_id,
                position=position,
                heading=passage.heading[:1000],
                text=passage.text,
            )
            for position, passage in enumerate(passages)
        ],
        batch_size=500,
    )
    source.title = (title or document.title)[:300]
    source.document_kind = document.kind
    source.status = KnowledgeSource.Status.READY
    source.error = ""
    source.version += 1
    source.content_hash = hashlib.sha256(data).hexdigest()
    source.size_bytes = len(data)
    source.chunk_count = len(passages)
    source.imported_at = timezone.now()
    source.full_clean()
    source.save()
    _changed(source.base_id, queue=queue)
    return source


def knowledge_file_add(
    *,
    base: KnowledgeBase,
    filename: str,
    data: bytes,
    content_type: str = "",
    title: str = "",
    queue: bool = True,
) -> KnowledgeSource:
    """Import a file into ``base``; a file of the same name is replaced
    (its passages swapped in one transaction). A file that cannot be read
    raises ValidationError and changes nothing. With ``queue`` False the
    caller builds the index (after a batch, say)."""
    filename = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()[:255]
    if not filename:
        raise ValidationError(gettext("The file has no name."))
    if "\x00" in filename:
        raise ValidationError(gettext("The file name holds a NUL character."))
    document = _document_read(data=data, filename=filename, content_type=content_type)
    try:
        with transaction.atomic():
            source, _ = KnowledgeSource.objects.select_for_update().get_or_create(
                base=base, kind=KnowledgeSource.Kind.FILE, filename=filename
            )
            return _passages_store(
                source=source, document=document, data=data, title=title, queue=queue
            )
    except IntegrityError:
        # Another upload of the same name created it first: replace that.
        with transaction.atomic():
            source = KnowledgeSource.objects.select_for_update().get(
                base=base, kind=KnowledgeSource.Kind.FILE, filename=filename
            )
            return _passages_store(
                source=source, document=document, data=data, title=title, queue=queue
            )


def _url_clean(url: str) -> str:
    url = url.strip()
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ValidationError(
            gettext("%(url)r is not an http(s) address.") % {"url": url[:200]}
        ) from None
    if len(url) > 2000:
        raise ValidationError(gettext("Addresses are limited to 2,000 characters."))
    return url


def knowledge_urls_add(
    *, base: KnowledgeBase, urls: list[str], queue: bool = True
) -> list[KnowledgeSource]:
    """Add web pages to ``base`` and queue their fetch (with ``queue``
    False the caller fetches them); an address already in the base is
    fetched again. Every address is checked first: one bad address
    refuses them all, naming it."""
    cleaned = list(dict.fromkeys(_url_clean(url) for url in urls if url.strip()))
    if not cleaned:
        raise ValidationError(gettext("Give at least one address."))
    if len(cleaned) > MAX_URLS:
        raise ValidationError(
            gettext("At most %(max_urls)s addresses at a time (%(cleaned)s given).")
            % {"max_urls": MAX_URLS, "cleaned": len(cleaned)}
        )
    sources = []
    with transaction.atomic():
        for url in cleaned:
            source, _ = KnowledgeSource.objects.get_or_create(
                base=base, kind=KnowledgeSource.Kind.URL, url=url
            )
            source.status = KnowledgeSource.Status.QUEUED
            source.error = ""
            source.save(update_fields=["status", "error", "updated_at"])
            sources.append(source)
            if queue:
                transaction.on_commit(partial(knowledge_fetch_queue, source_id=source.pk))
    return sources


def knowledge_fetch_queue(*, source_id: int) -> None:
    from models_admin.tasks import knowledge_source_fetch_task

    try:
        knowledge_source_fetch_task.delay(source_id)
    except Exception as exc:
        logger.exception("Could not queue the fetch of knowledge source %s", source_id)
        KnowledgeSource.objects.filter(pk=source_id).update(
            status=KnowledgeSource.Status.FAILED,
            error=f"The fetch could not be queued: {exc}"[:2000],
        )


def knowledge_source_refresh(*, source: KnowledgeSource) -> KnowledgeSource:
    """Fetch a web page source again."""
    if source.kind != KnowledgeSource.Kind.URL:
        raise ValidationError(
            gettext("Only web pages are fetched again; upload a file again instead.")
        )
    return knowledge_urls_add(base=source.base, urls=[source.url])[0]


def knowledge_source_fetch(*, source_id: int) -> KnowledgeSource | None:
    """Fetch a web page source and import it. A page that cannot be had or
    read marks the source failed with the reason; passages from an
    earlier fetch stay until a fetch succeeds."""
    updated = KnowledgeSource.objects.filter(pk=source_id, kind=KnowledgeSource.Kind.URL).update(
        status=KnowledgeSource.Status.FETCHING, error=""
    )
    if not updated:
        return None
    source = KnowledgeSource.objects.get(pk=source_id)
    try:
        fetched = url_fetch(
            source.url,
            timeout=settings.KNOWLEDGE_FETCH_TIMEOUT,
            max_bytes=settings.KNOWLEDGE_MAX_FILE_BYTES,
            allow_private=settings.KNOWLEDGE_FETCH_PRIVATE,
        )
        name = fetched.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        document = _document_read(
            data=fetched.data,
            filename=name if "." in name else "",
            content_type=fetched.content_type,
            charset=fetched.charset,
        )
    except (FetchError, ValidationError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        KnowledgeSource.objects.filter(pk=source_id).update(
            status=KnowledgeSource.Status.FAILED, error=message[:2000], updated_at=timezone.now()
        )
        logger.info("Knowledge source %s failed: %s", source_id, message)
        source.refresh_from_db()
        return source
    with transaction.atomic():
        locked = KnowledgeSource.objects.select_for_update().filter(pk=source_id).first()
        if locked is None:  # deleted while it was fetched
            return None
        return _passages_store(source=locked, document=document, data=fetched.data)


def knowledge_source_delete(*, source: KnowledgeSource, queue: bool = True) -> None:
    """Delete a source and its passages; the base's index is rebuilt (on
    the queue, unless ``queue`` is False)."""
    with transaction.atomic():
        base_id = source.base_id
        source.delete()
        _changed(base_id, queue=queue)


def knowledge_index_rebuild(*, base: KnowledgeBase) -> None:
    """Queue a build of ``base``'s index now."""
    transaction.on_commit(lambda: knowledge_index_queue(base_id=base.pk))


#: Passages embedded per batch (and stored per transaction).
EMBED_BATCH = 32


def _vectors(passages: list[tuple[int, str]]) -> tuple[Any, str, str]:
    """The embedding of each passage by the model in use (computed for the
    passages that lack one by it, and kept on them), its key, and a
    warning when dense search had to be left out."""
    import numpy as np

    model = embedding_model()
    if model is None or not passages:
        return None, "", ""
    folder, key = model
    have = dict(
        KnowledgeChunk.objects.filter(
            pk__in=[pk for pk, _ in passages], embedding_key=key
        ).values_list("pk", "embedding")
    )
    missing = [(pk, text) for pk, text in passages if have.get(pk) is None]
    try:
        encoder = encoder_get(folder) if missing else None
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start : start + EMBED_BATCH]
            assert encoder is not None
            rows = encoder.encode([text for _, text in batch])
            for (pk, _), row in zip(batch, rows, strict=True):
                blob = row.astype(np.float32).tobytes()
                have[pk] = blob
                KnowledgeChunk.objects.filter(pk=pk).update(embedding=blob, embedding_key=key)
    except Exception as exc:
        logger.exception("Embedding passages with %s failed", folder)
        return None, "", f"Dense search is off for this index: embedding failed ({exc})."[:2000]
    matrix = np.stack(
        [np.frombuffer(bytes(have[pk] or b""), dtype=np.float32) for pk, _ in passages]
    )
    return matrix, key, ""


def knowledge_index_build(*, base_id: int) -> KnowledgeIndex | None:
    """Build ``base``'s index from its passages as they are now and store
    it as the next version; a build that finds the index already covers
    the last change, with the embedding model in use now, does nothing."""
    base = KnowledgeBase.objects.filter(pk=base_id).first()
    if base is None:
        return None
    covers = base.changed_at
    current = KnowledgeIndex.objects.filter(base=base).defer("data").first()
    model = embedding_model()
    if (
        current is not None
        and covers is not None
        and current.covers == covers
        # An embedding model added, changed or taken away since: build.
        and current.embedding_key == (model[1] if model is not None else "")
    ):
        return current
    started = time.monotonic()
    rows = list(
        KnowledgeChunk.objects.filter(base=base, source__status=KnowledgeSource.Status.READY)
        .order_by("source_id", "position")
        .values_list("pk", "heading", "text", "source__title")
    )
    passages = [
        (pk, "\n".join(part for part in (title, heading, text) if part))
        for pk, heading, text, title in rows
    ]
    vectors, key, warning = _vectors(passages)
    try:
        data = SearchIndex.build(passages, vectors, key).to_bytes()
    except Exception as exc:
        logger.exception("Building the index of knowledge base %s failed", base_id)
        KnowledgeBase.objects.filter(pk=base_id).update(index_error=str(exc)[:2000])
        raise
    with transaction.atomic():
        index, _ = KnowledgeIndex.objects.select_for_update().get_or_create(
            base=base, defaults={"built_at": timezone.now()}
        )
        if index.covers is not None and covers is not None and index.covers > covers:
            return index  # a build that started later stored a newer one
        index.version += 1
        index.data = data
        index.chunk_count = len(passages)
        index.embedding_key = key
        index.build_seconds = time.monotonic() - started
        index.built_at = timezone.now()
        index.covers = covers
        index.save()
        KnowledgeBase.objects.filter(pk=base_id).update(index_error=warning)
    logger.info(
        "Indexed knowledge base %s: %s passages in %.2f s", base_id, len(passages),
        index.build_seconds,
    )  # fmt: skip
    return index


def knowledge_demo_create(
    *, user: AbstractBaseUser | None = None, queue: bool = True
) -> KnowledgeBase:
    """The demo shop's help center as a base (``DEMO_KNOWLEDGE_NAME``), its
    articles imported again when it exists; members may use it. One index
    build is queued for the lot (none with ``queue`` False)."""
    from models_admin.demo_knowledge import DEMO_KNOWLEDGE_NAME, demo_articles

    base = KnowledgeBase.objects.filter(name=DEMO_KNOWLEDGE_NAME).first()
    if base is None:
        base = knowledge_base_create(
            name=DEMO_KNOWLEDGE_NAME,
            description="Fernhollow's policy articles: returns, delivery, payment, loyalty.",
            in_chat=True,
            user=user,
        )
    for filename, data in demo_articles().items():
        knowledge_file_add(
            base=base, filename=filename, data=data, content_type="text/markdown", queue=False
        )
    if queue:
        knowledge_index_rebuild(base=base)
    return base
