"""Knowledge bases: the documents an answer may be grounded in, their
passages, and the search index over them."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy, gettext_noop

#: What an answer says when no passage is relevant enough.
NOTHING_FOUND_TEXT = gettext_noop(
    "I could not find this in our help articles, so I would rather not guess. "
    "Could you put the question another way?"
)


class KnowledgeBase(models.Model):
    """A named collection of sources that answers can cite."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, max_length=2000)
    #: Members may pick it in the chat and name it in API calls; widget
    #: sites and keys use any base their staff attach.
    in_chat = models.BooleanField(default=False)
    passages = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    #: How much of a question the best passage must speak to (the share of
    #: its words, weighted by rarity) for the question to count as
    #: answered from the base, when ranking is by words alone.
    min_match = models.FloatField(
        default=0.3, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    nothing_found = models.TextField(max_length=2000, default=NOTHING_FOUND_TEXT)
    #: With an embedding model (``KNOWLEDGE_EMBEDDING_DIR``): how close in
    #: meaning (cosine) the best passage must be to the question instead.
    min_similarity = models.FloatField(
        default=0.35, validators=[MinValueValidator(-1.0), MaxValueValidator(1.0)]
    )
    changed_at = models.DateTimeField(null=True, blank=True)
    index_error = models.TextField(blank=True, max_length=2000)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("manage_knowledge", "Can manage knowledge bases and their sources")]

    def __str__(self) -> str:
        return self.name


class KnowledgeSource(models.Model):
    """A document in a base: an uploaded file or a fetched URL. Importing
    it again replaces its passages in one transaction."""

    class Kind(models.TextChoices):
        FILE = "file", gettext_lazy("File")
        URL = "url", gettext_lazy("Web page")

    class Status(models.TextChoices):
        QUEUED = "queued", gettext_lazy("Queued")
        FETCHING = "fetching", gettext_lazy("Fetching")
        READY = "ready", gettext_lazy("Ready")
        FAILED = "failed", gettext_lazy("Failed")

    base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="sources")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    title = models.CharField(max_length=300, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    document_kind = models.CharField(max_length=10, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, max_length=2000)
    #: Each import that stored passages adds one.
    version = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    imported_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["base", "url"], condition=Q(kind="url"), name="knowledge_source_url"
            ),
            models.UniqueConstraint(
                fields=["base", "filename"],
                condition=Q(kind="file"),
                name="knowledge_source_file",
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.url or self.filename

    @property
    def link(self) -> str:
        return self.url


class KnowledgeChunk(models.Model):
    """A passage of a source, under its headings."""

    source = models.ForeignKey(KnowledgeSource, on_delete=models.CASCADE, related_name="chunks")
    base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    heading = models.CharField(max_length=1000, blank=True)
    text = models.TextField()
    #: float32 vector by the embedding model ``embedding_key`` names.
    embedding = models.BinaryField(null=True, blank=True)
    embedding_key = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["source", "position"]
        constraints = [
            models.UniqueConstraint(fields=["source", "position"], name="knowledge_chunk_position")
        ]

    def __str__(self) -> str:
        return f"{self.source_id}#{self.position}"


class KnowledgeIndex(models.Model):
    """The search index of a base as last built: read by every process
    that answers, rebuilt by a task after each change."""

    base = models.OneToOneField(KnowledgeBase, on_delete=models.CASCADE, related_name="index")
    version = models.PositiveIntegerField(default=0)
    data = models.BinaryField()
    chunk_count = models.PositiveIntegerField(default=0)
    #: The embedding model of its vectors ("" for words alone).
    embedding_key = models.CharField(max_length=100, blank=True)
    build_seconds = models.FloatField(default=0.0)
    built_at = models.DateTimeField()
    #: The base's ``changed_at`` this index includes.
    covers = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"index v{self.version} of {self.base_id}"
