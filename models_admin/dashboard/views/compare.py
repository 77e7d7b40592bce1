"""The compare page: 2 to 4 model versions side by side (metrics, eval
loss per dataset, stored answers), and "ask all": one question streamed
to every compared version at once.

Looking and asking are for staff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET

from chat.streams import CancelPolicy, GenerationFollower
from inference.client import (
    generation_cancel,
    generation_submit,
    workers_live_count,
)
from inference.protocol import SamplingError, StreamEvent
from models_admin.dashboard.forms.common import errors_by_field
from models_admin.dashboard.forms.versions import CompareAskForm, CompareForm
from models_admin.dashboard.selectors.figures import answer_tokens_per_s
from models_admin.dashboard.selectors.versions import (
    compare_answer_rows,
    compare_metric_rows,
    version_badge,
)
from models_admin.dashboard.views.access import staff_required, user_is_staff
from models_admin.dashboard.views.http import json_error, json_object_body
from models_admin.dashboard.views.http import sse_event as _sse
from models_admin.models import ModelVersion
from models_admin.selectors import canary_get_active

logger = logging.getLogger(__name__)

#: Largest body of a compare question.
ASK_BODY_MAX_BYTES = 256_000
#: How long the "ask all" stream waits for a version's next event.
ASK_IDLE_TIMEOUT_S = 120.0


@staff_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    """2 to 4 versions side by side: metrics, stored answers, and a box
    that asks all of them a new question."""
    form = CompareForm({"v": request.GET.getlist("v")})
    if not form.is_valid():
        return render(
            request,
            "dashboard/versions/compare.html",
            {"section": "versions", "errors": form.errors.get("v", []), "versions": []},
            status=400,
        )
    chosen: list[ModelVersion] = form.cleaned_data["v"]
    canary = canary_get_active()
    context = {
        "section": "versions",
        "versions": [{"version": v, "badge": version_badge(v, canary)} for v in chosen],
        "metric_rows": compare_metric_rows(chosen),
        "answer_rows": compare_answer_rows(chosen),
        "ask_form": CompareAskForm(),
        "ask_config": {
            "url": reverse("dashboard:compare-ask"),
            "versions": [{"id": v.pk, "name": v.name} for v in chosen],
        },
    }
    return render(request, "dashboard/versions/compare.html", context)


# --- "ask all": one question, every compared version, streamed --------------


#: Alternatives each answered token comes with, for the token view.
COMPARE_ALTERNATIVES = 5


@dataclass(frozen=True)
class AnswerRun:
    version_id: int
    generation_id: str


async def staff_refusal(request: HttpRequest) -> HttpResponseBase | None:
    """``staff_required`` for a coroutine view, answering in JSON."""
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not user_is_staff(user):
        return JsonResponse({"error": gettext("The dashboard is for staff accounts.")}, status=403)
    return None


def _ask_submit(body: dict[str, Any]) -> list[AnswerRun] | JsonResponse:
    """Validate the question and queue one greedy (or chosen-temperature)
    generation per version; return the runs, or the error to answer."""
    form = CompareAskForm(body)
    if not isinstance(body.get("question", ""), str):
        return json_error(
            gettext("The question must be text."), errors={"question": [gettext("Not text.")]}
        )
    if not form.is_valid():
        errors = errors_by_field(form)
        first = next(iter(errors.values()))[0]
        return json_error(str(first), errors=errors)
    data = form.cleaned_data
    try:
        if workers_live_count() == 0:
            return json_error(gettext("No inference worker is running."), status=503)
        runs: list[AnswerRun] = []
        try:
            for version in data["versions"]:
                generation_id = generation_submit(
                    messages=form.messages(),
                    params={
                        "max_new_tokens": data["max_tokens"],
                        "temperature": data["temperature"],
                        # For the token view: each token with its top 5.
                        "logprobs": COMPARE_ALTERNATIVES,
                    },
                    model_version_id=version.pk,
                )
                runs.append(AnswerRun(version.pk, generation_id))
        except BaseException:
            for run in runs:
                generation_cancel(run.generation_id)
            raise
    except SamplingError as error:
        return json_error(str(error))
    except redis.RedisError as error:
        logger.warning("Could not queue the compare question: %s", error)
        return json_error(gettext("The generation queue is unreachable."), status=503)
    return runs


def _ask_event(run: AnswerRun, event: StreamEvent) -> dict[str, Any] | None:
    """What the page gets of one generation event; None to skip it."""
    base = {"version": run.version_id, "type": event.type}
    if event.type == "start":
        return {**base, "model_version": event.data.get("model_version", "")}
    if event.type == "text":
        logprobs = event.data.get("logprobs")
        return {**base, "text": event.text, **({"logprobs": logprobs} if logprobs else {})}
    if event.type == "done":
        usage = event.data.get("usage") or {}
        timings = event.data.get("timings") or {}
        completion = usage.get("completion_tokens")
        return {
            **base,
            "finish_reason": event.data.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": completion,
            "ttft_s": timings.get("ttft_s"),
            "total_s": timings.get("total_s"),
            "tokens_per_s": answer_tokens_per_s(completion, timings),
        }
    if event.type == "error":
        return {**base, "error": event.data.get("error") or gettext("The generation failed.")}
    return None  # "queued": the page shows a spinner until "start" anyway


async def answers_stream(runs: list[AnswerRun]) -> AsyncIterator[str]:
    """Merge the generations' events as they come; end with ``end``.

    Each generation is read by its own task into one queue. When the
    reader goes away (the browser closed the page or pressed stop), the
    generations still running are cancelled so their slots free up.
    """
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    followers = [
        GenerationFollower(
            run.generation_id,
            idle_timeout_s=ASK_IDLE_TIMEOUT_S,
            cancel=CancelPolicy.IF_UNFINISHED,
        )
        for run in runs
    ]

    async def read(run: AnswerRun, follower: GenerationFollower) -> None:
        try:
            async for event in follower:
                payload = _ask_event(run, event) if isinstance(event, StreamEvent) else None
                if payload is not None:
                    queue.put_nowait(payload)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Reading compare generation %s failed: %r", run.generation_id, error)
            message = (
                gettext("No answer for %(seconds)s s.") % {"seconds": f"{ASK_IDLE_TIMEOUT_S:.0f}"}
                if isinstance(error, TimeoutError)
                else gettext("The answer's stream broke.")
            )
            queue.put_nowait({"version": run.version_id, "type": "error", "error": message})
        finally:
            queue.put_nowait(None)

    readers = [asyncio.create_task(read(*pair)) for pair in zip(runs, followers, strict=True)]
    try:
        remaining = len(readers)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            yield _sse(item)
        yield _sse({"type": "end"})
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for follower in followers:
            await follower.aclose()


async def compare_ask(request: HttpRequest) -> HttpResponseBase:
    """POST ``{"versions": [ids], "question", "system", "max_tokens",
    "temperature"}``; answer a ``text/event-stream`` of every version's
    answer as it is written, or a JSON error."""
    refusal = await staff_refusal(request)
    if refusal is not None:
        return refusal
    if request.method != "POST":
        response = json_error(gettext("POST a JSON body."), status=405)
        response["Allow"] = "POST"
        return response
    body = json_object_body(request, max_bytes=ASK_BODY_MAX_BYTES)
    if isinstance(body, JsonResponse):
        return body
    runs = await sync_to_async(_ask_submit)(body)
    if isinstance(runs, JsonResponse):
        return runs
    stream = StreamingHttpResponse(answers_stream(runs), content_type="text/event-stream")
    stream["Cache-Control"] = "no-cache"
    stream["X-Accel-Buffering"] = "no"  # let proxies pass events at once
    return stream


urlpatterns = [
    path("compare/", compare, name="compare"),
    path("compare/ask/", compare_ask, name="compare-ask"),
]
