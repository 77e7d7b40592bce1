"""One OpenAI-compatible call in flight: reading its generation's events,
recording it, and the response pieces chat and text completions share
(the body's envelope, finish reasons, server-sent events, errors)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse

from chat.services.completions import ApiError, CompletionRequest, Started, completion_record
from chat.streams import CancelPolicy, GenerationFollower, Notice, Reset
from inference.client import StreamBroken
from inference.protocol import StreamEvent

logger = logging.getLogger(__name__)

#: Seconds without an event before a call gives up on the worker.
IDLE_TIMEOUT_S = 120.0
#: Times a call without streaming reads a broken stream again from the
#: start before it gives up with an error.
MAX_REPLAYS = 2


#: Statuses a retry may cure: OpenAI's clients retry these unless told not to.
RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
#: 429 codes that the same call cannot get past by waiting a moment.
FINAL_429_CODES = {"insufficient_quota"}


def error_response(error: ApiError, *, retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if error.status not in RETRYABLE or error.code in FINAL_429_CODES:
        # The official clients retry 429s and 5xx three times by default;
        # a refusal that waiting cannot change says so.
        response["x-should-retry"] = "false"
    return response


class Call:
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


def finish_reason(final: dict[str, Any]) -> str:
    reason = str(final.get("finish_reason") or "stop")
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def finish_reasons(final: dict[str, Any], count: int) -> list[str]:
    """Each answer's finish reason (a request for several has one each)."""
    reasons = [finish_reason(final)] * count
    for choice in final.get("choices") or []:
        index = choice.get("index") if isinstance(choice, dict) else None
        if isinstance(index, int) and 0 <= index < count:
            reasons[index] = finish_reason(choice)
    return reasons


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass
class Answers:
    """What a call without streaming gathered: each answer's text pieces,
    its tokens' log-probabilities and its prompt's (echo)."""

    texts: list[list[str]]
    logprobs: list[list[dict[str, Any]]]
    prompts: list[list[dict[str, Any]]]
    final: dict[str, Any]


async def gather(call: Call) -> Answers | HttpResponse:
    """Read a call to its end; an error response when it failed."""
    count = call.request.n

    def empty() -> Answers:
        return Answers(
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
        return error_response(ApiError(504, call.error, type="server_error", code="timeout"))
    except asyncio.CancelledError:
        await call.left()
        raise
    answers.final = call.final or {}
    if answers.final.get("finish_reason") == "error":
        await call.record(status_code=500)
        return error_response(
            ApiError(500, call.error, type="server_error", code="generation_failed")
        )
    await call.record()
    return answers
