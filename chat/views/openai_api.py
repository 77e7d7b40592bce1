"""The OpenAI-compatible HTTP API under ``/v1/``: ``GET /v1/models``,
``GET /v1/models/<id>`` and ``POST /v1/chat/completions`` (JSON, or
server-sent events in OpenAI's chunk format ending with ``data: [DONE]``).

Keys come as ``Authorization: Bearer sk-...``. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with its statuses:
401 for a bad or revoked key, 404 for an unknown model, 400 naming the
parameter, 429 with ``Retry-After``. A client that goes away mid-answer
cancels the generation in the engine.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt

from chat.db import db_apart
from chat.models import ApiKey
from chat.services.api_keys import ApiLimitError, api_key_authenticate, api_limits_check
from chat.services.completions import (
    DEFAULT_ALIAS,
    ApiError,
    api_models_for_key,
    completion_request_parse,
    completion_start,
    text_completion_request_parse,
)
from chat.services.knowledge import knowledge_json
from chat.services.limits import LimitError, user_generation_check
from chat.views.body import BodyError, json_body
from chat.views.openai_calls import (
    Call,
    error_response,
    finish_reasons,
    gather,
    sse,
)
from inference.client import workers_live_count

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 2_000_000


#: The API's codes for the user's limits (shared with the chat page).
USER_LIMIT_CODES = {
    "rate_limited": "rate_limit_exceeded",
    "too_many_running": "too_many_concurrent_requests",
}
#: The language of the API's texts, whatever the caller's browser says.
API_LANGUAGE = "en"

#: Retry-After when the user's answers at once are spent: a guess, since
#: it depends on when one of them ends.
RUNNING_RETRY_AFTER_S = 5


def _api_view(view: Callable[..., Awaitable[HttpResponseBase]]) -> Callable[..., Any]:
    """Give every response an ``X-Request-Id`` and turn an unexpected
    failure into a 500 in OpenAI's error shape instead of a traceback.

    The API speaks English whatever the caller's Accept-Language: clients
    parse its error bodies. Activated for the rest of the request, so a
    streamed body's texts are English too."""

    @functools.wraps(view)
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        translation.activate(API_LANGUAGE)
        request_id = f"req_{uuid.uuid4().hex}"
        response: HttpResponseBase
        try:
            response = await view(request, *args, **kwargs)
        except Exception:
            logger.exception("API request %s failed", request_id)
            response = error_response(
                ApiError(
                    500,
                    f"The server had an error processing the request ({request_id}).",
                    type="server_error",
                )
            )
        response["X-Request-Id"] = request_id
        return response

    return csrf_exempt(wrapped)


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _space, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _key(request: HttpRequest) -> ApiKey:
    raw = _bearer(request)
    key = await sync_to_async(api_key_authenticate)(raw=raw) if raw else None
    if key is None:
        shown = f"{raw[:6]}…{raw[-4:]}" if len(raw) > 12 else "(none)"
        raise ApiError(
            401,
            f"Incorrect API key provided: {shown}. Create a key on your account's API keys page.",
            code="invalid_api_key",
        )
    return key


def _model_object(version: Any) -> dict[str, Any]:
    return {
        "id": version.name,
        "object": "model",
        "created": int(version.created_at.timestamp()),
        "owned_by": "production" if version.state == "production" else version.state,
    }


@_api_view
async def models(request: HttpRequest, model_id: str | None = None) -> HttpResponse:
    if request.method != "GET":
        return error_response(ApiError(405, "Use GET.", code="method_not_allowed"))
    try:
        key = await _key(request)
    except ApiError as error:
        return error_response(error)
    versions = await sync_to_async(api_models_for_key)(key=key)
    if model_id is None:
        return JsonResponse({"object": "list", "data": [_model_object(v) for v in versions]})
    if model_id == DEFAULT_ALIAS and versions:
        # The alias that completions accept names the version behind it.
        return JsonResponse({**_model_object(versions[0]), "id": DEFAULT_ALIAS,
                             "root": versions[0].name})  # fmt: skip
    for version in versions:
        if version.name == model_id:
            return JsonResponse(_model_object(version))
    return error_response(
        ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    )


