"""The requests a worker runs, from claim to acknowledgement.

A claimed request starts in the engine of the version it asks for (after
the text an earlier worker already streamed, if any), waits for that
version if it is still loading, or ends at once with an error event. The
engine's events go to the generation's stream; a finished generation is
handed to ``on_finished`` and its request acknowledged and deleted. While
Redis is away, what cannot be written or acknowledged is held here until
recovery catches up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from inference.detokenize import IncrementalDetokenizer, token_bytes
from inference.engine_types import Event, OutputFilter, RequestError, TokenLogprob
from inference.metrics import WorkerMetrics
from inference.protocol import SamplingError, SamplingParams
from inference.worker.link import REDIS_DOWN, RedisLink
from inference.worker.streams import Inflight, StreamWriter
from inference.worker.versions import NO_VERSION, Versions, VersionSpec

logger = logging.getLogger(__name__)

#: A request as claimed from the requests stream: (entry id, fields).
Entry = tuple[str, dict[str, str]]


def request_id(fields: dict[str, str]) -> str:
    """The generation id a request's fields name; raise KeyError,
    TypeError or ValueError when they name none."""
    return str(json.loads(fields["payload"])["id"])


class Generations:
    """The generations this worker runs and the requests it holds back."""

    def __init__(
        self,
        *,
        link: RedisLink,
        versions: Versions,
        metrics: WorkerMetrics,
        output_filter_factory: Callable[[dict[str, Any]], OutputFilter | None] | None,
        on_finished: Callable[[str, dict[str, Any], str], None] | None,
    ) -> None:
        self.link = link
        self.versions = versions
        self.metrics = metrics
        self._output_filter_factory = output_filter_factory
        self._on_finished = on_finished
        self.streams = StreamWriter(link, on_taken=self.drop)
        self.inflight: dict[str, Inflight] = {}
        # Requests claimed for a version still loading, by version id.
        self.parked: dict[int, list[Entry]] = {}
        # Held while Redis is away: finished generations whose events are
        # not all written yet, requests claimed but not started, and
        # requests to acknowledge.
        self.backlog: dict[str, Inflight] = {}
        self.unstarted: list[Entry] = []
        self.retire_later: list[str] = []

    def parked_count(self) -> int:
        return sum(len(p) for p in self.parked.values())

    def parked_ids(self) -> list[str]:
        ids = []
        for parked in list(self.parked.values()):
            for _entry_id, fields in parked:
                try:
                    ids.append(request_id(fields))
                except (KeyError, TypeError, ValueError):
                    continue
        return ids

    def entry_ids(self) -> list[str]:
        """The requests this worker has claimed and not finished."""
        entry_ids = [item.entry_id for item in self.inflight.values()]
        entry_ids += [entry_id for parked in self.parked.values() for entry_id, _f in parked]
        entry_ids += [entry_id for entry_id, _fields in self.unstarted]
        return entry_ids

    def start(self, entry_id: str, fields: dict[str, str]) -> None:
        """Start a claimed request, park it until its version is loaded,
        or end it with an error event."""
        try:
            payload = json.loads(fields["payload"])
            generation_id = str(payload["id"])
        except (KeyError, TypeError, ValueError):
            logger.error("Dropping malformed request %s", entry_id)
            self.retire(entry_id)
            return
        version: VersionSpec | None = None
        refusal: RequestError | None = None
        try:
            version = self.versions.version_for(payload.get("model_version_id"))
        except RequestError as exc:
            refusal = exc
        if version is not None:
            load_error = self.versions.load_errors.get(version.id)
            if load_error is not None:
                refusal = RequestError(
                    f"model version {version.name} cannot be loaded: {load_error}"
                )
            elif version.id not in self.versions.engines:
                # Wait for the version, still claimed by this worker.
                self.parked.setdefault(version.id, []).append((entry_id, fields))
                self.versions.load_start(version)
                return
        # Continue after what an earlier worker already streamed, if any.
        try:
            resumed = self.streams.resume(generation_id, entry_id, version or NO_VERSION)
        except REDIS_DOWN as exc:
            # Still claimed by this worker (renewed): started once Redis is back.
            self.link.lost_mark(exc)
            self.unstarted.append((entry_id, fields))
            return
        if resumed is None:  # the answer has ended already
            self.retire(entry_id)
            return
        item, streamed = resumed
        item.claim_wait_s = _since_queued(entry_id)
        try:
            if refusal is not None:
                raise refusal
            self._submit(item, payload, streamed)
        except Exception as failure:
            # Whatever the request holds (bad parameters, an unknown version,
            # a conversation the chat template rejects), it ends here with
            # an error event rather than coming back forever.
            if not isinstance(failure, RequestError | SamplingError | TypeError):
                logger.exception("Request %s failed to start", generation_id)
            self.inflight.pop(generation_id, None)
            item.text, item.output_filter, item.output_filters = [], None, []
            final = {"finish_reason": "error", "error": str(failure)}
            code = getattr(failure, "code", "")
            if code:
                # Lets the API answer a prompt too long for the context
                # with a 400 before it sends anything.
                final["code"] = code
            self.streams.publish(item, "error", **final)
            self.complete(item, final)
            return
        self.streams.publish(
            item, "start", model_version=item.version.name, worker=self.link.worker_id
        )

    def _submit(self, item: Inflight, payload: dict[str, Any], streamed: str) -> None:
        """Put item's request into its version's engine, after the text
        already streamed."""
        params = SamplingParams.from_dict(payload.get("params"))
        engine = self.versions.engines[item.version.id]
        if streamed and params.rows > 1:
            raise RequestError(
                "the worker running this request stopped after it began to answer; a request "
                "for several answers is not resumed: send it again"
            )
        # Checked by the engine: what it refuses ends the request.
        text_prompt = payload.get("prompt")
        if text_prompt is not None:
            # A completion of plain text: no chat template.
            if not isinstance(text_prompt, str) or not text_prompt:
                raise RequestError("prompt must be non-empty text")
            prompt = list(engine.tokenizer.encode(text_prompt, add_special_tokens=True))
        else:
            messages: Any = payload.get("messages")
            prompt = engine.prompt_ids(messages, continue_final=params.continue_final_message)
        if streamed:
            prompt += engine.tokenizer.encode(streamed, add_special_tokens=False)
            produced = max(len(engine.tokenizer.encode(streamed, add_special_tokens=False)), 1)
            params = dataclasses.replace(
                params, max_new_tokens=max(params.max_new_tokens - produced, 1)
            )
        factory = self._output_filter_factory
        item.output_filters = [factory(payload) if factory else None for _ in range(params.n)]
        item.output_filter = item.output_filters[0]
        item.choices = params.n
        # A stored answer keeps its tokens for its token view.
        item.tokens_kept = payload.get("message") is not None and params.logprobs is not None
        item.text = [streamed]
        self.inflight[item.generation_id] = item
        engine.submit(
            item.generation_id, prompt=prompt, params=params, output_filters=item.output_filters
        )

    def unpark(self, version_id: int) -> None:
        """Start the requests that waited for a version now loaded (or
        that failed to load: they end with an error event)."""
        for entry_id, fields in self.parked.pop(version_id, []):
            self.start(entry_id, fields)

    def step(self) -> bool:
        """One engine step for every engine with work; False when idle."""
        busy = False
        for engine in list(self.versions.engines.values()):
            if engine.has_work():
                busy = True
                for event in engine.step():
                    self.deliver(event)
        if busy:
            self._positions_publish()
        return busy

    def cancels_apply(self) -> None:
        ids = list(self.inflight)
        if not ids:
            return
        flags = self.link.redis.mget([self.link.keys.cancel(i) for i in ids])
        for generation_id, flag in zip(ids, flags, strict=True):
            if flag is not None:
                item = self.inflight[generation_id]
                self.versions.engines[item.version.id].cancel(generation_id)

    def _positions_publish(self) -> None:
        for engine in self.versions.engines.values():
            for position, waiting in enumerate(engine.waiting, start=1):
                item = self.inflight.get(waiting.id)
                if item is not None and item.position != position:
                    item.position = position
                    self.streams.publish(item, "queued", position=position)

    def deliver(self, event: Event) -> None:
        item = self.inflight.get(event.request_id)
        if item is None:
            return
        extra: dict[str, Any] = {}
        if event.logprobs:
            tokenizer = self.versions.engines[item.version.id].tokenizer
            extra["logprobs"] = logprobs_json(tokenizer, event.logprobs)
            if event.index == 0 and item.tokens_kept:
                item.tokens.extend(event.logprobs)
        if event.prompt_logprobs:
            tokenizer = self.versions.engines[item.version.id].tokenizer
            extra["prompt_logprobs"] = logprobs_json(tokenizer, event.prompt_logprobs)
        if item.choices > 1:
            # Which answer; the first is the one a stored conversation keeps.
            extra["index"] = event.index
        if event.text or event.logprobs or event.prompt_logprobs:
            if event.index == 0:
                item.text.append(event.text)
            if not self.streams.publish(item, "text", text=event.text, **extra):
                # Another worker continues this generation: let it.
                self.inflight.pop(event.request_id, None)
                self.versions.engines[item.version.id].cancel(event.request_id)
                return
        if not event.finished:
            return
        if item.choices > 1 and not event.error:
            # Done once every answer is.
            item.ends[event.index] = event
            if len(item.ends) < item.choices:
                return
        completion_tokens = sum(e.completion_tokens for e in item.ends.values()) or (
            event.completion_tokens
        )
        first = item.ends.get(0, event)
        final: dict[str, Any]
        if event.error:
            final = {"finish_reason": "error", "error": event.error}
            owned = self.streams.publish(item, "error", **final)
            if item.choices > 1:
                # One answer failed: the request has, and its others stop.
                self.versions.engines[item.version.id].cancel(event.request_id)
        else:
            final = {
                "finish_reason": first.finish_reason,
                "usage": {
                    "prompt_tokens": event.prompt_tokens,
                    "completion_tokens": completion_tokens,
                },
                "timings": _with_wait(first.timings, item.claim_wait_s),
                "model_version": item.version.name,
                "model_version_id": item.version.id,
            }
            if item.choices > 1:
                final["choices"] = [
                    {
                        "index": index,
                        "finish_reason": end.finish_reason,
                        "completion_tokens": end.completion_tokens,
                    }
                    for index, end in sorted(item.ends.items())
                ]
            filtered = _filter_reports(item.output_filters or [item.output_filter])
            if filtered.get("notice"):
                final["notice"] = filtered["notice"]
            if item.tokens and item.tokens_kept:
                # A chat answer's tokens, stored with its text by whoever
                # reads this end first.
                engine = self.versions.engines[item.version.id]
                final["tokens"] = tokens_compact(engine, item.tokens)
            owned = self.streams.publish(item, "done", **final)
            if filtered.get("hits"):
                # Kept out of the stream that clients read: excerpts quote
                # the filtered text.
                final = {**final, "filter_hits": filtered["hits"]}
        self.inflight.pop(event.request_id, None)
        if not owned:
            # Another worker runs it now: it acknowledges and stores it.
            return
        self.metrics.finished(
            finish_reason=final["finish_reason"],
            prompt_tokens=event.prompt_tokens,
            completion_tokens=completion_tokens,
            timings=first.timings,
            gaps=first.token_gaps or (),
        )
        self.complete(item, final)

    def retire(self, entry_id: str) -> None:
        """Acknowledge a request and remove it: the stream holds only
        unfinished work. While Redis is away, do it once it is back."""
        if self.link.lost:
            self.retire_later.append(entry_id)
            return
        keys = self.link.keys
        try:
            pipe = self.link.redis.pipeline(transaction=False)
            pipe.xack(keys.requests, keys.group, entry_id)
            pipe.xdel(keys.requests, entry_id)
            pipe.execute()
        except REDIS_DOWN as exc:
            self.link.lost_mark(exc)
            self.retire_later.append(entry_id)

    def complete(self, item: Inflight, final: dict[str, Any]) -> None:
        if item.unpublished:
            # Written once Redis is back, with the request acknowledged then.
            self.backlog[item.generation_id] = item
        self.retire(item.entry_id)
        if not self.link.lost:
            try:
                self.link.redis.delete(self.link.keys.cancel(item.generation_id))
            except REDIS_DOWN as exc:
                self.link.lost_mark(exc)
        if self._on_finished is not None:
            try:
                self._on_finished(item.generation_id, final, "".join(item.text))
            except Exception:
                logger.exception("Storing generation %s failed", item.generation_id)

    def drop(self, item: Inflight) -> None:
        """Forget a generation another worker has taken over."""
        self.backlog.pop(item.generation_id, None)
        if item.entry_id in self.retire_later:
            self.retire_later.remove(item.entry_id)
        if self.inflight.pop(item.generation_id, None) is not None:
            engine = self.versions.engines.get(item.version.id)
            if engine is not None:
                engine.cancel(item.generation_id)


def _filter_reports(filters: list[Any]) -> dict[str, Any]:
    """What the output filters of a request's answers did: the first
    notice, and every hit."""
    notice = ""
    hits: list[Any] = []
    for output_filter in filters:
        report = getattr(output_filter, "report", None)
        if report is None:
            continue
        filtered = report()
        notice = notice or filtered.get("notice", "")
        hits.extend(filtered.get("hits") or [])
    out: dict[str, Any] = {}
    if notice:
        out["notice"] = notice
    if hits:
        out["hits"] = hits
    return out


def _since_queued(entry_id: str) -> float | None:
    """Seconds since the request entered the requests stream: its entry
    id starts with the milliseconds Redis stamped it with."""
    try:
        queued = int(entry_id.split("-", 1)[0]) / 1000
    except ValueError:
        return None
    return round(max(time.time() - queued, 0.0), 6)


def _with_wait(timings: dict[str, Any] | None, wait: float | None) -> dict[str, Any] | None:
    if timings is None or wait is None:
        return timings
    return {**timings, "claim_wait_s": wait}


def _token_json(tokenizer: Any, token: int, logprob: float) -> dict[str, Any]:
    raw = token_bytes(tokenizer, token)
    return {
        "token": raw.decode("utf-8", errors="replace"),
        # A prompt's first token has none.
        "logprob": None if math.isnan(logprob) else logprob,
        "bytes": list(raw),
    }


def _token_compact(tokenizer: Any, token: int) -> tuple[str, str]:
    raw = token_bytes(tokenizer, token)
    text = raw.decode("utf-8", errors="replace")
    # The bytes only where the text alone cannot give them back (a piece
    # of a character split over tokens).
    return text, (raw.hex() if "\ufffd" in text else "")


def tokens_compact(engine: Any, entries: list[TokenLogprob]) -> list[list[Any]]:
    """An answer's tokens as stored with it: ``[text, logprob, [[text,
    logprob], ...alternatives], ""]``, end tokens left out. Each token's
    text is what it added to the answer as the engine's detokenizer wrote
    it (a piece of a character adds nothing until the character is whole;
    cleaned-up spaces are gone), so the texts spell the answer exactly."""
    tokenizer = engine.tokenizer
    detok = IncrementalDetokenizer(tokenizer)
    out: list[list[Any]] = []
    for entry in entries:
        if entry.token in engine.eos_ids:
            continue
        top = [[_token_compact(tokenizer, t)[0], round(lp, 4)] for t, lp in entry.top]
        out.append([detok.push(entry.token), round(entry.logprob, 4), top, ""])
    if out:
        out[-1][0] += detok.flush()
    return out


def logprobs_json(tokenizer: Any, entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    """Log-probabilities as OpenAI's ``logprobs.content`` items: each
    token's text, bytes and log-probability, with its top alternatives."""
    return [
        {
            **_token_json(tokenizer, entry.token, entry.logprob),
            "top_logprobs": [_token_json(tokenizer, t, lp) for t, lp in entry.top],
        }
        for entry in entries
    ]
