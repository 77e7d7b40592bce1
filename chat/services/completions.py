"""Chat and text completions for the OpenAI-compatible API: input filter
rules, storing the call as a conversation (unless turned off), queueing
the generation, and recording usage per key. Requests are checked in
``chat.services.completion_requests``."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat.models import ApiKey, ApiRequest, Conversation, Message
from chat.services.completion_requests import (  # noqa: F401 (the API's names)
    DEFAULT_ALIAS,
    ApiError,
    CompletionRequest,
    api_models_for_key,
    completion_request_parse,
    text_completion_request_parse,
)
from chat.services.conversations import conversation_title_auto, conversations_room_left
from chat.services.knowledge import grounding_for, messages_grounded
from chat.services.limits import user_generation_check
from chat.services.messages import message_generation_finish
from inference.client import generation_submit
from models_admin.filters import content_filter_input, filter_hits_record
from models_admin.pii import at_rest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    generation_id: str
    record_id: int
    model: str
    stored: bool = False
    #: The passages the answer was given (``Message.knowledge``), if any.
    knowledge: dict[str, Any] | None = None
    #: The whole answer, when no model writes one (the knowledge base has
    #: nothing on the question).
    reply: str | None = None


def _filter_input(*, key: ApiKey, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Run the API's input rules on every message the model will read:
    system prompts and the "assistant" turns the caller sends as history
    too, since the caller wrote them; raise ApiError for a block."""
    out = []
    for index, message in enumerate(messages):
        verdict = content_filter_input(text=message["content"], surface="api")
        if verdict.hits:
            filter_hits_record(
                hits=[hit.as_dict() for hit in verdict.hits],
                scope="input",
                surface="api",
                user_id=key.user_id,
            )
        if verdict.blocked:
            raise ApiError(400, verdict.notice, param=f"messages[{index}]", code="content_filter")
        out.append({**message, "content": verdict.text})
    return out


def _conversation_store(
    *, key: ApiKey, request: CompletionRequest, messages: list[dict[str, str]], generation_id: str
) -> tuple[Conversation, Message]:
    conversation = Conversation(
        user_id=key.user_id,
        source=Conversation.Source.API,
        temperature=request.params.get("temperature", 0.7),
        top_p=request.params.get("top_p", 0.9),
        max_tokens=request.params["max_new_tokens"],
    )
    conversation.save()
    parent = None
    for message in messages:
        supplied = message["role"] == Message.Role.ASSISTANT
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role=message["role"],
            content=at_rest(message["content"]),
            # The caller wrote these "answers": no version's work, never
            # training data nor a version's usage.
            status=Message.Status.SUPPLIED if supplied else Message.Status.DONE,
        )
    answer = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        generation_id=generation_id,
        model_version=request.version,
        model_version_name=request.version.name,
    )
    last_question = at_rest(next(m["content"] for m in reversed(messages) if m["role"] == "user"))
    conversation.current_leaf = answer
    conversation_title_auto(conversation=conversation, question=last_question)
    conversation.save(update_fields=["current_leaf", "title", "title_is_auto", "updated_at"])
    return conversation, answer


def _api_request_create(
    *,
    key: ApiKey,
    request: CompletionRequest,
    conversation: Conversation | None,
    generation_id: str,
    **ended: Any,
) -> ApiRequest:
    """The usage record of one call (``ended``: how it ended, when known
    now)."""
    return ApiRequest.objects.create(
        key=key,
        user_id=key.user_id,
        model_version=request.version,
        model_name=request.version.name,
        conversation=conversation,
        generation_id=generation_id,
        stream=request.stream,
        end_user=request.end_user,
        **ended,
    )


