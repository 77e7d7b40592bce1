"""Moderation: staff review events and the content filter rules with
their hits."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext, gettext_lazy


class ReviewEvent(models.Model):
    """Audit row: a staff member looked at or acted on a user's
    conversation."""

    class Action(models.TextChoices):
        VIEW = "view", gettext_lazy("Viewed")
        FLAG = "flag", gettext_lazy("Flagged")
        UNFLAG = "unflag", gettext_lazy("Unflagged")
        DATASET_ADD = "dataset_add", gettext_lazy("Added to a dataset")

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


class FilterRule(models.Model):
    """A content filter rule: what to find, where, and what to do with it.
    Matching lives in ``inference.content_filter``; ``clean()`` checks
    that the rule compiles."""

    class Kind(models.TextChoices):
        KEYWORDS = "keywords", gettext_lazy("Keyword list")
        REGEX = "regex", gettext_lazy("Regular expression")
        PRESET = "preset", gettext_lazy("Preset")

    class Preset(models.TextChoices):
        EMAIL = "email", gettext_lazy("Email address")
        PHONE = "phone", gettext_lazy("Phone number")
        CARD = "card", gettext_lazy("Payment card number")
        URL = "url", gettext_lazy("URL")

    class Scope(models.TextChoices):
        INPUT = "input", gettext_lazy("Input (what people send)")
        OUTPUT = "output", gettext_lazy("Output (what the model writes)")
        BOTH = "both", gettext_lazy("Both")

    class Action(models.TextChoices):
        BLOCK = "block", gettext_lazy("Block")
        MASK = "mask", gettext_lazy("Mask")
        FLAG = "flag", gettext_lazy("Flag for review")

    class Surface(models.TextChoices):
        ALL = "all", gettext_lazy("Everywhere")
        CHAT = "chat", gettext_lazy("Main chat")
        WIDGET = "widget", gettext_lazy("Widget")
        API = "api", gettext_lazy("API")

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # One keyword or phrase per line.
    keywords = models.TextField(blank=True, max_length=100_000)
    whole_word = models.BooleanField(
        default=True, help_text=gettext_lazy("Match whole words only, not inside longer words.")
    )
    pattern = models.TextField(blank=True, max_length=2000)
    preset = models.CharField(max_length=10, choices=Preset.choices, blank=True)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.BOTH)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.BLOCK)
    mask_with = models.CharField(
        max_length=100,
        blank=True,
        help_text=gettext_lazy(
            "Replacement for masked text; empty: the preset's label, or asterisks."
        ),
    )
    notice = models.CharField(
        max_length=500,
        blank=True,
        help_text=gettext_lazy(
            "What people see instead of a blocked message; empty: the site default."
        ),
    )
    surface = models.CharField(max_length=10, choices=Surface.choices, default=Surface.ALL)
    site = models.ForeignKey(
        "chat.WidgetSite",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="filter_rules",
        help_text=gettext_lazy("Only this widget site's conversations."),
    )
    priority = models.IntegerField(default=100, help_text=gettext_lazy("Lower runs first."))
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
                {"site": [gettext("A rule for one widget site applies to the widget surface.")]}
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
