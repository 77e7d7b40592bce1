"""Answering again: regenerating an answer, branching it from one of its
tokens, and continuing a stopped or length-cut one."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext

from chat.models import Conversation, Message
from chat.selectors import prompt_messages, thread_load
from chat.services.generations import tokens_text
from chat.services.messages import (
    ChatError,
    Sent,
    _announce,
    _answer_create,
    _answer_nothing_found,
    _answer_queue,
    _client_uuid,
    _existing,
    _int,
    _limits_check,
    _race_lost,
    _system_prompt_now,
    _system_prompt_use,
    grounding_get,
)


def message_regenerate(
    *, user: AbstractBaseUser, conversation: Conversation, message: Message, client_id: Any
) -> Sent:
    """Generate a new version of an answer: a sibling under the same
    question, which becomes the active path."""
    client_uuid = _client_uuid(client_id)
    earlier = _existing(conversation, client_uuid)
    if earlier is not None:
        return earlier
    if message.conversation_id != conversation.pk or message.role != Message.Role.ASSISTANT:
        raise ChatError("invalid", gettext("Only answers can be regenerated."))
    return _answer_again(
        user=user, conversation=conversation, message=message, client_uuid=client_uuid
    )


def _answer_again(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    message: Message,
    client_uuid: uuid.UUID,
    start: tuple[str, list] | None = None,
) -> Sent:
    """Queue a new version of an answer: a sibling under the same question,
    made the active path. ``start`` (text, tokens) is what the new version
    begins with; the model goes on from it."""
    system_prompt = _system_prompt_now(conversation=conversation)
    parent = message.parent
    grounding = (
        grounding_get(conversation=conversation, question=parent.content)
        if parent is not None and parent.status != Message.Status.BLOCKED
        else None
    )
    if grounding is not None and start is not None and not grounding.found:
        grounding = None  # a branch goes on from its text either way
    try:
        with transaction.atomic():
            locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
            if Message.objects.filter(pk=message.pk, status=Message.Status.PENDING).exists():
                raise ChatError(
                    "busy", gettext("This answer is still being written; stop it first.")
                )
            _limits_check(user_id=int(user.pk))
            thread = thread_load(conversation=locked)
            question = thread.messages[message.parent_id] if message.parent_id else None
            if question is None:
                raise ChatError("invalid", gettext("This answer has no question to answer again."))
            if question.status == Message.Status.BLOCKED:
                raise ChatError(
                    "blocked",
                    gettext("This message was blocked by a content rule; it is not answered."),
                )
            if grounding is not None and not grounding.found:
                answer = _answer_nothing_found(
                    conversation=locked, parent=question, grounding=grounding
                )
                answer.client_id = client_uuid
                answer.save(update_fields=["client_id"])
                locked.current_leaf = answer
                locked.save(update_fields=["current_leaf", "updated_at"])
                sent = Sent(question=None, answer=answer, created=True)
                _announce(locked, sent)
                return sent
            answer = _answer_create(
                conversation=locked, parent=question, client_id=client_uuid, grounding=grounding
            )
            prompt = _system_prompt_use(
                prompt_messages(thread=thread, upto=question), system_prompt
            )
            extra = None
            if start is not None:
                answer.content, answer.tokens = start
                answer.save(update_fields=["content", "tokens"])
                prompt.append({"role": "assistant", "content": answer.content})
                extra = {"continue_final_message": True}
            locked.current_leaf = answer
            locked.save(update_fields=["current_leaf", "updated_at"])
            sent = Sent(question=None, answer=answer, created=True)
            _answer_queue(
                conversation=locked,
                answer=answer,
                messages=prompt,
                params_extra=extra,
                grounding=grounding,
            )
            _announce(locked, sent)
    except IntegrityError as error:
        return _race_lost(conversation, client_uuid, error)
    return sent


def message_branch(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    message: Message,
    index: Any,
    token: Any,
    client_id: Any,
) -> Sent:
    """Regenerate an answer from one of its tokens: a new version of the
    answer (a sibling under the same question, made the active path) that
    keeps the tokens before ``index``, takes ``token`` (one of the
    alternatives the model weighed there) in its place, and lets the
    model go on from there."""
    client_uuid = _client_uuid(client_id)
    earlier = _existing(conversation, client_uuid)
    if earlier is not None:
        return earlier
    if message.conversation_id != conversation.pk or message.role != Message.Role.ASSISTANT:
        raise ChatError("invalid", gettext("Only answers can be regenerated from a token."))
    if message.author_id is not None or not message.tokens:
        raise ChatError(
            "invalid", gettext("This answer has no token probabilities to branch from.")
        )
    position = _int(index)
    if not 0 <= position < len(message.tokens):
        raise ChatError(
            "invalid",
            gettext("The answer has tokens 0 to %(last)s.") % {"last": len(message.tokens) - 1},
        )
    entry = message.tokens[position]
    choices = {str(text): logprob for text, logprob in entry[2]}
    if not isinstance(token, str) or token not in choices:
        raise ChatError(
            "invalid", gettext("Pick one of the alternatives the model weighed there.")
        )
    if "\ufffd" in token or not token:
        raise ChatError(
            "invalid", gettext("That alternative is part of a character; pick another.")
        )
    prefix_tokens = message.tokens[:position]
    prefix = tokens_text(prefix_tokens) + token
    if not prefix.strip():
        raise ChatError(
            "invalid", gettext("The answer would start with blank text; pick another token.")
        )
    return _answer_again(
        user=user,
        conversation=conversation,
        message=message,
        client_uuid=client_uuid,
        start=(prefix, [*prefix_tokens, [token, choices[token], entry[2], ""]]),
    )


#: Finish reasons after which an answer can be continued.
CONTINUABLE = ("cancelled", "length")


def message_continue(
    *, user: AbstractBaseUser, conversation: Conversation, message: Message, client_id: Any
) -> Sent:
    """Go on with a stopped or length-cut answer: the same message runs
    again, the model continuing its own text, and what it writes is added
    to the end. Only the last answer of the active path can be continued.
    Sending the same client_id again while it runs changes nothing."""
    _client_uuid(client_id)
    if message.conversation_id != conversation.pk or message.role != Message.Role.ASSISTANT:
        raise ChatError("invalid", gettext("Only answers can be continued."))
    parent = message.parent
    grounding = (
        grounding_get(conversation=conversation, question=parent.content) if parent else None
    )
    if grounding is not None and not grounding.found:
        grounding = None
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        answer = Message.objects.select_for_update().get(pk=message.pk)
        if answer.status == Message.Status.PENDING:
            return Sent(question=None, answer=answer, created=False)
        if locked.current_leaf_id != answer.pk:
            raise ChatError(
                "invalid", gettext("Only the last answer of the conversation can be continued.")
            )
        if answer.finish_reason not in CONTINUABLE or not answer.content.strip():
            raise ChatError(
                "invalid",
                gettext("Only an answer that was stopped or cut at its length can be continued."),
            )
        if answer.author_id is not None:
            raise ChatError("invalid", gettext("Only a model's answer can be continued."))
        _limits_check(user_id=int(user.pk))
        thread = thread_load(conversation=locked)
        question = thread.messages[answer.parent_id] if answer.parent_id else None
        if question is None:
            raise ChatError("invalid", gettext("This answer has no question."))
        system_prompt = _system_prompt_now(conversation=locked)
        prompt = _system_prompt_use(prompt_messages(thread=thread, upto=question), system_prompt)
        prompt.append({"role": "assistant", "content": answer.content})
        answer.status = Message.Status.PENDING
        answer.generation_id = uuid.uuid4().hex
        answer.finish_reason = ""
        answer.error = ""
        answer.finished_at = None
        answer.save(
            update_fields=["status", "generation_id", "finish_reason", "error", "finished_at"]
        )
        locked.save(update_fields=["updated_at"])
        sent = Sent(question=None, answer=answer, created=True)
        _answer_queue(
            conversation=locked,
            answer=answer,
            messages=prompt,
            params_extra={"continue_final_message": True},
            grounding=grounding,
        )
        _announce(locked, sent)
    return sent
