"""How a generation ends on its stored answer: the text, finish reason,
usage and tokens the worker (or a socket that read the end first)
stores, a stop asked for, and answers whose request Redis lost."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, TextField, Value
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone

from chat.models import Conversation, Message
from chat.selectors import (
    message_serialize,
)
from chat.services.conversations import conversations_changed
from chat.services.events import conversation_group, notify_on_commit
from chat.services.knowledge import knowledge_cited
from inference.client import (
    generation_cancel,
    generation_fail_if_unknown,
    generation_replay,
    workers_live_count,
)
from models_admin.filters import filter_hits_record
from models_admin.models import ModelVersion
from models_admin.pii import at_rest

logger = logging.getLogger(__name__)


def filter_hits_store(
    *, hits: list[dict[str, Any]], scope: str, conversation: Conversation, message_id: int
) -> None:
    """Audit the hits; a flag marks the conversation for review."""
    filter_hits_record(
        hits=hits,
        scope=scope,
        surface=conversation.source,
        conversation_id=conversation.pk,
        message_id=message_id,
        user_id=conversation.user_id,
    )
    flags = [hit for hit in hits if hit.get("action") == "flag"]
    if flags and conversation.flagged_at is None:
        names = ", ".join(sorted({str(hit.get("rule_name")) for hit in flags}))
        Conversation.objects.filter(pk=conversation.pk, flagged_at__isnull=True).update(
            flagged_at=timezone.now(), flag_reason=f"Content rule: {names}"[:500]
        )


def tokens_text(tokens: list[list[Any]]) -> str:
    """The text stored tokens spell (bytes where a token holds part of a
    character)."""
    raw = b"".join(bytes.fromhex(t[3]) if t[3] else str(t[0]).encode() for t in tokens)
    return raw.decode("utf-8", errors="replace")


def generation_stop(*, message: Message) -> bool:
    """Ask the worker to stop this answer; the text so far is kept. Return
    False when it had already finished."""
    if message.status != Message.Status.PENDING or not message.generation_id:
        return False
    generation_cancel(message.generation_id)
    if workers_live_count() == 0:
        # No worker will read the flag soon: end the answer here. A worker
        # that claims the request later sees the flag and stops at once.
        text, _final = generation_replay(message.generation_id)
        message_generation_finish(
            generation_id=message.generation_id,
            final={"finish_reason": "cancelled"},
            text=text,
        )
    return True


_STATUS_BY_REASON = {
    "cancelled": Message.Status.CANCELLED,
    "error": Message.Status.ERROR,
    "content_filter": Message.Status.BLOCKED,
}


def message_generation_finish(
    *, generation_id: str, final: dict[str, Any], text: str
) -> Message | None:
    """Store a finished generation on its pending answer: text, finish
    reason, usage, timings, and the version that wrote it.

    Idempotent: the worker calls it, and so does any socket that reads the
    final event first; only the first call writes. Return the answer, or
    None for an unknown generation.
    """
    reason = str(final.get("finish_reason") or "stop")
    status = _STATUS_BY_REASON.get(reason, Message.Status.DONE)
    if reason == "content_filter":
        # The whole answer gives way to the notice, even what streamed.
        text = str(final.get("notice") or settings.FILTER_BLOCK_NOTICE)
    stored = at_rest(text)
    masked = stored != text  # then the tokens, which spell the text, are not kept
    text = stored
    usage = final.get("usage") or {}
    version_id = final.get("model_version_id")
    version = ModelVersion.objects.filter(pk=version_id).first() if version_id else None
    # A continued answer keeps what it had and gains the new text (a new
    # answer's content is empty until now); a blocked one is replaced.
    content: Any = (
        text
        if reason == "content_filter"
        else Concat(F("content"), Value(text), output_field=TextField())
    )
    completion = usage.get("completion_tokens")
    fields: dict[str, Any] = {
        "content": content,
        "status": status,
        "finish_reason": reason,
        "error": str(final.get("error") or "")[:2000],
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": (
            None
            if completion is None
            else Coalesce(F("completion_tokens"), Value(0)) + Value(int(completion))
        ),
        "timings": final.get("timings") or {},
        "finished_at": timezone.now(),
    }
    if version is not None:
        fields["model_version"] = version
        fields["model_version_name"] = version.name
    elif final.get("model_version"):
        fields["model_version_name"] = str(final["model_version"])[:200]
    with transaction.atomic():
        updated = Message.objects.filter(
            generation_id=generation_id, status=Message.Status.PENDING
        ).update(**fields)
        if updated and final.get("tokens") and reason != "content_filter" and not masked:
            # With the text, by whoever stores it (the worker, or a socket
            # that read the end of the stream first).
            _tokens_store(generation_id=generation_id, tokens=final["tokens"])
        answer = (
            Message.objects.select_related("conversation")
            .filter(generation_id=generation_id)
            .first()
        )
        if answer is None:
            return None
        if updated and answer.knowledge.get("passages"):
            answer.knowledge = knowledge_cited(answer.knowledge, answer.content)
            answer.save(update_fields=["knowledge"])
        if final.get("filter_hits"):
            filter_hits_store(
                hits=final["filter_hits"],
                scope="output",
                conversation=answer.conversation,
                message_id=answer.pk,
            )
        if updated:
            Conversation.objects.filter(pk=answer.conversation_id).update(
                updated_at=timezone.now()
            )
            conversations_changed(user_id=answer.conversation.user_id)
            notify_on_commit(
                conversation_group(answer.conversation_id),
                {"type": "message.finished", "answer": message_serialize(answer)},
            )
    return answer


def _tokens_store(*, generation_id: str, tokens: list[Any]) -> bool:
    """Keep a finished answer's tokens, after those it had when it was
    continued, and only when they spell its text; return whether they
    were kept."""
    answer = Message.objects.select_for_update().filter(generation_id=generation_id).first()
    if answer is None:
        return False
    combined = [*answer.tokens, *tokens]
    if tokens_text(combined) != answer.content:
        # A filter or a stop string changed the text, or the answer's start
        # has no tokens.
        return False
    answer.tokens = combined
    answer.save(update_fields=["tokens"])
    return True


#: What an answer whose request a Redis restart lost ends with.
LOST_REQUEST_ERROR = "The message queue restarted and lost this request. Send it again."


def generations_end_lost(*, waiting: set[str], before: Any) -> int:
    """End the pending answers created before ``before`` whose request is
    neither waiting in the queue (``waiting``: generation ids) nor running
    (its stream exists): a Redis restart lost them, and without this they
    would wait forever. Return how many were ended."""
    pending = Message.objects.filter(status=Message.Status.PENDING, created_at__lt=before).exclude(
        generation_id=None
    )
    ended = 0
    for generation_id in pending.values_list("generation_id", flat=True).iterator():
        generation_id = str(generation_id)
        if generation_id in waiting:
            continue
        if not generation_fail_if_unknown(generation_id, error=LOST_REQUEST_ERROR):
            continue
        message_generation_finish(
            generation_id=generation_id,
            final={"finish_reason": "error", "error": LOST_REQUEST_ERROR},
            text="",
        )
        ended += 1
    if ended:
        logger.warning("Ended %d answer(s) whose request a Redis restart lost", ended)
    return ended
