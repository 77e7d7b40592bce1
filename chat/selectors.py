"""Reads of the chat app: conversations, messages, sessions, and API keys
with their usage. Every access to a user's conversation, message or key
by id goes through an ``*_get_for_user`` selector: a missing row and
another user's row raise the same ``Http404``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.paginator import Page, Paginator
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext, gettext_noop

from chat.models import ApiKey, ApiRequest, Conversation, Feedback, Message
from models_admin.models import ModelVersion

CONVERSATIONS_PER_PAGE = 30


def _user_id(user: AbstractBaseUser | AnonymousUser, *, missing: str | None = None) -> int:
    if not user.is_authenticated or user.pk is None:
        raise Http404(missing or gettext("No such conversation."))
    return int(user.pk)


def conversation_get_for_user(
    *, user: AbstractBaseUser | AnonymousUser, conversation_id: Any
) -> Conversation:
    """Return the user's conversation or raise Http404."""
    try:
        return Conversation.objects.get(pk=int(conversation_id), user_id=_user_id(user))
    except (Conversation.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such conversation.")) from None


def message_get_for_user(*, user: AbstractBaseUser | AnonymousUser, message_id: Any) -> Message:
    """Return a message of one of the user's conversations or raise Http404."""
    try:
        return Message.objects.select_related("conversation").get(
            pk=int(message_id), conversation__user_id=_user_id(user)
        )
    except (Message.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such message.")) from None


def conversation_list_for_user(
    *,
    user: AbstractBaseUser | AnonymousUser,
    query: str = "",
    page: Any = 1,
    per_page: int = CONVERSATIONS_PER_PAGE,
) -> Page[Conversation]:
    """Pinned first (the latest pinned on top), then newest first;
    ``query`` matches titles and message text. Temporary chats are not
    listed."""
    rows = Conversation.objects.filter(user_id=_user_id(user), temporary=False)
    query = query.strip()
    if query:
        matching = Message.objects.filter(content__icontains=query).values("conversation_id")
        rows = rows.filter(Q(title__icontains=query) | Q(pk__in=matching))
    ordered = rows.order_by(F("pinned_at").desc(nulls_last=True), "-updated_at", "-id")
    return Paginator(ordered, per_page).get_page(page)


def chat_versions_for_user(*, user: AbstractBaseUser | AnonymousUser) -> list[ModelVersion]:
    """The model versions a person may pick for a conversation: production
    for everyone, and the candidates too for staff (to try them before
    promoting). Production first, then the newest candidates."""
    if not user.is_authenticated:
        return []
    states = [ModelVersion.State.PRODUCTION]
    if getattr(user, "is_staff", False):
        states.append(ModelVersion.State.CANDIDATE)
    rows = ModelVersion.objects.filter(state__in=states).order_by("-created_at", "-id")
    return sorted(rows, key=lambda v: v.state != ModelVersion.State.PRODUCTION)


def chat_version_serialize(version: ModelVersion) -> dict[str, Any]:
    return {
        "id": version.pk,
        "name": version.name,
        "state": version.state,
        "state_label": version.get_state_display(),
        "format": version.format,
        "kind": version.kind,
    }


@dataclass(frozen=True)
class Thread:
    """A conversation's tree, loaded once, with its active path."""

    conversation: Conversation
    messages: dict[int, Message]
    children: dict[int | None, list[int]]
    path: list[Message]


def thread_load(*, conversation: Conversation) -> Thread:
    """Load every message of the conversation and walk the active path from
    the root to ``current_leaf``."""
    messages = {m.pk: m for m in Message.objects.filter(conversation=conversation)}
    children: dict[int | None, list[int]] = {}
    for message in sorted(messages.values(), key=lambda m: (m.created_at, m.pk)):
        children.setdefault(message.parent_id, []).append(message.pk)
    path: list[Message] = []
    node = messages.get(conversation.current_leaf_id or -1)
    while node is not None:
        path.append(node)
        node = messages.get(node.parent_id or -1)
    path.reverse()
    return Thread(conversation=conversation, messages=messages, children=children, path=path)


def thread_selected_leaf(*, thread: Thread, message_id: int) -> Message:
    """The leaf below a message that was last the end of the active path:
    switching to a version shows the continuation that was selected under
    it (the newest one when none was picked since)."""
    best = thread.messages[message_id]
    best_key = (best.selected_at or best.created_at, best.pk)
    found = False
    stack = [message_id]
    while stack:
        node_id = stack.pop()
        children = thread.children.get(node_id)
        if children:
            stack.extend(children)
            continue
        leaf = thread.messages[node_id]
        key = (leaf.selected_at or leaf.created_at, leaf.pk)
        if not found or key > best_key:
            best, best_key, found = leaf, key, True
    return best


def prompt_messages(*, thread: Thread, upto: Message) -> list[dict[str, str]]:
    """The chat messages the model sees for a new answer under ``upto``:
    the system prompt, then the path to ``upto``. Blocked messages and
    answers that produced no text (errors, stopped before a word) are left
    out."""
    chain: list[Message] = []
    node: Message | None = upto
    while node is not None:
        chain.append(node)
        node = thread.messages.get(node.parent_id or -1)
    chain.reverse()
    prompt: list[dict[str, str]] = []
    system = thread.conversation.system_prompt.strip()
    if system:
        prompt.append({"role": "system", "content": system})
    for message in chain:
        if message.status == Message.Status.BLOCKED:
            continue  # a blocked question or answer never reaches the model
        if message.role == Message.Role.ASSISTANT and (
            message.status in (Message.Status.PENDING, Message.Status.ERROR)
            or not message.content.strip()
        ):
            continue
        prompt.append({"role": message.role, "content": message.content})
    return prompt


#: Texts the server stores as it writes them (the default notice of a
#: blocking filter rule, the worker's note on a request a Redis restart
#: lost) that a page shows in its reader's language. A notice the site
#: wrote itself is shown as written.
STORED_TEXTS = frozenset(
    [
        gettext_noop("This message was blocked by a content rule of this site."),
        gettext_noop("The message queue restarted and lost this request. Send it again."),
    ]
)


def stored_text_shown(text: str) -> str:
    """Return a stored text in the active language when it is one of
    ``STORED_TEXTS``, else as it is."""
    return gettext(text) if text in STORED_TEXTS else text


def message_serialize(
    message: Message, *, siblings: list[int] | None = None, rating: int | None = None
) -> dict[str, Any]:
    siblings = siblings or [message.pk]
    return {
        "id": message.pk,
        "conversation": message.conversation_id,
        "parent": message.parent_id,
        "role": message.role,
        "content": stored_text_shown(message.content)
        if message.status == Message.Status.BLOCKED
        else message.content,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "error": stored_text_shown(message.error),
        "model_version": message.model_version_name,
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
        },
        "timings": message.timings,
        "created_at": message.created_at.isoformat(),
        "siblings": siblings,
        "sibling_index": siblings.index(message.pk) if message.pk in siblings else 0,
        "rating": rating,
        "author": _author_name(message),
        # Its tokens' probabilities can be shown (``message_tokens``).
        "has_tokens": bool(message.tokens),
        # The passages it was given, as source cards, and those it cites.
        "knowledge": message.knowledge or None,
    }


def message_tokens(message: Message) -> list[dict[str, Any]]:
    """An answer's tokens for its token view: each token's text and
    probability with the alternatives the model weighed there."""
    return [
        {
            "text": text,
            "logprob": logprob,
            "top": [{"text": alt, "logprob": alt_logprob} for alt, alt_logprob in top],
        }
        for text, logprob, top, _raw in message.tokens
    ]


def _author_name(message: Message) -> str | None:
    """The staff member who wrote an answer by hand, as visitors see them."""
    if message.author_id is None:
        return None
    author = message.author
    return (author.first_name or author.get_username()) if author is not None else None


def conversation_serialize(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "title": conversation.title or gettext("New chat"),
        # Made from the first question (settings leave it out of the field).
        "title_is_auto": conversation.title_is_auto,
        "pinned": conversation.pinned_at is not None,
        # Not listed, never trained on, deleted when its page closes.
        "temporary": conversation.temporary,
        # The version picked for it; None answers with production.
        "model_version": conversation.model_version_id,
        # Answers are grounded in this knowledge base (None: the model alone).
        "knowledge_base": conversation.knowledge_base_id,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "top_p": conversation.top_p,
        "max_tokens": conversation.max_tokens,
        "strategy": conversation.strategy,
        "beams": conversation.beams,
        "top_k": conversation.top_k,
        "frequency_penalty": conversation.frequency_penalty,
        "presence_penalty": conversation.presence_penalty,
        "updated_at": conversation.updated_at.isoformat(),
    }


def thread_serialize(*, thread: Thread, user_id: int) -> dict[str, Any]:
    """The conversation and its active path, each message with the ids of
    its versions so the page can switch between them."""
    ratings = dict(
        Feedback.objects.filter(
            user_id=user_id, message_id__in=[m.pk for m in thread.path]
        ).values_list("message_id", "rating")
    )
    return {
        "conversation": conversation_serialize(thread.conversation),
        "messages": [
            message_serialize(
                m, siblings=thread.children.get(m.parent_id, [m.pk]), rating=ratings.get(m.pk)
            )
            for m in thread.path
        ],
    }


def conversation_export(*, thread: Thread) -> dict[str, Any]:
    """The active path in the training format: ``{"messages": [...]}``."""
    messages: list[dict[str, str]] = []
    if thread.conversation.system_prompt.strip():
        messages.append({"role": "system", "content": thread.conversation.system_prompt})
    messages += [
        {"role": m.role, "content": m.content}
        for m in thread.path
        if m.role == Message.Role.USER
        or m.status in (Message.Status.DONE, Message.Status.CANCELLED)
    ]
    return {"messages": messages}


def conversation_export_markdown(*, thread: Thread) -> str:
    conversation = thread.conversation
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    if conversation.system_prompt.strip():
        lines += ["**System**", "", conversation.system_prompt, ""]
    for message in thread.path:
        if message.role == Message.Role.USER:
            lines += ["**You**", "", message.content, ""]
        else:
            label = "**Assistant**"
            if message.model_version_name:
                label += f" ({message.model_version_name})"
            if message.status != Message.Status.DONE:
                label += f" [{message.get_status_display().lower()}]"
            lines += [label, "", message.content or "_(no text)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _answers_generated(*, user_id: int) -> QuerySet[Message]:
    # API calls stored as conversations are counted once, by their record.
    return Message.objects.filter(
        conversation__user_id=user_id, role=Message.Role.ASSISTANT
    ).exclude(conversation__source=Conversation.Source.API)


def generations_running_count(*, user_id: int, since: Any) -> int:
    """The user's answers being generated, on the chat page and through
    the API, started after ``since``."""
    chat = _answers_generated(user_id=user_id).filter(
        status=Message.Status.PENDING, created_at__gte=since
    )
    api = ApiRequest.objects.filter(user_id=user_id, finish_reason="", created_at__gte=since)
    return chat.count() + api.count()


def generations_started_times(*, user_id: int, since: Any) -> list[Any]:
    """When each of the user's answers started after ``since``, on the chat
    page and through the API."""
    chat = _answers_generated(user_id=user_id).filter(created_at__gte=since)
    api = ApiRequest.objects.filter(user_id=user_id, created_at__gte=since)
    return list(chat.values_list("created_at", flat=True)) + list(
        api.values_list("created_at", flat=True)
    )


def session_user_valid(*, session_key: str | None, user_id: int) -> bool:
    """Whether the session still logs in user_id: it exists, names that
    active user, and carries the hash of the user's current password."""
    if not session_key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    data = engine.SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_id):
        return False
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    stored = data.get(HASH_SESSION_KEY) or ""
    return constant_time_compare(stored, user.get_session_auth_hash())


# --- API keys -------------------------------------------------------------------
# A call counts as an error when its status is 400 or more or it ended with
# finish_reason "error". Months are those of settings.TIME_ZONE, as the
# monthly quota counts them. A key's limits "in effect" are its own, or the
# site's defaults where it has none.


def api_month_start(*, now: datetime | None = None) -> datetime:
    """Midnight of the first day of the current calendar month."""
    local = timezone.localtime(now)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def api_key_limits(*, key: ApiKey) -> dict[str, Any]:
    """The limits a key runs under: requests a minute and tokens a month
    (None: no quota), and whether each is the site default."""
    # The same reading as chat.services.api_keys.api_limits_check.
    own_rate = key.rate_limit_per_minute
    own_quota = key.monthly_token_quota
    quota = own_quota if own_quota is not None else settings.API_MONTHLY_TOKEN_QUOTA
    return {
        "rate_limit_per_minute": own_rate or settings.API_RATE_LIMIT_PER_MINUTE,
        "rate_limit_default": not own_rate,
        "monthly_token_quota": quota or None,
        "quota_default": own_quota is None,
        "all_versions": key.all_versions,
    }


def _api_error_q(prefix: str = "") -> Q:
    return Q(**{f"{prefix}status_code__gte": 400}) | Q(**{f"{prefix}finish_reason": "error"})


def api_usage_aggregates(*, prefix: str = "", since: datetime | None = None) -> dict[str, Any]:
    """Aggregates of calls: requests, tokens in and out, errors; over the
    rows under ``prefix`` (e.g. "requests__"), since ``since`` if given."""
    window = Q(**{f"{prefix}created_at__gte": since}) if since is not None else Q()
    rows = f"{prefix}id" if prefix else "id"
    return {
        "requests": Count(rows, filter=window),
        "tokens_in": Sum(f"{prefix}prompt_tokens", filter=window, default=0),
        "tokens_out": Sum(f"{prefix}completion_tokens", filter=window, default=0),
        "errors": Count(rows, filter=window & _api_error_q(prefix)),
    }


def api_usage_row(figures: dict[str, Any]) -> dict[str, int]:
    """What ``api_usage_aggregates`` counted, as integers, with ``tokens``
    (in and out)."""
    row = {name: int(value or 0) for name, value in figures.items()}
    row["tokens"] = row["tokens_in"] + row["tokens_out"]
    return row


def api_keys_with_usage(keys: QuerySet[ApiKey], *, since: datetime) -> QuerySet[ApiKey]:
    """Annotate ``keys`` with their calls since ``since`` (``*_month``)
    and in all (``*_total``), and with the owner's tokens since then."""
    annotations: dict[str, Any] = {}
    for suffix, start in (("month", since), ("total", None)):
        for name, aggregate in api_usage_aggregates(prefix="requests__", since=start).items():
            annotations[f"{name}_{suffix}"] = aggregate
    # What the quota counts: the owner's tokens through all their keys.
    owner_month = (
        ApiRequest.objects.filter(user_id=OuterRef("user_id"), created_at__gte=since)
        .values("user_id")
        .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))
        .values("tokens")
    )
    return keys.annotate(**annotations).annotate(
        tokens_month=F("tokens_in_month") + F("tokens_out_month"),
        tokens_total=F("tokens_in_total") + F("tokens_out_total"),
        owner_tokens_month=Subquery(owner_month),
    )