def completion_start(*, key: ApiKey, request: CompletionRequest) -> Started:
    """Filter, store (when configured) and queue one completion; raise
    LimitError when the user's answers at once or a minute are spent."""
    messages = _filter_input(key=key, messages=request.messages)
    generation_id = uuid.uuid4().hex
    extra: dict[str, Any] = {"surface": "api"}
    grounding = None
    if request.knowledge_base is not None:
        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        grounding = grounding_for(
            base=request.knowledge_base, question=question, version=request.version
        )
        if grounding.found:
            messages = messages_grounded(messages, grounding)
            extra["citations"] = len(grounding.passages)
        else:
            return _nothing_found(key=key, request=request, messages=messages, grounding=grounding)
    with transaction.atomic():
        # Counted with the user's chat answers, under the user's row lock.
        user_generation_check(user_id=key.user_id, lock=True)
        conversation = None
        # Past the user's conversation cap the call is still answered and
        # its usage recorded; only the conversation is not kept.
        if settings.API_STORE_CONVERSATIONS and conversations_room_left(user_id=key.user_id):
            conversation, answer = _conversation_store(
                key=key, request=request, messages=messages, generation_id=generation_id
            )
            extra.update(conversation=conversation.pk, message=answer.pk)
            if grounding is not None:
                answer.knowledge = grounding.record()
                answer.save(update_fields=["knowledge"])
        record = _api_request_create(
            key=key, request=request, conversation=conversation, generation_id=generation_id
        )
        params = request.params

        def submit() -> None:
            try:
                generation_submit(
                    messages=messages,
                    params=params,
                    model_version_id=request.version.pk,
                    generation_id=generation_id,
                    extra=extra,
                    # The filtered text, for a text completion.
                    prompt=messages[0]["content"] if request.prompt is not None else None,
                )
            except Exception as exc:
                logger.exception("Queueing API generation %s failed", generation_id)
                final = {"finish_reason": "error", "error": "The model service is unreachable."}
                message_generation_finish(generation_id=generation_id, final=final, text="")
                completion_record(
                    record_id=record.pk, final=final, ttft_s=None, duration_s=0.0,
                    status_code=503, error=str(exc),
                )  # fmt: skip
                raise ApiError(
                    503,
                    "The model service is unreachable; try again shortly.",
                    type="server_error",
                    code="service_unavailable",
                ) from None

        transaction.on_commit(submit, robust=False)
    return Started(
        generation_id=generation_id,
        record_id=record.pk,
        model=request.version.name,
        stored=conversation is not None,
        knowledge=grounding.record() if grounding is not None else None,
    )


def _nothing_found(
    *, key: ApiKey, request: CompletionRequest, messages: list[dict[str, str]], grounding: Any
) -> Started:
    """Answer a question the knowledge base has nothing on with the base's
    reply; no model runs, no tokens are counted."""
    generation_id = uuid.uuid4().hex
    reply = grounding.base.nothing_found
    with transaction.atomic():
        user_generation_check(user_id=key.user_id, lock=True)
        conversation = None
        if settings.API_STORE_CONVERSATIONS and conversations_room_left(user_id=key.user_id):
            conversation, answer = _conversation_store(
                key=key, request=request, messages=messages, generation_id=generation_id
            )
            Message.objects.filter(pk=answer.pk).update(
                content=reply,
                status=Message.Status.DONE,
                finish_reason="no_passages",
                finished_at=timezone.now(),
                knowledge=grounding.record(),
            )
        record = _api_request_create(
            key=key,
            request=request,
            conversation=conversation,
            generation_id=generation_id,
            finish_reason="stop",
            duration_s=0.0,
        )
    return Started(
        generation_id=generation_id,
        record_id=record.pk,
        model=request.version.name,
        stored=conversation is not None,
        knowledge=grounding.record(),
        reply=reply,
    )


def completion_record(
    *,
    record_id: int,
    final: dict[str, Any] | None,
    ttft_s: float | None,
    duration_s: float,
    status_code: int = 200,
    error: str = "",
) -> None:
    """Store how a call ended: finish reason and token counts. A call
    whose client went away has no counts here; the worker's own record of
    the generation (``completion_usage_store``) keeps them."""
    final = final or {}
    usage = final.get("usage") or {}
    fields: dict[str, Any] = {
        "finish_reason": str(final.get("finish_reason") or "")[:20],
        "ttft_s": ttft_s,
        "duration_s": duration_s,
        "status_code": status_code,
        "error": error[:500],
    }
    if usage:
        fields["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        fields["completion_tokens"] = int(usage.get("completion_tokens") or 0)
    ApiRequest.objects.filter(pk=record_id).update(**fields)


def completion_usage_store(*, generation_id: str, final: dict[str, Any]) -> int:
    """Store the token counts of a finished generation on its API call,
    whether or not the caller stayed to read them (the monthly quota
    counts what was generated); an unfinished record gets the finish
    reason too, so it no longer counts as running. Return how many calls
    matched (0 for a chat answer)."""
    usage = final.get("usage") or {}
    if not generation_id or not usage:
        return 0
    calls = ApiRequest.objects.filter(generation_id=generation_id)
    calls.filter(finish_reason="").update(finish_reason=str(final.get("finish_reason") or "")[:20])
    return calls.update(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def api_request_count_today(*, key: ApiKey) -> int:
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return ApiRequest.objects.filter(key=key, created_at__gte=start).count()