async def _stream(call: Call) -> AsyncIterator[bytes]:
    done = False
    try:
        count = call.request.n
        for index in range(count):
            opening = {"role": "assistant", "content": "", "refusal": None}
            first = call.chunk(opening, None, index=index)
            if call.started.knowledge is not None and index == 0:
                # The passages given, before the text that cites them.
                first["knowledge"] = knowledge_json(call.started.knowledge, "")
            yield sse(first)
        # Tokens whose text is still held back come with the next text.
        waiting: list[list[dict[str, Any]]] = [[] for _ in range(count)]
        async for kind, index, value in call.events():
            if kind == "logprobs":
                waiting[index].extend(value)
                continue
            if kind == "text":
                yield sse(call.chunk({"content": value}, None, waiting[index], index=index))
                waiting[index] = []
                continue
            if kind == "reset":
                waiting = [[] for _ in range(count)]
                continue
            done = True
            if value.get("finish_reason") == "error":
                error = ApiError(500, call.error, type="server_error", code="generation_failed")
                yield sse(error.body())
            else:
                for index, reason in enumerate(finish_reasons(value, count)):
                    yield sse(call.chunk({}, reason, waiting[index], index=index))
                if call.request.include_usage:
                    usage_chunk = call.chunk({}, None)
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = call.usage()
                    yield sse(usage_chunk)
            yield b"data: [DONE]\n\n"
            break
    except TimeoutError:
        done = True
        call.error = "no answer from the model service in time"
        error = ApiError(504, call.error, type="server_error", code="timeout")
        yield sse(error.body())
        yield b"data: [DONE]\n\n"
    finally:
        # A client that went away cancels the generation.
        await call.follower.aclose()
        if not done:
            call.final = call.final or {"finish_reason": "cancelled"}
            call.error = call.error or "client disconnected"
        await call.record(status_code=200 if not call.error or done else 499)


async def _complete(call: Call) -> HttpResponse:
    count = call.request.n
    answers = await gather(call)
    if isinstance(answers, HttpResponse):
        return answers
    final, texts, logprobs = answers.final, answers.texts, answers.logprobs
    choices = []
    for index, reason in enumerate(finish_reasons(final, count)):
        content = "".join(texts[index])
        if reason == "content_filter" and final.get("notice"):
            content = str(final["notice"])
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": (
                    {"content": logprobs[index], "refusal": None}
                    if call.request.logprobs
                    else None
                ),
                "finish_reason": reason,
            }
        )
    extra = {}
    if call.started.knowledge is not None:
        extra["knowledge"] = knowledge_json(call.started.knowledge, "".join(texts[0]))
    return JsonResponse(
        call.envelope("chat.completion", choices=choices, usage=call.usage(), **extra)
    )


