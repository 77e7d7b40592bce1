"""People's rights over their data: whether their chats may train models,
the archives they take out, and the log of who exported or deleted what."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy


class PrivacyChoice(models.Model):
    """A user's own privacy choices. No row, or ``train_on_chats`` empty,
    means the site default (``TRAINING_OPT_IN_DEFAULT``) applies."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="privacy"
    )
    train_on_chats = models.BooleanField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"privacy of {self.user_id}"


class DataExport(models.Model):
    """An archive of everything a user owns, built by a Celery task. The
    download link works for its owner until ``expires_at``; then the file
    is deleted."""

    class State(models.TextChoices):
        QUEUED = "queued", gettext_lazy("Queued")
        RUNNING = "running", gettext_lazy("Building")
        READY = "ready", gettext_lazy("Ready")
        FAILED = "failed", gettext_lazy("Failed")
        EXPIRED = "expired", gettext_lazy("Expired")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_exports"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    #: {"phase": str, "done": int, "total": int}
    progress = models.JSONField(default=dict, blank=True)
    #: Secret part of the download address.
    token = models.CharField(max_length=64, unique=True)
    #: File name under ``DATA_EXPORT_DIR``.
    file_name = models.CharField(max_length=200, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    #: Rows of each kind in the archive.
    counts = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    downloaded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"export {self.pk} of {self.user_id} ({self.state})"


class PrivacyEvent(models.Model):
    """Audit row: who exported or deleted whose data, and what retention
    removed. The subject is kept as an id and a name, since the account
    may no longer exist."""

    class Action(models.TextChoices):
        EXPORT_REQUESTED = "export_requested", gettext_lazy("Asked for a data export")
        EXPORT_DOWNLOADED = "export_downloaded", gettext_lazy("Downloaded a data export")
        ACCOUNT_DELETED = "account_deleted", gettext_lazy("Deleted an account")
        TRAINING_CHOICE = "training_choice", gettext_lazy("Changed the training choice")
        RETENTION = "retention", gettext_lazy("Retention run")

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    #: Who acted, as named when it happened ("system" for scheduled runs).
    actor_name = models.CharField(max_length=150, blank=True)
    subject_id = models.PositiveIntegerField(null=True, blank=True)
    subject_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    detail = models.CharField(max_length=500, blank=True)
    #: Counts of what the action touched, e.g. {"conversations": 3}.
    counts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at"], name="privacy_event_time")]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.subject_name}"
