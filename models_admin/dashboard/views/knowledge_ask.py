"""The knowledge test box's "Ask the model": the question, grounded in the
base's passages as the chat would ground it, streamed from the production
version (greedy) with the citation numbers checked. Staff only; nothing
is stored."""

from __future__ import annotations

import logging
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.utils.formats import number_format
from django.utils.translation import gettext

from chat.services.knowledge import grounding_for, knowledge_json, messages_grounded
from inference.client import generation_submit, workers_live_count
from models_admin.dashboard.views.compare import AnswerRun, answers_stream, staff_refusal
from models_admin.dashboard.views.http import json_error, json_object_body
from models_admin.models import KnowledgeBase
from models_admin.selectors import model_version_get_production

logger = logging.getLogger(__name__)

QUESTION_MAX_CHARS = 2000
#: Tokens of the test answer.
ANSWER_TOKENS = 200


def _submit(base_id: int, body: dict[str, Any]) -> tuple[AnswerRun, dict[str, Any]] | JsonResponse:
    """Queue the grounded question; the run and the passages given, or the
    JSON to answer (an error, or the base's reply when nothing fits)."""
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        return json_error(
            gettext("Write a question first."), errors={"question": [gettext("Required.")]}
        )
    if len(question) > QUESTION_MAX_CHARS or "\x00" in question:
        return json_error(
            gettext("Questions are text of at most %(question_max_chars)s characters.")
            % {"question_max_chars": number_format(QUESTION_MAX_CHARS, force_grouping=True)}
        )
    base = KnowledgeBase.objects.filter(pk=base_id).first()
    if base is None:
        return json_error(gettext("No such knowledge base."), status=404)
    version = model_version_get_production()
    if version is None:
        return json_error(gettext("No version is in production."), status=503)
    grounding = grounding_for(base=base, question=question.strip(), version=version)
    if not grounding.found:
        shown = knowledge_json(grounding.record(), "")
        return JsonResponse({"found": False, "reply": base.nothing_found, "knowledge": shown})
    try:
        if workers_live_count() == 0:
            return json_error(gettext("No inference worker is running."), status=503)
        generation_id = generation_submit(
            messages=messages_grounded([{"role": "user", "content": question.strip()}], grounding),
            params={"max_new_tokens": ANSWER_TOKENS, "temperature": 0.0},
            model_version_id=version.pk,
            extra={"surface": "chat", "citations": len(grounding.passages)},
        )
    except redis.RedisError as error:
        logger.warning("Could not queue the knowledge test question: %s", error)
        return json_error(gettext("The generation queue is unreachable."), status=503)
    return AnswerRun(version.pk, generation_id), grounding.record()


async def knowledge_ask(request: HttpRequest, pk: int) -> HttpResponseBase:
    """POST ``{"question"}``: a ``text/event-stream`` of the grounded answer
    (the compare page's events), or JSON (an error, or ``found: false``
    with the base's reply)."""
    refusal = await staff_refusal(request)
    if refusal is not None:
        return refusal
    if request.method != "POST":
        response = json_error(gettext("POST a JSON body."), status=405)
        response["Allow"] = "POST"
        return response
    body = json_object_body(request, max_bytes=QUESTION_MAX_CHARS * 8 + 1000)
    if isinstance(body, JsonResponse):
        return body
    submitted = await sync_to_async(_submit)(pk, body)
    if isinstance(submitted, JsonResponse):
        return submitted
    run, _record = submitted
    stream = StreamingHttpResponse(answers_stream([run]), content_type="text/event-stream")
    stream["Cache-Control"] = "no-cache"
    stream["X-Accel-Buffering"] = "no"
    return stream


urlpatterns = [
    path("<int:pk>/ask/", knowledge_ask, name="knowledge-ask"),
]
