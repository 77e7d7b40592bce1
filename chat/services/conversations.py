"""Creating, changing and deleting conversations."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext

from chat.models import Conversation, Message
from chat.selectors import chat_versions_for_user, thread_load, thread_selected_leaf
from chat.services.events import conversation_group, notify_on_commit, user_group
from inference.client import generation_cancel
from models_admin.filters import content_filter_input, filter_hits_record
from models_admin.models import KnowledgeBase
from models_admin.selectors.knowledge import knowledge_bases_for_chat

#: Words an automatic title keeps from the first question.
TITLE_WORDS = 8
TITLE_CHARS = 60


def conversations_changed(*, user_id: int | None) -> None:
    """Tell every open page of the user to refresh its conversation list
    (widget visitors have no user and no list)."""
    if user_id is not None:
        notify_on_commit(user_group(user_id), {"type": "conversations.changed"})


def _system_prompt_filter(*, text: str, user_id: int | None, surface: str) -> str:
    """Run the input rules on a system prompt, which the model reads before
    every turn: a block refuses it (ValidationError naming the field), a
    mask changes what is stored."""
    if not text.strip():
        return text
    verdict = content_filter_input(text=text, surface=surface)
    if verdict.hits:
        filter_hits_record(
            hits=[hit.as_dict() for hit in verdict.hits],
            scope="input",
            surface=surface,
            user_id=user_id,
        )
    if verdict.blocked:
        raise ValidationError({"system_prompt": [verdict.notice]})
    return verdict.text


def conversation_create(
    *,
    user: AbstractBaseUser,
    title: str = "",
    system_prompt: str = "",
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    pinned: bool = False,
    model_version: int | None = None,
    knowledge_base: int | None = None,
    source: str = Conversation.Source.CHAT,
    temporary: bool = False,
) -> Conversation:
    """A new conversation of the user's. A ``temporary`` one is not listed,
    never used for training, and deleted when its page closes or after
    ``TEMPORARY_CHAT_HOURS``."""
    conversation = Conversation(
        user_id=user.pk,
        title=title.strip(),
        title_is_auto=not title.strip(),
        source=source,
        temporary=temporary,
    )
    if pinned:
        conversation.pinned_at = timezone.now()
    if model_version is not None:
        conversation.model_version = _version_usable(user=user, version_id=model_version)
    if knowledge_base is not None:
        conversation.knowledge_base = _knowledge_base_usable(base_id=knowledge_base)
    conversation.system_prompt = _system_prompt_filter(
        text=system_prompt, user_id=int(user.pk), surface=source
    )
    if temperature is not None:
        conversation.temperature = temperature
    if top_p is not None:
        conversation.top_p = top_p
    if max_tokens is not None:
        conversation.max_tokens = max_tokens
    conversation.full_clean()
    with transaction.atomic():
        conversations_room_check(user_id=int(user.pk))
        conversation.save()
        conversations_changed(user_id=int(user.pk))
    return conversation


def conversations_room_left(*, user_id: int) -> bool:
    """Whether the user may hold one more conversation
    (``CHAT_MAX_CONVERSATIONS_PER_USER``, every source counted)."""
    held = Conversation.objects.filter(user_id=user_id).count()
    return held < settings.CHAT_MAX_CONVERSATIONS_PER_USER


def conversations_room_check(*, user_id: int) -> None:
    """Raise ValidationError when the user holds as many conversations as
    ``CHAT_MAX_CONVERSATIONS_PER_USER`` allows."""
    if not conversations_room_left(user_id=user_id):
        limit = settings.CHAT_MAX_CONVERSATIONS_PER_USER
        raise ValidationError(
            gettext("You can keep %(limit)s conversations; delete some to start a new one.")
            % {"limit": number_format(limit, force_grouping=True)}
        )


_UNSET: Any = object()


def _version_usable(*, user: Any, version_id: int) -> Any:
    """The version with this id if the person may pick it; else raise
    ValidationError on ``model_version``."""
    for version in chat_versions_for_user(user=user):
        if version.pk == version_id:
            return version
    raise ValidationError({"model_version": [gettext("Pick one of the models offered to you.")]})


def _knowledge_base_usable(*, base_id: int) -> KnowledgeBase:
    base = knowledge_bases_for_chat().filter(pk=base_id).first()
    if base is None:
        raise ValidationError(
            {"knowledge_base": [gettext("Pick one of the knowledge bases offered.")]}
        )
    return base


def conversation_update(
    *,
    conversation: Conversation,
    title: str = _UNSET,
    system_prompt: str = _UNSET,
    temperature: float = _UNSET,
    top_p: float = _UNSET,
    max_tokens: int = _UNSET,
    pinned: bool = _UNSET,
    model_version: int | None = _UNSET,
    strategy: str = _UNSET,
    beams: int = _UNSET,
    top_k: int = _UNSET,
    frequency_penalty: float = _UNSET,
    presence_penalty: float = _UNSET,
    knowledge_base: int | None = _UNSET,
) -> Conversation:
    """Change the given fields; raise ValidationError naming a field out of
    bounds, a model version or knowledge base the person may not use, or a
    system prompt a content rule blocks."""
    fields: list[str] = []
    if knowledge_base is not _UNSET:
        conversation.knowledge_base = (
            None if knowledge_base is None else _knowledge_base_usable(base_id=knowledge_base)
        )
        fields.append("knowledge_base")
    if pinned is not _UNSET and bool(pinned) != (conversation.pinned_at is not None):
        conversation.pinned_at = timezone.now() if pinned else None
        fields.append("pinned_at")
    if model_version is not _UNSET:
        conversation.model_version = (
            None
            if model_version is None
            else _version_usable(user=conversation.user, version_id=model_version)
        )
        fields.append("model_version")
    if system_prompt is not _UNSET and system_prompt != conversation.system_prompt:
        system_prompt = _system_prompt_filter(
            text=str(system_prompt),
            user_id=conversation.user_id,
            surface=conversation.source,
        )
    if title is not _UNSET:
        chosen = str(title).strip()[:200]
        if chosen:
            conversation.title, conversation.title_is_auto = chosen, False
        elif not conversation.title_is_auto:
            # A chosen title cleared: back to the automatic one.
            conversation.title = ""
            first = (
                conversation.messages.filter(role=Message.Role.USER)
                .order_by("created_at", "pk")
                .first()
            )
            if first is not None:
                conversation_title_auto(conversation=conversation, question=first.content)
            conversation.title_is_auto = True
        # An empty title on an automatic one keeps it.
        fields += ["title", "title_is_auto"]
    for name, value in (
        ("system_prompt", system_prompt),
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_tokens", max_tokens),
        ("strategy", strategy),
        ("beams", beams),
        ("top_k", top_k),
        ("frequency_penalty", frequency_penalty),
        ("presence_penalty", presence_penalty),
    ):
        if value is not _UNSET:
            setattr(conversation, name, value)
            fields.append(name)
    conversation.full_clean()
    if (
        conversation.strategy == Conversation.Strategy.BEAM
        and conversation.beams > settings.INFERENCE_SLOTS
    ):
        # Each beam takes one of the engine's slots.
        raise ValidationError(
            {
                "beams": [
                    gettext("This server runs at most %(count)s beams.")
                    % {"count": settings.INFERENCE_SLOTS}
                ]
            }
        )
    # Pinning is not activity: it does not move the conversation in time.
    touched = [] if fields == ["pinned_at"] else ["updated_at"]
    with transaction.atomic():
        conversation.save(update_fields=[*fields, *touched])
        conversations_changed(user_id=conversation.user_id)
        notify_on_commit(
            conversation_group(conversation.pk),
            {"type": "conversation.changed", "conversation": conversation.pk},
        )
    return conversation


def conversation_title_auto(*, conversation: Conversation, question: str) -> None:
    """Title an untitled conversation from its first question. Leave a
    title the user chose alone. The caller saves."""
    if conversation.title and not conversation.title_is_auto:
        return
    if conversation.title:
        return
    words = " ".join(question.split()).split(" ")
    title = " ".join(words[:TITLE_WORDS])
    if len(title) > TITLE_CHARS:
        title = title[:TITLE_CHARS].rsplit(" ", 1)[0] or title[:TITLE_CHARS]
    if len(words) > TITLE_WORDS or len(title) < len(" ".join(words)):
        title += "…"
    conversation.title = title
    conversation.title_is_auto = True


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation; stop its running generations first."""
    running = list(
        conversation.messages.filter(status=Message.Status.PENDING)
        .exclude(generation_id=None)
        .values_list("generation_id", flat=True)
    )
    user_id = conversation.user_id
    with transaction.atomic():
        conversation.delete()
        conversations_changed(user_id=user_id)
    for generation_id in running:
        if generation_id:
            generation_cancel(generation_id)


def conversation_branch_select(*, conversation: Conversation, message: Message) -> Conversation:
    """Make the version ``message`` (and the continuation last selected
    under it) the active path."""
    if message.conversation_id != conversation.pk:
        raise ValueError("message is not in this conversation")
    thread = thread_load(conversation=conversation)
    leaf = thread_selected_leaf(thread=thread, message_id=message.pk)
    conversation.current_leaf = leaf
    with transaction.atomic():
        Message.objects.filter(pk=leaf.pk).update(selected_at=timezone.now())
        conversation.save(update_fields=["current_leaf", "updated_at"])
        notify_on_commit(
            conversation_group(conversation.pk),
            {"type": "conversation.changed", "conversation": conversation.pk},
        )
    return conversation
