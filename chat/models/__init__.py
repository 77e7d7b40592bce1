"""Users' conversations, their messages (a tree) and feedback on answers;
people's privacy choices, data exports and the privacy log (``privacy``);
their language (``language``)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy

#: Bounds of the per-conversation sampling settings.
TEMPERATURE_MAX = 2.0
MAX_TOKENS_MAX = 4096
BEAMS_MAX = 8
TOP_K_MAX = 1000


class Conversation(models.Model):
    """A user's chat. ``current_leaf`` ends the active path through the
    message tree: the model sees only that path."""

    class Source(models.TextChoices):
        CHAT = "chat", gettext_lazy("Chat")
        WIDGET = "widget", gettext_lazy("Widget")
        API = "api", gettext_lazy("API")

    class Handoff(models.TextChoices):
        NONE = "none", gettext_lazy("Bot")
        REQUESTED = "requested", gettext_lazy("Waiting for a person")
        ACTIVE = "active", gettext_lazy("With a person")
        CLOSED = "closed", gettext_lazy("Closed")

    # A signed-in user's conversation, or a widget visitor's (then ``site``
    # and ``visitor`` are set and ``user`` is empty).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    site = models.ForeignKey(
        "WidgetSite", null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    visitor = models.ForeignKey(
        "WidgetVisitor",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="conversations",
    )
    title = models.CharField(max_length=200, blank=True)
    title_is_auto = models.BooleanField(default=True)
    system_prompt = models.TextField(blank=True, max_length=8000)
    temperature = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(TEMPERATURE_MAX)]
    )
    top_p = models.FloatField(
        default=0.9, validators=[MinValueValidator(0.01), MaxValueValidator(1.0)]
    )
    max_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(1), MaxValueValidator(MAX_TOKENS_MAX)]
    )

    class Strategy(models.TextChoices):
        SAMPLING = "sampling", gettext_lazy("Sampling")
        BEAM = "beam", gettext_lazy("Beam search")

    strategy = models.CharField(max_length=10, choices=Strategy.choices, default=Strategy.SAMPLING)
    #: Beam search: how many beams the search keeps.
    beams = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(2), MaxValueValidator(BEAMS_MAX)]
    )
    #: Sampling: only the top_k most likely tokens (0: off).
    top_k = models.PositiveIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(TOP_K_MAX)]
    )
    frequency_penalty = models.FloatField(
        default=0.0, validators=[MinValueValidator(-2.0), MaxValueValidator(2.0)]
    )
    presence_penalty = models.FloatField(
        default=0.0, validators=[MinValueValidator(-2.0), MaxValueValidator(2.0)]
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CHAT)
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Marked for staff review, by a reviewer or a content filter rule.
    flagged_at = models.DateTimeField(null=True, blank=True)
    flag_reason = models.CharField(max_length=500, blank=True)
    # Human handoff (widget conversations): while a person owns it, the
    # model stays silent.
    handoff = models.CharField(max_length=10, choices=Handoff.choices, default=Handoff.NONE)
    handoff_at = models.DateTimeField(null=True, blank=True)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="handled_conversations",
    )
    # Kept at the top of the person's list while set.
    pinned_at = models.DateTimeField(null=True, blank=True)
    # The version the person picked for this conversation; None follows
    # production (and the canary's share).
    model_version = models.ForeignKey(
        "models_admin.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Answers are grounded in this base's passages and cite them (the
    # person opts in per conversation; a widget's follows its site).
    knowledge_base = models.ForeignKey(
        "models_admin.KnowledgeBase",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    #: Not listed, never used for training, deleted when closed or after
    #: ``TEMPORARY_CHAT_HOURS``.
    temporary = models.BooleanField(default=False)
    #: Set when retention cut the conversation from its person.
    anonymised_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="conversation_user_recent"),
            models.Index(fields=["source", "updated_at"], name="conversation_source_age"),
            models.Index(fields=["handoff", "-updated_at"], name="conversation_handoff"),
        ]
        permissions = [
            ("review_conversation", "Can read and curate users' conversations"),
            ("answer_visitors", "Can take widget conversations and answer visitors"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False)
                | Q(visitor__isnull=False)
                | Q(anonymised_at__isnull=False),
                name="conversation_has_an_owner",
                violation_error_message=(
                    "A conversation belongs to a user or a visitor until it is anonymised."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    """One turn. Siblings (same parent) are the versions of a turn: a
    regenerated answer or an edited question."""

    class Role(models.TextChoices):
        USER = "user", gettext_lazy("User")
        ASSISTANT = "assistant", gettext_lazy("Assistant")

    class Status(models.TextChoices):
        PENDING = "pending", gettext_lazy("Generating")
        DONE = "done", gettext_lazy("Done")
        CANCELLED = "cancelled", gettext_lazy("Stopped")
        ERROR = "error", gettext_lazy("Error")
        BLOCKED = "blocked", gettext_lazy("Blocked")
        # An "assistant" turn an API caller sent as history: text the
        # caller wrote, not an answer of any model version.
        SUPPLIED = "supplied", gettext_lazy("Supplied by the API caller")

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DONE)
    # The id the browser gave the action that made this message: a re-sent
    # frame with the same id finds it instead of making another.
    client_id = models.UUIDField(null=True, blank=True)
    generation_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    model_version = models.ForeignKey(
        "models_admin.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    # Kept beside the key so the label survives a deleted version.
    model_version_name = models.CharField(max_length=200, blank=True)
    # A staff member who wrote this answer by hand (widget handoff).
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    finish_reason = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    #: The answer's tokens with their log-probabilities and most likely
    #: alternatives: ``[text, logprob, [[text, logprob], ...], bytes hex]``.
    tokens = models.JSONField(default=list, blank=True)
    #: The passages an answer was given (``{"base", "name", "query",
    #: "found", "passages": [card, ...], "cited": [n, ...]}``); empty when
    #: no knowledge base was asked.
    knowledge = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the person last made this leaf the end of the active path by
    # switching versions (a new message is that as it is created): switching
    # back to a version above it returns here.
    selected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_once",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_conversation_time"),
            models.Index(fields=["status", "created_at"], name="message_status_time"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"


class Feedback(models.Model):
    """A user's thumbs up or down on an answer, with the version that wrote it."""

    class Rating(models.IntegerChoices):
        UP = 1, gettext_lazy("Thumbs up")
        DOWN = -1, gettext_lazy("Thumbs down")

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    # Empty once retention anonymised the conversation.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="feedback",
    )
    rating = models.SmallIntegerField(choices=Rating.choices)
    reason = models.TextField(blank=True, max_length=1000)
    model_version = models.ForeignKey(
        "models_admin.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="feedback",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="feedback_once_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"


class ApiKey(models.Model):
    """A user's key for the OpenAI-compatible API. Only a hash of the key
    is stored; ``prefix`` (its first characters) names it in lists."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=gettext_lazy("Requests a minute; empty: the site default."),
    )
    monthly_token_quota = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text=gettext_lazy(
            "Tokens in and out per calendar month; empty: the site default; 0: none."
        ),
    )
    all_versions = models.BooleanField(
        default=False, help_text=gettext_lazy("May use any model version, not only production.")
    )
    knowledge_base = models.ForeignKey(
        "models_admin.KnowledgeBase",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=gettext_lazy(
            "Answers of calls with this key are grounded in this base by default."
        ),
    )
    # When staff last set this key's limits. A new key of the same user
    # starts with the limits last set on any of their keys, revoked ones
    # included, so that minting a key does not escape them.
    limits_set_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class ApiRequest(models.Model):
    """One call of the chat completions API: who, which version, tokens,
    timings and how it ended. Kept even when conversations are not."""

    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    model_version = models.ForeignKey(
        "models_admin.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    model_name = models.CharField(max_length=200, blank=True)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    generation_id = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(default=200)
    finish_reason = models.CharField(max_length=20, blank=True)
    error = models.CharField(max_length=500, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    ttft_s = models.FloatField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    # The caller's own end-user id (the API's ``user`` field).
    end_user = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["key", "created_at"], name="api_request_key_time"),
            models.Index(fields=["created_at"], name="api_request_time"),
        ]

    def __str__(self) -> str:
        return (
            f"API request {self.pk} ({self.model_name}, {self.finish_reason or self.status_code})"
        )


class WidgetSite(models.Model):
    """A website that embeds the chat widget: who may embed it, how it
    looks and greets, what the model is told, and when people answer."""

    class Position(models.TextChoices):
        RIGHT = "right", gettext_lazy("Bottom right")
        LEFT = "left", gettext_lazy("Bottom left")

    name = models.CharField(max_length=200)
    public_key = models.CharField(max_length=40, unique=True)
    # One origin per line: https://shop.example or https://*.example.com
    allowed_origins = models.TextField(max_length=10_000)
    color = models.CharField(max_length=7, default="#2f6feb")
    position = models.CharField(max_length=5, choices=Position.choices, default=Position.RIGHT)
    title = models.CharField(max_length=100, default="Chat with us")
    avatar_url = models.URLField(blank=True)
    greeting = models.TextField(blank=True, max_length=2000)
    # One suggested question per line.
    suggestions = models.TextField(blank=True, max_length=2000)
    system_prompt = models.TextField(blank=True, max_length=8000)
    model_version = models.ForeignKey(
        "models_admin.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=gettext_lazy("Empty: the production version."),
    )
    knowledge_base = models.ForeignKey(
        "models_admin.KnowledgeBase",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=gettext_lazy("Answers are grounded in this base's articles and cite them."),
    )
    # {"timezone": "Europe/Paris", "days": {"mon": [["09:00", "18:00"]], ...}};
    # empty: always open.
    business_hours = models.JSONField(default=dict, blank=True)
    offline_message = models.TextField(
        blank=True,
        max_length=2000,
        default="We are away right now. Leave your email and we will write back.",
    )
    messages_per_minute = models.PositiveIntegerField(default=10)
    handoff_enabled = models.BooleanField(default=True)
    #: Whether visitors' conversations may train models; empty follows
    #: ``TRAINING_OPT_IN_DEFAULT``.
    train_on_conversations = models.BooleanField(null=True, blank=True)
    #: The widget's language, a code of ``LANGUAGES`` (not choices: adding
    #: a language needs no migration); empty follows the visitor's browser.
    language = models.CharField(max_length=15, blank=True)
    identity_secret = models.CharField(max_length=64)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def origin_list(self) -> list[str]:
        return [line.strip() for line in self.allowed_origins.splitlines() if line.strip()]

    def suggestion_list(self) -> list[str]:
        return [line.strip() for line in self.suggestions.splitlines() if line.strip()]


class WidgetVisitor(models.Model):
    """Someone chatting in a site's widget. Anonymous until the host page
    identifies them with a signature from its server."""

    site = models.ForeignKey(WidgetSite, on_delete=models.CASCADE, related_name="visitors")
    token = models.UUIDField(unique=True)
    external_id = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "external_id"],
                condition=~Q(external_id=""),
                name="widget_visitor_identity_once",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id or f"visitor {self.pk}"


from chat.models.language import LanguageChoice  # noqa: E402
from chat.models.privacy import DataExport, PrivacyChoice, PrivacyEvent  # noqa: E402

__all__ = [
    "ApiKey",
    "ApiRequest",
    "Conversation",
    "DataExport",
    "Feedback",
    "LanguageChoice",
    "Message",
    "PrivacyChoice",
    "PrivacyEvent",
    "WidgetSite",
    "WidgetVisitor",
]
