"""Sending messages, regenerating answers, stopping and storing
generations, and feedback."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext

from chat.models import Conversation, Message
from chat.selectors import (
    message_serialize,
    prompt_messages,
    thread_load,
)
from chat.services.conversations import conversation_title_auto, conversations_changed
from chat.services.events import conversation_group, notify_on_commit
from chat.services.feedback import feedback_set  # noqa: F401 (callers' names)
from chat.services.generations import (  # noqa: F401 (callers' names)
    LOST_REQUEST_ERROR,
    filter_hits_store,
    generation_stop,
    generations_end_lost,
    message_generation_finish,
    tokens_text,
)
from chat.services.knowledge import (
    Grounding,
    grounding_for,
    knowledge_base_of,
    messages_grounded,
)
from chat.services.limits import LimitError, user_generation_check
from inference.client import (
    generation_submit,
)
from models_admin.filters import content_filter_input, filter_hits_record
from models_admin.pii import at_rest
from models_admin.selectors import model_version_get_production, model_version_route

logger = logging.getLogger(__name__)


class ChatError(Exception):
    """A refused chat action. ``code`` is stable for clients; the message
    says what to do."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "error": self.message}
        if self.retry_after is not None:
            data["retry_after"] = round(self.retry_after, 1)
        return data


@dataclass(frozen=True)
class Sent:
    """What a send or regenerate stored. ``created`` is False when the
    ``client_id`` had been seen: nothing new was stored or queued."""

    question: Message | None
    answer: Message | None  # None: a person owns the conversation
    created: bool


_PARENT_UNSET: Any = object()


def _client_uuid(client_id: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(client_id))
    except (TypeError, ValueError, AttributeError):
        raise ChatError("invalid", gettext("client_id must be a UUID.")) from None


def _limits_check(*, user_id: int, lock: bool = True) -> None:
    try:
        user_generation_check(user_id=user_id, lock=lock)
    except LimitError as limit:
        raise ChatError(limit.code, limit.message, retry_after=limit.retry_after) from None


def _content_check(content: Any) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ChatError("empty", gettext("Write a message first."))
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: valid JSON, but no text a database can store.
        raise ChatError("invalid", gettext("The message is not valid Unicode text.")) from None
    if "\x00" in content:
        raise ChatError("invalid", gettext("Messages may not contain NUL characters."))
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise ChatError(
            "too_long",
            gettext("Messages are limited to %(limit)s characters (%(sent)s sent).")
            % {
                "limit": number_format(limit, force_grouping=True),
                "sent": number_format(len(content), force_grouping=True),
            },
        )
    return content.strip()


def _system_prompt_now(*, conversation: Conversation) -> str | None:
    """The member's system prompt as today's input rules let the model read
    it (rules may have changed since it was saved): masked where a rule
    masks; a block refuses the turn. None when there is none to check (a
    widget's comes from its site's staff)."""
    text = conversation.system_prompt.strip()
    if not text or conversation.source == Conversation.Source.WIDGET:
        return None
    verdict = content_filter_input(text=text, surface=conversation.source)
    if verdict.blocked:
        filter_hits_record(
            hits=[hit.as_dict() for hit in verdict.hits],
            scope="input",
            surface=conversation.source,
            conversation_id=conversation.pk,
            user_id=conversation.user_id,
        )
        raise ChatError(
            "blocked",
            gettext(
                "This conversation's system prompt is blocked by a content rule; "
                "change it to go on."
            ),
        )
    return verdict.text


