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

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from chat.db import db_apart
from chat.models import ApiKey
from chat.services.api_keys import ApiLimitError, api_key_authenticate, api_limits_check
from chat.services.completions import (
    DEFAULT_ALIAS,
    ApiError,
    CompletionRequest,
    Started,
    api_models_for_key,
    completion_record,
    completion_request_parse,
    completion_start,
    text_completion_request_parse,
)
from chat.services.limits import LimitError, user_generation_check
from chat.streams import CancelPolicy, GenerationFollower, Notice, Reset
from chat.views.body import BodyError, json_body
from inference.client import StreamBroken, workers_live_count
from inference.protocol import StreamEvent

logger = logging.getLogger(__name__)

#: Seconds without an event before a call gives up on the worker.
IDLE_TIMEOUT_S = 120.0
#: Times a call without streaming reads a broken stream again from the
#: start before it gives up with an error.
MAX_REPLAYS = 2
#: Largest request body.
MAX_BODY_BYTES = 2_000_000


#: The API's codes for the user's limits (shared with the chat page).
USER_LIMIT_CODES = {
    "rate_limited": "rate_limit_exceeded",
    "too_many_running": "too_many_concurrent_requests",
}
#: Retry-After when the user's answers at once are spent: a guess, since
#: it depends on when one of them ends.
RUNNING_RETRY_AFTER_S = 5
#: Statuses a retry may cure: OpenAI's clients retry these unless told not to.
RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
#: 429 codes that the same call cannot get past by waiting a moment.
FINAL_429_CODES = {"insufficient_quota"}


