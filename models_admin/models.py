from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    """A folder of weights and tokenizer that the inference worker can load."""

    class Kind(models.TextChoices):
        BASE = "base", "Base"
        FINETUNE = "finetune", "Fine-tune"
        DISTILL = "distill", "Distilled"

    class State(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=200, unique=True)
    folder = models.CharField(
        max_length=1000,
        help_text="Path of the transformers folder; a relative path is under MODEL_DIR.",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BASE)
    metrics = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.CANDIDATE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["state"],
                condition=Q(state="production"),
                name="model_version_one_production",
                violation_error_message="Another model version is already in production.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        folder = Path(self.folder)
        return folder if folder.is_absolute() else Path(settings.MODEL_DIR) / folder


class Promotion(models.Model):
    """Audit row: production moved from one version to another."""

    from_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="promotions"
    )
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when the system promoted (the first default model).",
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        source = self.from_version.name if self.from_version else "nothing"
        return f"{source} → {self.to_version.name}"