def _usage_of(key: ApiKey, suffix: str) -> dict[str, int]:
    names = ("requests", "tokens_in", "tokens_out", "errors", "tokens")
    return {name: int(getattr(key, f"{name}_{suffix}") or 0) for name in names}


def api_key_row(key: ApiKey) -> dict[str, Any]:
    """A key annotated by ``api_keys_with_usage`` as ``{"key", "limits",
    "month", "total", "quota_used_pct"}``; ``month`` and ``total`` hold
    requests, tokens_in, tokens_out, tokens (in and out) and errors."""
    limits = api_key_limits(key=key)
    quota = limits["monthly_token_quota"]
    owner_tokens = int(getattr(key, "owner_tokens_month", None) or 0)
    return {
        "key": key,
        "limits": limits,
        "month": _usage_of(key, "month"),
        "total": _usage_of(key, "total"),
        # Of the quota, which counts the owner's tokens through all keys.
        "quota_used_pct": 100 * owner_tokens / quota if quota else None,
    }


def api_key_get_for_user(*, user: AbstractBaseUser | AnonymousUser, key_id: Any) -> ApiKey:
    """Return the user's key or raise Http404 (for another user's key too)."""
    user_id = _user_id(user, missing=gettext("No such key."))
    try:
        return ApiKey.objects.get(pk=int(key_id), user_id=user_id)
    except (ApiKey.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such key.")) from None


def api_keys_for_user(
    *, user: AbstractBaseUser | AnonymousUser, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The user's keys, newest first, each as ``api_key_row`` gives it."""
    user_id = _user_id(user, missing=gettext("No such key."))
    keys = ApiKey.objects.filter(user_id=user_id).order_by("-created_at", "-id")
    return [api_key_row(key) for key in api_keys_with_usage(keys, since=api_month_start(now=now))]


def api_key_get(*, pk: Any) -> ApiKey:
    """Any user's key with its user, or Http404 (for staff pages)."""
    try:
        return ApiKey.objects.select_related("user").get(pk=int(pk))
    except (ApiKey.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such key.")) from None