def _error(error: ApiError, *, retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if error.status not in RETRYABLE or error.code in FINAL_429_CODES:
        # The official clients retry 429s and 5xx three times by default;
        # a refusal that waiting cannot change says so.
        response["x-should-retry"] = "false"
    return response


def _api_view(view: Callable[..., Awaitable[HttpResponseBase]]) -> Callable[..., Any]:
    """Give every response an ``X-Request-Id`` and turn an unexpected
    failure into a 500 in OpenAI's error shape instead of a traceback."""

    @functools.wraps(view)
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        request_id = f"req_{uuid.uuid4().hex}"
        response: HttpResponseBase
        try:
            response = await view(request, *args, **kwargs)
        except Exception:
            logger.exception("API request %s failed", request_id)
            response = _error(
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
        return _error(ApiError(405, "Use GET.", code="method_not_allowed"))
    try:
        key = await _key(request)
    except ApiError as error:
        return _error(error)
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
    return _error(
        ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    )


class _Call:
    """One completion in flight: reads the generation's events and keeps
    what the usage record needs."""

    def __init__(self, started: Started, request: CompletionRequest) -> None:
        self.started = started
        self.request = request
        self.began = time.monotonic()
        self.first_text_at: float | None = None
        self.final: dict[str, Any] | None = None
        self.error = ""
        self.created = int(time.time())
        prefix = "cmpl" if request.prompt is not None else "chatcmpl"
        self.id = f"{prefix}-{started.generation_id}"
        # A client that goes away mid-answer frees the engine slot at once.
        # Without streaming, a stream that lost events is read again from
        # the start; a stream already sent in part cannot be taken back.
        self.follower = GenerationFollower(
            started.generation_id,
            idle_timeout_s=IDLE_TIMEOUT_S,
            max_resets=0 if request.stream else MAX_REPLAYS,
            cancel=CancelPolicy.IF_LEFT,
        )
        # What ``opening`` read first: a notice, or the stream broken.
        self._first: Notice | StreamBroken | None = None

    async def opening(self) -> ApiError | None:
        """Wait until the worker starts the generation or refuses it, so
        that a refusal the caller can act on (a prompt longer than the
        context) is an error status before any byte of an answer. Return
        that refusal, or None to go on reading."""
        try:
            first = await anext(self.follower)
        except StopAsyncIteration:
            return None
        except StreamBroken as broken:
            self._first = broken
            return None
        except asyncio.CancelledError:
            await self.left()
            raise
        except TimeoutError:
            self.error = "no answer from the model service in time"
            await self.record(status_code=504)
            return ApiError(504, self.error, type="server_error", code="timeout")
        if (
            isinstance(first, StreamEvent)
            and first.type == "error"
            and first.data.get("code") == "context_length_exceeded"
        ):
            await self.follower.aclose()
            self.final = {"finish_reason": "error", **first.data}
            self.error = str(first.data.get("error") or "")
            await self.record(status_code=400)
            return ApiError(
                400,
                f"This model's context is too short for these messages: {self.error}.",
                param="messages",
                code="context_length_exceeded",
            )
        self._first = first
        return None

    async def left(self) -> None:
        """The client went away: cancel the generation and record it."""
        await self.follower.aclose()
        self.final = {"finish_reason": "cancelled"}
        self.error = "client disconnected"
        await self.record(status_code=499)

    async def events(self) -> AsyncIterator[tuple[str, int, Any]]:
        """("text", choice, str) and ("logprobs", choice, list) pieces,
        then ("end", 0, final data); ("reset", 0, None) when the stream lost
        events in transit and every piece comes again from the start. A
        stream that keeps losing them ends in an error."""
        first, self._first = self._first, None
        try:
            if isinstance(first, StreamBroken):
                raise first
            if first is not None:
                for item in self._translate(first):
                    yield item
            async for notice in self.follower:
                for item in self._translate(notice):
                    yield item
        except StreamBroken as broken:
            logger.warning("Completion %s: %s", self.id, broken)
            self.error = "the answer's stream lost events in transit"
            self.final = {"finish_reason": "error", "error": self.error}
            yield "end", 0, self.final

    def _translate(self, event: Notice) -> list[tuple[str, int, Any]]:
        """What a generation event means for the answer: text, the end, a
        reset, or nothing (a start)."""
        if isinstance(event, Reset):
            return [("reset", 0, None)]
        if not isinstance(event, StreamEvent):
            return []
        if event.type == "text":
            items: list[tuple[str, int, Any]] = []
            index = event.data.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < self.request.n:
                return []
            prompt_logprobs = event.data.get("prompt_logprobs")
            if isinstance(prompt_logprobs, list) and prompt_logprobs:
                items.append(("prompt_logprobs", index, prompt_logprobs))
            logprobs = event.data.get("logprobs")
            if self.request.logprobs and isinstance(logprobs, list) and logprobs:
                items.append(("logprobs", index, logprobs))
            if event.text:
                if self.first_text_at is None:
                    self.first_text_at = time.monotonic()
                items.append(("text", index, event.text))
            return items
        if event.type == "done":
            self.final = dict(event.data)
            return [("end", 0, self.final)]
        if event.type == "error":
            self.final = {"finish_reason": "error", **event.data}
            self.error = str(event.data.get("error") or "generation failed")
            return [("end", 0, self.final)]
        return []

    async def record(self, *, status_code: int = 200) -> None:
        ttft = self.first_text_at - self.began if self.first_text_at else None
        await sync_to_async(completion_record)(
            record_id=self.started.record_id,
            # A call that ends without the worker's word (a timeout) is
            # over all the same: it no longer counts as running.
            final=self.final or {"finish_reason": "error"},
            ttft_s=ttft,
            duration_s=time.monotonic() - self.began,
            status_code=status_code,
            error=self.error,
        )

    def envelope(self, kind: str, **rest: Any) -> dict[str, Any]:
        """A response body of this call: its id, object kind, time and model."""
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.started.model,
            "system_fingerprint": None,
            **rest,
        }

    def usage(self) -> dict[str, int]:
        usage = (self.final or {}).get("usage") or {}
        prompt, completion = (
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None,
        logprobs: list[dict[str, Any]] | None = None,
        index: int = 0,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.started.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": index,
                    "delta": delta,
                    "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if self.request.include_usage:
            body["usage"] = None
        return body


def _finish_reason(final: dict[str, Any]) -> str:
    reason = str(final.get("finish_reason") or "stop")
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def _finish_reasons(final: dict[str, Any], count: int) -> list[str]:
    """Each answer's finish reason (a request for several has one each)."""
    reasons = [_finish_reason(final)] * count
    for choice in final.get("choices") or []:
        index = choice.get("index") if isinstance(choice, dict) else None
        if isinstance(index, int) and 0 <= index < count:
            reasons[index] = _finish_reason(choice)
    return reasons


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(call: _Call) -> AsyncIterator[bytes]:
    done = False
    try:
        count = call.request.n
        for index in range(count):
            opening = {"role": "assistant", "content": "", "refusal": None}
            yield _sse(call.chunk(opening, None, index=index))
        # Tokens whose text is still held back come with the next text.
        waiting: list[list[dict[str, Any]]] = [[] for _ in range(count)]
        async for kind, index, value in call.events():
            if kind == "logprobs":
                waiting[index].extend(value)
                continue
            if kind == "text":
                yield _sse(call.chunk({"content": value}, None, waiting[index], index=index))
                waiting[index] = []
                continue
            if kind == "reset":
                waiting = [[] for _ in range(count)]
                continue
            done = True
            if value.get("finish_reason") == "error":
                error = ApiError(500, call.error, type="server_error", code="generation_failed")
                yield _sse(error.body())
            else:
                for index, reason in enumerate(_finish_reasons(value, count)):
                    yield _sse(call.chunk({}, reason, waiting[index], index=index))
                if call.request.include_usage:
                    usage_chunk = call.chunk({}, None)
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = call.usage()
                    yield _sse(usage_chunk)
            yield b"data: [DONE]\n\n"
            break
    except TimeoutError:
        done = True
        call.error = "no answer from the model service in time"
        error = ApiError(504, call.error, type="server_error", code="timeout")
        yield _sse(error.body())
        yield b"data: [DONE]\n\n"
    finally:
        # A client that went away cancels the generation.
        await call.follower.aclose()
        if not done:
            call.final = call.final or {"finish_reason": "cancelled"}
            call.error = call.error or "client disconnected"
        await call.record(status_code=200 if not call.error or done else 499)


@dataclass
class _Answers:
    """What a call without streaming gathered: each answer's text pieces,
    its tokens' log-probabilities and its prompt's (echo)."""

    texts: list[list[str]]
    logprobs: list[list[dict[str, Any]]]
    prompts: list[list[dict[str, Any]]]
    final: dict[str, Any]


async def _gather(call: _Call) -> _Answers | HttpResponse:
    """Read a call to its end; an error response when it failed."""
    count = call.request.n

    def empty() -> _Answers:
        return _Answers(
            [[] for _ in range(count)], [[] for _ in range(count)], [[] for _ in range(count)], {}
        )

    answers = empty()
    try:
        async for kind, index, value in call.events():
            if kind == "text":
                answers.texts[index].append(value)
            elif kind == "logprobs":
                answers.logprobs[index].extend(value)
            elif kind == "prompt_logprobs":
                answers.prompts[index].extend(value)
            elif kind == "reset":
                answers = empty()
    except TimeoutError:
        call.error = "no answer from the model service in time"
        await call.record(status_code=504)
        return _error(ApiError(504, call.error, type="server_error", code="timeout"))
    except asyncio.CancelledError:
        await call.left()
        raise
    answers.final = call.final or {}
    if answers.final.get("finish_reason") == "error":
        await call.record(status_code=500)
        return _error(ApiError(500, call.error, type="server_error", code="generation_failed"))
    await call.record()
    return answers


async def _complete(call: _Call) -> HttpResponse:
    count = call.request.n
    answers = await _gather(call)
    if isinstance(answers, HttpResponse):
        return answers
    final, texts, logprobs = answers.final, answers.texts, answers.logprobs
    choices = []
    for index, reason in enumerate(_finish_reasons(final, count)):
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
    return JsonResponse(call.envelope("chat.completion", choices=choices, usage=call.usage()))


@_api_view
async def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Any other path under ``/v1/``: 404 in OpenAI's shape, not a page;
    without a valid key, 401 as on every other path."""
    try:
        await _key(request)
    except ApiError as error:
        return _error(error)
    return _error(
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


def _legacy_merge(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    if into is None:
        return more
    for name, values in more.items():
        into[name].extend(values)
    return into


def _text_chunk(call: _Call, index: int, text: str, reason: str | None, logprobs: Any) -> bytes:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
    return _sse(call.envelope("text_completion", choices=[choice]))


async def _text_stream(call: _Call) -> AsyncIterator[bytes]:
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
                yield _sse(error.body())
            else:
                for choice, reason in enumerate(_finish_reasons(value, count)):
                    tail = logprobs_of(waiting[choice], choice)
                    yield _text_chunk(call, choice, "", reason, tail)
                if call.request.include_usage:
                    yield _sse(
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
        yield _sse(ApiError(504, call.error, type="server_error", code="timeout").body())
        yield b"data: [DONE]\n\n"
    finally:
        await call.follower.aclose()
        if not done:
            call.final = call.final or {"finish_reason": "cancelled"}
            call.error = call.error or "client disconnected"
        await call.record(status_code=200 if not call.error or done else 499)


async def _text_complete(call: _Call) -> HttpResponse:
    count = call.request.n
    answers = await _gather(call)
    if isinstance(answers, HttpResponse):
        return answers
    final, texts = answers.final, answers.texts
    entries, prompt_entries = answers.logprobs, answers.prompts
    choices = []
    echo = call.request.prompt if call.request.echo else ""
    for index, reason in enumerate(_finish_reasons(final, count)):
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
        return _error(ApiError(405, "Use POST.", code="method_not_allowed"))
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
        return _error(
            ApiError(429, limit.message, type="requests", code=limit.code),
            retry_after=limit.retry_after,
        )
    except LimitError as limit:
        code = USER_LIMIT_CODES.get(limit.code, limit.code)
        wait = limit.retry_after if limit.retry_after is not None else RUNNING_RETRY_AFTER_S
        return _error(
            ApiError(429, limit.message, type="requests", code=code),
            retry_after=max(1, round(wait)),
        )
    except ApiError as error:
        return _error(error)
    call = _Call(started, parsed)
    refused = await call.opening()
    if refused is not None:
        return _error(refused)
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