def _system_prompt_use(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt is not None and messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": system_prompt}, *messages[1:]]
    return messages


def _params(conversation: Conversation) -> dict[str, Any]:
    params: dict[str, Any] = {
        "temperature": conversation.temperature,
        "top_p": conversation.top_p,
        "max_new_tokens": conversation.max_tokens,
        "frequency_penalty": conversation.frequency_penalty,
        "presence_penalty": conversation.presence_penalty,
    }
    if conversation.strategy == Conversation.Strategy.BEAM:
        params["beams"] = conversation.beams
        params["temperature"] = 0.0
        return params
    params["top_k"] = conversation.top_k
    if settings.CHAT_TOKEN_ALTERNATIVES and conversation.source == Conversation.Source.CHAT:
        # Kept with the answer for its token view.
        params["logprobs"] = settings.CHAT_TOKEN_ALTERNATIVES
    return params


def _existing(conversation: Conversation, client_uuid: uuid.UUID) -> Sent | None:
    earlier = Message.objects.filter(conversation=conversation, client_id=client_uuid).first()
    if earlier is None:
        return None
    if earlier.role == Message.Role.ASSISTANT:
        return Sent(question=None, answer=earlier, created=False)
    answer = earlier.children.order_by("created_at", "id").first()
    if answer is None and earlier.conversation.source != Conversation.Source.WIDGET:
        raise ChatError("invalid", gettext("This client_id was used for another action."))
    return Sent(question=earlier, answer=answer, created=False)


def _race_lost(conversation: Conversation, client_uuid: uuid.UUID, error: IntegrityError) -> Sent:
    """The result of the action with the same ``client_id`` that raced in
    from another socket and committed first; raise ``error`` when there is
    none (the conflict was something else)."""
    earlier = _existing(conversation, client_uuid)
    if earlier is None:
        raise error
    return earlier


def _answer_queue(
    *,
    conversation: Conversation,
    answer: Message,
    messages: list[dict],
    params_extra: dict[str, Any] | None = None,
    grounding: Grounding | None = None,
) -> None:
    """After commit, queue the generation; if the queue is unreachable, end
    the answer with an error instead of leaving it pending. With a
    ``grounding`` that found passages, the prompt holds them and the
    answer may cite only their numbers."""
    generation_id = str(answer.generation_id)
    extra: dict[str, Any] = {
        "conversation": conversation.pk,
        "message": answer.pk,
        "surface": conversation.source,
        "site": conversation.site_id,
    }
    if grounding is not None and grounding.found:
        messages = messages_grounded(messages, grounding)
        extra["citations"] = len(grounding.passages)
    params = {**_params(conversation), **(params_extra or {})}

    def submit() -> None:
        try:
            generation_submit(
                messages=messages,
                params=params,
                generation_id=generation_id,
                model_version_id=answer.model_version_id,
                extra=extra,
            )
        except Exception as exc:
            logger.exception("Queueing generation %s failed", generation_id)
            message_generation_finish(
                generation_id=generation_id,
                final={
                    "finish_reason": "error",
                    "error": gettext("The model service is unreachable. Try again in a moment."),
                },
                text="",
            )
            del exc

    transaction.on_commit(submit)


def grounding_get(*, conversation: Conversation, question: str) -> Grounding | None:
    """The passages of the conversation's knowledge base for ``question``,
    or None when it has no base. A search that fails leaves the answer
    ungrounded rather than refusing it."""
    base = knowledge_base_of(conversation)
    if base is None:
        return None
    try:
        return grounding_for(base=base, question=question, version=model_version_get_production())
    except Exception:
        logger.exception("Searching knowledge base %s failed", base.pk)
        return None


def _answer_nothing_found(
    *, conversation: Conversation, parent: Message, grounding: Grounding
) -> Message:
    """The answer to a question the knowledge base has nothing on: the
    base's reply; nothing is generated."""
    answer = Message(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.DONE,
        content=grounding.base.nothing_found,
        finish_reason="no_passages",
        finished_at=timezone.now(),
        knowledge=grounding.record(),
    )
    answer.full_clean()
    answer.save()
    return answer


def _announce(conversation: Conversation, sent: Sent) -> None:
    payload: dict[str, Any] = {
        "type": "message.created",
        "conversation": conversation.pk,
        "answer": message_serialize(sent.answer) if sent.answer else None,
        "question": message_serialize(sent.question) if sent.question else None,
    }
    notify_on_commit(conversation_group(conversation.pk), payload)
    conversations_changed(user_id=conversation.user_id)


def message_send(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    content: Any,
    client_id: Any,
    parent_id: Any = _PARENT_UNSET,
) -> Sent:
    """Store the question and a pending answer and queue the generation.

    The question goes under the conversation's current leaf, or under
    ``parent_id`` (``None`` for the root) when editing an earlier question,
    which makes a new branch. A ``client_id`` seen before returns what it
    stored then and queues nothing.
    """
    user_id = int(user.pk)
    return question_send(
        conversation=conversation,
        content=content,
        client_id=client_id,
        parent_id=parent_id,
        limits_early=lambda: _limits_check(user_id=user_id, lock=False),
        limits=lambda: _limits_check(user_id=user_id),
    )


def question_send(
    *,
    conversation: Conversation,
    content: Any,
    client_id: Any,
    limits_early: Callable[[], None] | None = None,
    limits: Callable[[], None] | None = None,
    parent_id: Any = _PARENT_UNSET,
    answer: bool = True,
) -> Sent:
    """``message_send`` for any owner. ``limits_early`` raises ChatError
    when the owner may not send now, before the input filter runs (the
    costly part of a send); ``limits`` does so again under the
    conversation's lock, where the new answer is counted. With
    ``answer=False`` (a person owns a widget conversation) the question is
    stored and nothing is generated; the returned ``answer`` is then
    None."""
    client_uuid = _client_uuid(client_id)
    earlier = _existing(conversation, client_uuid)
    if earlier is not None:
        return earlier
    text = _content_check(content)
    if limits_early is not None:
        limits_early()
    verdict = content_filter_input(
        text=text, surface=conversation.source, site_id=conversation.site_id
    )
    system_prompt = _system_prompt_now(conversation=conversation)
    grounding = (
        grounding_get(conversation=conversation, question=verdict.text)
        if answer and not verdict.blocked
        else None
    )
    try:
        with transaction.atomic():
            # The conversation row is the lock that orders concurrent
            # sends in one conversation (and the limit counts per owner).
            locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
            if limits is not None:
                limits()
            thread = thread_load(conversation=locked)
            if parent_id is _PARENT_UNSET:
                parent = locked.current_leaf
            elif parent_id is None:
                parent = None
            else:
                parent = thread.messages.get(_int(parent_id))
                if parent is None:
                    raise ChatError("not_found", gettext("No such message."))
            # A widget conversation a person handled may hold questions in a
            # row; elsewhere a question follows an answer.
            if (
                parent is not None
                and parent.role != Message.Role.ASSISTANT
                and locked.source != Conversation.Source.WIDGET
            ):
                raise ChatError("invalid", gettext("A question follows an answer."))
            if parent is not None and parent.status == Message.Status.PENDING:
                raise ChatError(
                    "busy", gettext("Wait for the answer to finish, or stop it, before sending.")
                )
            # A rule's mask changes what is stored, so what the model sees;
            # with PII_MASK_AT_REST personal details are masked in what is
            # stored, and only this turn's prompt has them as written.
            question = Message(
                conversation=locked,
                parent=parent,
                role=Message.Role.USER,
                content=at_rest(text if verdict.blocked else verdict.text),
                status=Message.Status.BLOCKED if verdict.blocked else Message.Status.DONE,
                client_id=client_uuid,
            )
            question.full_clean()
            question.save()
            reply: Message | None
            if verdict.blocked:
                reply = _answer_blocked(
                    conversation=locked, parent=question, notice=verdict.notice
                )
            elif answer and grounding is not None and not grounding.found:
                reply = _answer_nothing_found(
                    conversation=locked, parent=question, grounding=grounding
                )
            elif answer:
                reply = _answer_create(conversation=locked, parent=question, grounding=grounding)
            else:
                reply = None
            if verdict.hits:
                filter_hits_store(
                    hits=[hit.as_dict() for hit in verdict.hits],
                    scope="input",
                    conversation=locked,
                    message_id=question.pk,
                )
            thread.messages[question.pk] = question
            messages = _system_prompt_use(
                prompt_messages(thread=thread, upto=question), system_prompt
            )
            if messages and messages[-1]["role"] == "user" and not verdict.blocked:
                messages[-1] = {**messages[-1], "content": verdict.text}
            locked.current_leaf = reply or question
            conversation_title_auto(conversation=locked, question=question.content)
            locked.save(update_fields=["current_leaf", "title", "title_is_auto", "updated_at"])
            sent = Sent(question=question, answer=reply, created=True)
            if reply is not None and reply.status == Message.Status.PENDING:
                _answer_queue(
                    conversation=locked, answer=reply, messages=messages, grounding=grounding
                )
            _announce(locked, sent)
    except IntegrityError as error:
        return _race_lost(conversation, client_uuid, error)
    conversation.refresh_from_db()
    return sent


def _answer_create(
    *,
    conversation: Conversation,
    parent: Message,
    client_id: uuid.UUID | None = None,
    grounding: Grounding | None = None,
) -> Message:
    # The version is chosen now (production, or the canary for its share
    # of conversations, or the one a widget site is pinned to) so a
    # promotion after this commit changes only later turns.
    site = conversation.site if conversation.site_id else None
    if site is not None and site.model_version_id:
        version = site.model_version
    elif conversation.model_version_id is not None and _picked_usable(conversation):
        version = conversation.model_version
    else:
        version = model_version_route(conversation_id=conversation.pk)
    answer = Message(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        client_id=client_id,
        generation_id=uuid.uuid4().hex,
        model_version=version,
        model_version_name=version.name if version else "",
        knowledge=grounding.record() if grounding is not None else {},
    )
    answer.full_clean()
    answer.save()
    return answer


def _picked_usable(conversation: Conversation) -> bool:
    """The version picked for the conversation is still one its owner may
    use (not archived; a candidate only for staff)."""
    from chat.selectors import chat_versions_for_user

    if conversation.user is None:
        return False
    usable = chat_versions_for_user(user=conversation.user)
    return any(v.pk == conversation.model_version_id for v in usable)


def _answer_blocked(*, conversation: Conversation, parent: Message, notice: str) -> Message:
    """The answer to a blocked question: the notice; nothing is generated."""
    answer = Message(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.BLOCKED,
        content=notice,
        finish_reason="content_filter",
        finished_at=timezone.now(),
    )
    answer.full_clean()
    answer.save()
    return answer


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ChatError("invalid", gettext("Message ids are integers.")) from None
