"""Training data and jobs: datasets, their examples and training jobs."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy

from models_admin.models.versions import ModelVersion


class Dataset(models.Model):
    """Conversations in the training format, split into train and eval."""

    class Source(models.TextChoices):
        UPLOAD = "upload", gettext_lazy("Upload")
        EXPORT = "export", gettext_lazy("Exported from conversations")
        DEMO = "demo", gettext_lazy("Demo")
        CLEAN = "clean", gettext_lazy("Cleaned copy")
        FEEDBACK = "feedback", gettext_lazy("From feedback")

    class Kind(models.TextChoices):
        CONVERSATIONS = "conversations", gettext_lazy("Conversations")
        #: Each example is a prompt with a chosen answer (its messages end
        #: with it) and a rejected one (``DatasetExample.rejected``).
        PREFERENCES = "preferences", gettext_lazy("Preference pairs")

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=15, choices=Kind.choices, default=Kind.CONVERSATIONS)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    eval_fraction = models.FloatField(default=0.1)
    seed = models.IntegerField(default=0)
    # {"examples", "train", "eval", "messages", "tokens", "assistant_tokens"}
    stats = models.JSONField(default=dict, blank=True)
    # What an export was made from, so it can be explained and repeated.
    filters = models.JSONField(default=dict, blank=True)
    #: The dataset this one was made from (a cleaned copy's original).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class DatasetExample(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", gettext_lazy("Train")
        EVAL = "eval", gettext_lazy("Eval")

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="examples")
    index = models.PositiveIntegerField()
    split = models.CharField(max_length=5, choices=Split.choices)
    messages = models.JSONField()
    tokens = models.PositiveIntegerField(null=True, blank=True)
    #: A preference pair's rejected answer (the chosen one ends messages).
    rejected = models.TextField(blank=True)
    #: Where a pair came from: {"kind": "rating" | "regenerated" | "handoff",
    #: "chosen_id", "rejected_id"} (message ids) for pairs from feedback.
    origin = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["dataset", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "index"], name="dataset_example_index_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} #{self.index}"


class TrainingJob(models.Model):
    """A fine-tune, distill or preference-tuning (DPO) run. Its files live under
    ``MODEL_DIR/jobs/<id>/`` and nowhere else."""

    class Kind(models.TextChoices):
        FINETUNE = "finetune", gettext_lazy("Fine-tune")
        DISTILL = "distill", gettext_lazy("Distill")
        DPO = "dpo", gettext_lazy("Preference tuning (DPO)")

    class State(models.TextChoices):
        QUEUED = "queued", gettext_lazy("Queued")
        RUNNING = "running", gettext_lazy("Running")
        COMPLETED = "completed", gettext_lazy("Completed")
        FAILED = "failed", gettext_lazy("Failed")
        CANCELLED = "cancelled", gettext_lazy("Cancelled")

    kind = models.CharField(max_length=10, choices=Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="jobs")
    # The model trained (fine-tune, DPO: also the reference) or the teacher
    # (distill).
    base_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="jobs_as_base"
    )
    # Distill into an existing smaller version instead of a layer-dropped copy.
    student_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="jobs_as_student",
    )
    params = models.JSONField(default=dict)
    # {"step", "total_steps", "loss", "lr", "eval_loss", "examples_per_s", "eta_s"}
    progress = models.JSONField(default=dict, blank=True)
    # [{"step", "loss", "lr"} or {"step", "eval_loss"}], for the curves.
    curve = models.JSONField(default=list, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    # Renewed while a worker runs the job; a stale one means that worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
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
        permissions = [("run_trainingjob", "Can start and cancel training jobs")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job {self.pk}"

    @property
    def folder(self) -> Path:
        return Path(settings.MODEL_DIR) / "jobs" / str(self.pk)

    @property
    def finished(self) -> bool:
        return self.state in (self.State.COMPLETED, self.State.FAILED, self.State.CANCELLED)
