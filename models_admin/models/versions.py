"""Model versions and what happens to them: promotions, canaries,
compressions and evaluations."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy


class ModelVersion(models.Model):
    """A folder of weights and tokenizer that the inference worker can load."""

    class Kind(models.TextChoices):
        BASE = "base", gettext_lazy("Base")
        FINETUNE = "finetune", gettext_lazy("Fine-tune")
        DISTILL = "distill", gettext_lazy("Distilled")
        PREFERENCE = "dpo", gettext_lazy("Preference-tuned")
        COMPRESSED = "compressed", gettext_lazy("Compressed")

    class Format(models.TextChoices):
        TRANSFORMERS = "transformers", gettext_lazy("transformers (torch)")
        GGUF = "gguf", gettext_lazy("GGUF (llama.cpp)")

    class State(models.TextChoices):
        CANDIDATE = "candidate", gettext_lazy("Candidate")
        PRODUCTION = "production", gettext_lazy("Production")
        ARCHIVED = "archived", gettext_lazy("Archived")

    name = models.CharField(max_length=200, unique=True)
    folder = models.CharField(
        max_length=1000,
        help_text=gettext_lazy(
            "Path of the transformers folder; a relative path is under MODEL_DIR."
        ),
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.BASE)
    format = models.CharField(
        max_length=20,
        choices=Format.choices,
        default=Format.TRANSFORMERS,
        help_text=gettext_lazy(
            "How the folder holds the weights, and so which runtime serves it."
        ),
    )
    metrics = models.JSONField(default=dict, blank=True)
    # Answers to the fixed prompt set, for side-by-side comparison:
    # [{"prompt": ..., "answer": ...}, ...].
    answers = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.CANDIDATE)
    job = models.ForeignKey(
        "TrainingJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checkpoints",
    )
    step = models.PositiveIntegerField(null=True, blank=True)
    dataset = models.ForeignKey(
        "Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    evaluated_at = models.DateTimeField(null=True, blank=True)
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
        permissions = [
            ("promote_modelversion", "Can promote, roll back and run canaries of model versions"),
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
        help_text=gettext_lazy("Empty when the system promoted (the first default model)."),
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        source = self.from_version.name if self.from_version else "nothing"
        return f"{source} → {self.to_version.name}"


class Canary(models.Model):
    """A candidate version answering a share of conversations beside
    production. A conversation's side is fixed by a hash of the canary and
    conversation ids, so it stays put while the canary runs, and raising
    the share only moves more conversations over."""

    class Outcome(models.TextChoices):
        PROMOTED = "promoted", gettext_lazy("Promoted")
        STOPPED = "stopped", gettext_lazy("Stopped")

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="canaries")
    percent = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(99)],
        help_text=gettext_lazy("Share of conversations sent to the candidate, 1 to 99."),
    )
    note = models.TextField(blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    started_at = models.DateTimeField(auto_now_add=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ended_at"],
                condition=Q(ended_at__isnull=True),
                name="canary_one_active",
                violation_error_message="Another canary is running; stop it first.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version.name} at {self.percent}%"

    @property
    def active(self) -> bool:
        return self.ended_at is None


class Compression(models.Model):
    """Making a GGUF copy of a version for llama.cpp, quantized; the copy
    becomes a candidate version, measured like a checkpoint."""

    class State(models.TextChoices):
        QUEUED = "queued", gettext_lazy("Queued")
        RUNNING = "running", gettext_lazy("Running")
        COMPLETED = "completed", gettext_lazy("Completed")
        FAILED = "failed", gettext_lazy("Failed")

    source = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="compressions")
    quantization = models.CharField(max_length=10)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    result = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source.name} → {self.quantization}"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.COMPLETED, self.State.FAILED)


class Evaluation(models.Model):
    """Measuring one version on a dataset, queued on the evaluation queue so
    it never holds up a training job; its progress is what the job and
    version pages show while it runs."""

    class State(models.TextChoices):
        QUEUED = "queued", gettext_lazy("Queued")
        RUNNING = "running", gettext_lazy("Running")
        COMPLETED = "completed", gettext_lazy("Completed")
        FAILED = "failed", gettext_lazy("Failed")

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    dataset = models.ForeignKey(
        "Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The job it was queued for: its base measured on the job's data, or a
    # checkpoint of it.
    job = models.ForeignKey(
        "TrainingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    # What it is doing ("eval loss", "decode speed", "answers") and how far.
    phase = models.CharField(max_length=40, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Evaluation of {self.version.name}"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.COMPLETED, self.State.FAILED)