def _reply_now(started: Any, request: Any) -> HttpResponseBase:
    """The answer a knowledge base gives itself (nothing on the question),
    in the shape of a completion: whole, or as a stream of chunks."""
    reply = str(started.reply)
    head = {
        "id": f"chatcmpl-{started.generation_id}",
        "created": int(time.time()),
        "model": started.model,
        "system_fingerprint": None,
    }
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    knowledge = knowledge_json(started.knowledge, reply)
    if not request.stream:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": reply, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
        body = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return JsonResponse({**body, "knowledge": knowledge})

    def chunk(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**head, "object": "chat.completion.chunk", "choices": [choice]}

    async def events() -> AsyncIterator[bytes]:
        first = chunk({"role": "assistant", "content": "", "refusal": None}, None)
        yield sse({**first, "knowledge": knowledge})
        yield sse(chunk({"content": reply}, None))
        yield sse(chunk({}, "stop"))
        if request.include_usage:
            yield sse({**chunk({}, None), "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


@_api_view
async def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Any other path under ``/v1/``: 404 in OpenAI's shape, not a page;
    without a valid key, 401 as on every other path."""
    try:
        await _key(request)
    except ApiError as error:
        return error_response(error)
    return error_response(
        ApiError(
            404,
            f"Invalid URL ({request.method} {request.path}).",
            code="unknown_url",
        )
    )


class _LegacyLogprobs:
    """One answer's log-probabilities in the text completions shape:
    tokens, token_logprobs, top_logprobs (token -> logprob) and each
    token's offset in the answer's text."""

    def __init__(self) -> None:
        self.offset = 0

    def take(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for entry in entries:
            out["tokens"].append(entry["token"])
            out["token_logprobs"].append(entry["logprob"])
            top: dict[str, float] = {}
            for alternative in entry.get("top_logprobs") or []:
                top.setdefault(alternative["token"], alternative["logprob"])
            out["top_logprobs"].append(top if entry["logprob"] is not None else None)
            out["text_offset"].append(self.offset)
            self.offset += len(entry["token"])
        return out


def _text_chunk(call: Call, index: int, text: str, reason: str | None, logprobs: Any) -> bytes:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
    return sse(call.envelope("text_completion", choices=[choice]))


async def _text_stream(call: Call) -> AsyncIterator[bytes]:
    count = call.request.n
    wants_logprobs = call.request.logprobs
    done = False
    offsets = [_LegacyLogprobs() for _ in range(count)]
    waiting: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    prompts: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    # With echo, each answer opens with the prompt (and its tokens).
    to_echo = [call.request.echo] * count

    def logprobs_of(entries: list[dict[str, Any]], index: int) -> Any:
        return offsets[index].take(entries) if wants_logprobs else None

    try:
        async for kind, index, value in call.events():
            if kind == "prompt_logprobs":
                prompts[index].extend(value)
                continue
            if kind == "reset":
                continue
            if kind == "logprobs":
                waiting[index].extend(value)
                continue
            echoes = range(count) if kind == "end" else [index]
            for choice in echoes:
                if to_echo[choice]:
                    to_echo[choice] = False
                    entries = prompts[choice] or prompts[0]
                    prompt = call.request.prompt or ""
                    yield _text_chunk(call, choice, prompt, None, logprobs_of(entries, choice))
            if kind == "text":
                yield _text_chunk(call, index, value, None, logprobs_of(waiting[index], index))
                waiting[index] = []
                continue
            done = True
            if value.get("finish_reason") == "error":
                error = ApiError(500, call.error, type="server_error", code="generation_failed")
                yield sse(error.body())
            else:
                for choice, reason in enumerate(finish_reasons(value, count)):
                    tail = logprobs_of(waiting[choice], choice)
                    yield _text_chunk(call, choice, "", reason, tail)
                if call.request.include_usage:
                    yield sse(
                        {
                            "id": call.id,
                            "object": "text_completion",
                            "created": call.created,
                            "model": call.started.model,
                            "choices": [],
                            "usage": call.usage(),
                        }
                    )
            yield b"data: [DONE]\n\n"
            break
    except TimeoutError:
        done = True
        call.error = "no answer from the model service in time"
        yield sse(ApiError(504, call.error, type="server_error", code="timeout").body())
        yield b"data: [DONE]\n\n"
    finally:
        await call.follower.aclose()
        if not done:
            call.final = call.final or {"finish_reason": "cancelled"}
            call.error = call.error or "client disconnected"
        await call.record(status_code=200 if not call.error or done else 499)


async def _text_complete(call: Call) -> HttpResponse:
    count = call.request.n
    answers = await gather(call)
    if isinstance(answers, HttpResponse):
        return answers
    final, texts = answers.final, answers.texts
    entries, prompt_entries = answers.logprobs, answers.prompts
    choices = []
    echo = call.request.prompt if call.request.echo else ""
    for index, reason in enumerate(finish_reasons(final, count)):
        text = "".join(texts[index])
        if reason == "content_filter" and final.get("notice"):
            text = str(final["notice"])
        logprobs = None
        if call.request.logprobs:
            # Every answer repeats the prompt the first one was given.
            echoed = prompt_entries[index] or prompt_entries[0] if echo else []
            logprobs = _LegacyLogprobs().take([*echoed, *entries[index]])
        choices.append(
            {"index": index, "text": (echo or "") + text, "logprobs": logprobs,
             "finish_reason": reason}
        )  # fmt: skip
    return JsonResponse(call.envelope("text_completion", choices=choices, usage=call.usage()))


@_api_view
async def completions(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/completions``: plain text continued, OpenAI's legacy shape."""
    return await _completion_call(request, text=True)


@_api_view
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await _completion_call(request, text=False)


async def _completion_call(request: HttpRequest, *, text: bool) -> HttpResponseBase:
    if request.method != "POST":
        return error_response(ApiError(405, "Use POST.", code="method_not_allowed"))
    try:
        key = await _key(request)
        try:
            body = json_body(request, max_bytes=MAX_BODY_BYTES)
        except BodyError as exc:
            raise ApiError(exc.status, exc.message) from None
        parse = text_completion_request_parse if text else completion_request_parse
        parsed = await sync_to_async(parse)(key=key, body=body)
        await sync_to_async(api_limits_check)(key=key)
        # Before the worker check, so that a refusal does not depend on it;
        # completion_start checks again under the user's lock.
        await sync_to_async(user_generation_check)(user_id=key.user_id)
        if await sync_to_async(workers_live_count)() == 0:
            raise ApiError(
                503,
                "No inference worker is running; try again shortly.",
                type="server_error",
                code="service_unavailable",
            )
        # Apart from the shared thread: it runs the content filter.
        started = await db_apart(completion_start)(key=key, request=parsed)
    except ApiLimitError as limit:
        return error_response(
            ApiError(429, limit.message, type="requests", code=limit.code),
            retry_after=limit.retry_after,
        )
    except LimitError as limit:
        code = USER_LIMIT_CODES.get(limit.code, limit.code)
        wait = limit.retry_after if limit.retry_after is not None else RUNNING_RETRY_AFTER_S
        return error_response(
            ApiError(429, limit.message, type="requests", code=code),
            retry_after=max(1, round(wait)),
        )
    except ApiError as error:
        return error_response(error)
    if started.reply is not None:
        return _reply_now(started, parsed)
    call = Call(started, parsed)
    refused = await call.opening()
    if refused is not None:
        return error_response(refused)
    response: HttpResponseBase
    if not parsed.stream:
        response = await (_text_complete(call) if text else _complete(call))
    else:
        stream = _text_stream(call) if text else _stream(call)
        response = StreamingHttpResponse(stream, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    if settings.API_STORE_CONVERSATIONS and not started.stored:
        # The user holds CHAT_MAX_CONVERSATIONS_PER_USER conversations.
        response["x-conversation-stored"] = "false"
    return response
