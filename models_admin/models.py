from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    """A folder of weights and tokenizer that the inference worker can load."""

    class Kind(models.TextChoices):
        BASE = "base", "Base"
        FINETUNE = "finetune", "Fine-tune"
        DISTILL = "distill", "Distilled"
        PREFERENCE = "dpo", "Preference-tuned"
        COMPRESSED = "compressed", "Compressed"

    class Format(models.TextChoices):
        TRANSFORMERS = "transformers", "transformers (torch)"
        GGUF = "gguf", "GGUF (llama.cpp)"

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
    format = models.CharField(
        max_length=20,
        choices=Format.choices,
        default=Format.TRANSFORMERS,
        help_text="How the folder holds the weights, and so which runtime serves it.",
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
        help_text="Empty when the system promoted (the first default model).",
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
        PROMOTED = "promoted", "Promoted"
        STOPPED = "stopped", "Stopped"

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="canaries")
    percent = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(99)],
        help_text="Share of conversations sent to the candidate, 1 to 99.",
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


class ReviewEvent(models.Model):
    """Audit row: a staff member looked at or acted on a user's
    conversation."""

    class Action(models.TextChoices):
        VIEW = "view", "Viewed"
        FLAG = "flag", "Flagged"
        UNFLAG = "unflag", "Unflagged"
        DATASET_ADD = "dataset_add", "Added to a dataset"

    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    conversation = models.ForeignKey(
        "chat.Conversation", null=True, on_delete=models.SET_NULL, related_name="review_events"
    )
    action = models.CharField(max_length=20, choices=Action.choices)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["conversation", "-created_at"], name="review_conv_time")]

    def __str__(self) -> str:
        return f"{self.staff} {self.action} conversation {self.conversation_id}"


class Dataset(models.Model):
    """Conversations in the training format, split into train and eval."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Upload"
        EXPORT = "export", "Exported from conversations"
        DEMO = "demo", "Demo"
        CLEAN = "clean", "Cleaned copy"
        FEEDBACK = "feedback", "From feedback"

    class Kind(models.TextChoices):
        CONVERSATIONS = "conversations", "Conversations"
        #: Each example is a prompt with a chosen answer (its messages end
        #: with it) and a rejected one (``DatasetExample.rejected``).
        PREFERENCES = "preferences", "Preference pairs"

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
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"

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
        FINETUNE = "finetune", "Fine-tune"
        DISTILL = "distill", "Distill"
        DPO = "dpo", "Preference tuning (DPO)"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

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


class FilterRule(models.Model):
    """A content filter rule: what to find, where, and what to do with it.
    Matching lives in ``inference.content_filter``; ``clean()`` checks
    that the rule compiles."""

    class Kind(models.TextChoices):
        KEYWORDS = "keywords", "Keyword list"
        REGEX = "regex", "Regular expression"
        PRESET = "preset", "Preset"

    class Preset(models.TextChoices):
        EMAIL = "email", "Email address"
        PHONE = "phone", "Phone number"
        CARD = "card", "Payment card number"
        URL = "url", "URL"

    class Scope(models.TextChoices):
        INPUT = "input", "Input (what people send)"
        OUTPUT = "output", "Output (what the model writes)"
        BOTH = "both", "Both"

    class Action(models.TextChoices):
        BLOCK = "block", "Block"
        MASK = "mask", "Mask"
        FLAG = "flag", "Flag for review"

    class Surface(models.TextChoices):
        ALL = "all", "Everywhere"
        CHAT = "chat", "Main chat"
        WIDGET = "widget", "Widget"
        API = "api", "API"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # One keyword or phrase per line.
    keywords = models.TextField(blank=True, max_length=100_000)
    whole_word = models.BooleanField(
        default=True, help_text="Match whole words only, not inside longer words."
    )
    pattern = models.TextField(blank=True, max_length=2000)
    preset = models.CharField(max_length=10, choices=Preset.choices, blank=True)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.BOTH)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.BLOCK)
    mask_with = models.CharField(
        max_length=100,
        blank=True,
        help_text="Replacement for masked text; empty: the preset's label, or asterisks.",
    )
    notice = models.CharField(
        max_length=500,
        blank=True,
        help_text="What people see instead of a blocked message; empty: the site default.",
    )
    surface = models.CharField(max_length=10, choices=Surface.choices, default=Surface.ALL)
    site = models.ForeignKey(
        "chat.WidgetSite",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="filter_rules",
        help_text="Only this widget site's conversations.",
    )
    priority = models.IntegerField(default=100, help_text="Lower runs first.")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from inference.content_filter import RuleError, rule_compile

        if self.site_id is not None and self.surface not in (
            self.Surface.ALL,
            self.Surface.WIDGET,
        ):
            raise ValidationError(
                {"site": ["A rule for one widget site applies to the widget surface."]}
            )
        try:
            rule_compile(self.spec())
        except RuleError as exc:
            raise ValidationError({exc.field: [exc.message]}) from None

    def keyword_list(self) -> list[str]:
        return [line.strip() for line in self.keywords.splitlines() if line.strip()]

    def spec(self) -> dict[str, Any]:
        """The rule as the matcher takes it (plain data, no Django)."""
        return {
            "id": self.pk,
            "name": self.name,
            "kind": self.kind,
            "keywords": self.keyword_list(),
            "whole_word": self.whole_word,
            "pattern": self.pattern,
            "preset": self.preset,
            "scope": self.scope,
            "action": self.action,
            "mask_with": self.mask_with,
            "notice": self.notice,
            "surface": self.surface,
            "site": self.site_id,
            "priority": self.priority,
        }


class FilterRulesEpoch(models.Model):
    """The one row whose token changes, in the same transaction, whenever
    any content filter rule does: every process keeps its compiled rules
    while the token it compiled them at is still the current one."""

    #: The only row's primary key.
    ROW = 1

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="filter_rules_epoch_one_row"),
        ]

    def __str__(self) -> str:
        return self.token


class FilterHit(models.Model):
    """Audit row: a rule matched a message or an answer."""

    rule = models.ForeignKey(
        FilterRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="hits"
    )
    rule_name = models.CharField(max_length=200)
    scope = models.CharField(max_length=10)  # input or output
    action = models.CharField(max_length=10, choices=FilterRule.Action.choices)
    surface = models.CharField(max_length=10, blank=True)
    conversation = models.ForeignKey(
        "chat.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        "chat.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    visitor = models.CharField(max_length=100, blank=True)
    generation_id = models.CharField(max_length=64, blank=True)
    # Text around the match; PII presets keep the match masked.
    excerpt = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["rule", "-created_at"], name="filter_hit_rule_time"),
            models.Index(fields=["-created_at"], name="filter_hit_time"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_name} ({self.action}, {self.scope})"


class Compression(models.Model):
    """Making a GGUF copy of a version for llama.cpp, quantized; the copy
    becomes a candidate version, measured like a checkpoint."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

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
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The job it was queued for: its base measured on the job's data, or a
    # checkpoint of it.
    job = models.ForeignKey(
        TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
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
