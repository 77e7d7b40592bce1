"""The generation engine: iteration-level (continuous) batching over a
transformers causal LM. No Django, Redis or Channels here.

Every ``step()``:

1. applies cancellations and admits waiting requests (FIFO) to free slots;
2. decodes one token for every running request in one batched forward
   (decode first, so running streams never wait behind a long prompt);
3. spends what is left of the per-step token budget on prompt prefill,
   in chunks, shortest remaining prompt first, so a short prompt that
   arrives behind a long one still gets its first token quickly.

Each slot owns a row of a static KV cache (see ``kv_cache``). Running
requests occupy rows 0..d-1 and prefilling ones the rows after them, so
the decode batch is a plain slice of the cache.

The engine is single-threaded: one thread calls ``step()``; other threads
may call ``submit()`` and ``cancel()``, which take effect at the next step.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from inference.content_filter import FilterResult
from inference.detokenize import IncrementalDetokenizer, StopMatcher
from inference.engine_types import (
    ContextLengthError,
    Event,
    FinishReason,
    OutputFilter,
    RequestError,
    Timings,
)
from inference.kv_cache import SlotKVCache
from inference.loading import LoadedModel
from inference.protocol import SamplingError, SamplingParams
from inference.sampling import Sampler
from inference.speculative import PromptLookup

logger = logging.getLogger(__name__)

Message = dict[str, str]


@dataclass
class _Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    sampler: Sampler
    detok: IncrementalDetokenizer
    stops: StopMatcher
    output_filter: OutputFilter | None
    timings: Timings
    row: int = -1
    prefilled: int = 0  # prompt tokens already in the cache
    generated: list[int] = field(default_factory=list)
    last_token: int | None = None
    cancelled: bool = False
    drafts: PromptLookup = field(default_factory=lambda: PromptLookup())

    @property
    def length(self) -> int:
        """Tokens in the cache for this request."""
        return self.prefilled + max(len(self.generated) - 1, 0)


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        slots: int = 32,
        max_context: int = 2048,
        step_token_budget: int = 64,
        speculative_tokens: int = 4,
        speculative_max_batch: int = 4,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        model, config = loaded.model, loaded.model.config
        self.loaded = loaded
        self.model = model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.slots = slots
        self.max_context = min(
            max_context, getattr(config, "max_position_embeddings", max_context)
        )
        self.step_token_budget = max(step_token_budget, 1)
        self.speculative_tokens = max(speculative_tokens, 0)
        self.speculative_max_batch = speculative_max_batch
        self.clock = clock
        self.eos_ids = loaded.eos_token_ids
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.cache = SlotKVCache(
            layers=config.num_hidden_layers,
            slots=slots,
            kv_heads=getattr(config, "num_key_value_heads", config.num_attention_heads),
            head_dim=head_dim,
            max_len=self.max_context,
            dtype=loaded.dtype,
            device=self.device,
        )
        self._mask_min = torch.finfo(loaded.dtype).min
        parameters = inspect.signature(type(model).forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.waiting: deque[_Request] = deque()
        self.decoding: list[_Request] = []  # rows 0..d-1
        self.prefilling: list[_Request] = []  # rows d..d+p-1
        self.ids: set[str] = set()
        self.steps = 0
        #: Each step's work, for tests and diagnostics: (step, kind, request ids).
        self.trace: deque[tuple[int, str, tuple[str, ...]]] = deque(maxlen=10_000)

    # --- requests ------------------------------------------------------

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Render chat messages through the model's template into token ids."""
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list")
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise RequestError(f"messages[{index}] must be an object")
            if message.get("role") not in {"system", "user", "assistant"}:
                raise RequestError(f"messages[{index}].role must be system, user or assistant")
            if not isinstance(message.get("content"), str):
                raise RequestError(f"messages[{index}].content must be text")
        if not any(m["content"].strip() for m in messages if m["role"] == "user"):
            raise RequestError("the conversation has no user message with text")
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def submit(
        self,
        request_id: str,
        *,
        messages: list[Message] | None = None,
        prompt: list[int] | None = None,
        params: SamplingParams | None = None,
        output_filter: OutputFilter | None = None,
    ) -> None:
        """Queue a request; raise RequestError or SamplingError when it is
        invalid. Thread-safe: it is admitted at the next step."""
        params = params or SamplingParams()
        params.validate()
        if prompt is None:
            if messages is None:
                raise RequestError("a request needs messages or prompt ids")
            prompt = self.prompt_ids(messages)
        if not prompt:
            raise RequestError("the prompt is empty")
        if len(prompt) >= self.max_context:
            raise ContextLengthError(
                f"the prompt is {len(prompt)} tokens; the context holds {self.max_context} "
                "and the answer needs at least one more: shorten the conversation"
            )
        request = _Request(
            id=request_id,
            prompt=list(prompt),
            params=params,
            sampler=Sampler(params, self.device),
            detok=IncrementalDetokenizer(self.tokenizer),
            stops=StopMatcher(params.stop),
            output_filter=output_filter,
            timings=Timings(arrived=self.clock()),
        )
        self._inbox.put(("submit", request))

    def cancel(self, request_id: str) -> None:
        """Stop a request; its slot is free after the next step. Thread-safe."""
        self._inbox.put(("cancel", request_id))

    # --- state ---------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self.decoding) + len(self.prefilling)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.waiting or self.decoding or self.prefilling or not self._inbox.empty())

    def queue_position(self, request_id: str) -> int | None:
        """1-based place in the waiting queue, None when not waiting."""
        for position, request in enumerate(self.waiting, start=1):
            if request.id == request_id:
                return position
        return None

    # --- the step ------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[Event]:
        events: list[Event] = []
        self._drain_inbox(events)
        self._admit()
        if self.decoding:
            self._decode(events)
        if self.prefilling:
            self._prefill(events, self.step_token_budget - len(self.decoding))
        self.steps += 1
        return events

    def _drain_inbox(self, events: list[Event]) -> None:
        while True:
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "submit":
                if payload.id in self.ids:
                    events.append(self._error_event(payload, "duplicate request id"))
                    continue
                self.ids.add(payload.id)
                self.waiting.append(payload)
            elif kind == "cancel":
                self._cancel_now(payload, events)

    def _cancel_now(self, request_id: str, events: list[Event]) -> None:
        for request in self.waiting:
            if request.id == request_id:
                self.waiting.remove(request)
                events.append(self._finish(request, FinishReason.CANCELLED, release=False))
                return
        for request in (*self.decoding, *self.prefilling):
            if request.id == request_id:
                events.append(self._finish(request, FinishReason.CANCELLED))
                return

    def _admit(self) -> None:
        while self.waiting and self.running < self.slots:
            request = self.waiting.popleft()
            request.row = self.running
            request.timings.scheduled = self.clock()
            self.prefilling.append(request)

    def _decode(self, events: list[Event]) -> None:
        batch = self.decoding
        drafts = self._drafts(batch)
        if any(drafts):
            self._decode_speculative(batch, drafts, events)
            return
        positions = torch.tensor([r.length for r in batch], device=self.device)
        kv_len = int(positions.max()) + 1
        self.cache.decode_batch(len(batch), positions, kv_len)
        valid = torch.arange(kv_len, device=self.device)[None, :] <= positions[:, None]
        mask = torch.zeros(valid.shape, dtype=self.loaded.dtype, device=self.device)
        mask.masked_fill_(~valid, self._mask_min)
        input_ids = torch.tensor([[r.last_token] for r in batch], device=self.device)
        logits = self._forward(input_ids, positions[:, None], mask[:, None, None, :])
        self.trace.append((self.steps, "decode", tuple(r.id for r in batch)))
        for request, row_logits in zip(list(batch), logits[:, -1], strict=True):
            self._accept(request, row_logits, events)

    def _drafts(self, batch: list[_Request]) -> list[list[int]]:
        """Guess the next tokens of each request from its own earlier text
        (prompt lookup), when the batch is small enough that checking them
        costs about as much as one decode step: at small batch sizes a step
        is bound by reading the weights, not by arithmetic."""
        if not self.speculative_tokens or len(batch) > self.speculative_max_batch:
            return [[] for _ in batch]
        drafts = []
        for request in batch:
            room = min(
                self.speculative_tokens,
                request.params.max_new_tokens - len(request.generated) - 1,
                self.max_context - request.length - 2,
            )
            drafts.append(request.drafts.propose(request.prompt, request.generated, room))
        return drafts

    def _decode_speculative(
        self, batch: list[_Request], drafts: list[list[int]], events: list[Event]
    ) -> None:
        """Feed each request's last token and its draft in one forward, then
        keep the longest prefix of the draft that the model itself picks."""
        width = 1 + max(len(d) for d in drafts)
        starts = torch.tensor([r.length for r in batch], device=self.device)
        positions = starts[:, None] + torch.arange(width, device=self.device)[None, :]
        kv_len = int(positions.max()) + 1
        self.cache.decode_batch(len(batch), starts, kv_len, width=width)
        keys = torch.arange(kv_len, device=self.device)
        valid = keys[None, None, :] <= positions[:, :, None]
        mask = torch.zeros(valid.shape, dtype=self.loaded.dtype, device=self.device)
        mask.masked_fill_(~valid, self._mask_min)
        rows = [
            [r.last_token, *d] + [0] * (width - 1 - len(d))
            for r, d in zip(batch, drafts, strict=True)
        ]
        input_ids = torch.tensor(rows, device=self.device)
        logits = self._forward(input_ids, positions, mask[:, None], keep=0)
        self.trace.append((self.steps, "decode", tuple(r.id for r in batch)))
        for index, (request, draft) in enumerate(zip(list(batch), drafts, strict=True)):
            if request.cancelled:
                continue
            for offset in range(len(draft) + 1):
                row_logits = self._penalized(request, logits[index, offset])
                if offset < len(draft):
                    token, accepted = request.sampler.verify(row_logits, draft[offset])
                else:
                    token, accepted = request.sampler.sample(row_logits), False
                request.drafts.record(proposed=offset < len(draft), accepted=accepted)
                if self._take(request, token, events) or not accepted:
                    break

    def _prefill(self, events: list[Event], budget: int) -> None:
        # Always make some progress, even when decodes use the budget up.
        budget = max(budget, min(32, self.step_token_budget))
        for request in sorted(self.prefilling, key=lambda r: len(r.prompt) - r.prefilled):
            if budget <= 0:
                break
            start = request.prefilled
            chunk = request.prompt[start : start + budget]
            budget -= len(chunk)
            length = len(chunk)
            self.cache.prefill_row(request.row, start, length)
            mask = torch.full(
                (length, start + length),
                self._mask_min,
                dtype=self.loaded.dtype,
                device=self.device,
            ).triu(start + 1)
            positions = torch.arange(start, start + length, device=self.device)[None, :]
            input_ids = torch.tensor([chunk], device=self.device)
            logits = self._forward(input_ids, positions, mask[None, None])
            self.trace.append((self.steps, "prefill", (request.id,)))
            request.prefilled += length
            if request.prefilled == len(request.prompt):
                self._promote_to_decoding(request)
                self._accept(request, logits[0, -1], events)

    def _forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, keep: int = 1
    ) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=keep,
            **{self._cache_kwarg: self.cache},
        )
        return output.logits

    def _accept(self, request: _Request, logits: torch.Tensor, events: list[Event]) -> None:
        """Sample the next token of request and emit what it makes visible."""
        if request.cancelled:
            return
        self._take(request, request.sampler.sample(self._penalized(request, logits)), events)

    def _penalized(self, request: _Request, logits: torch.Tensor) -> torch.Tensor:
        if request.params.repetition_penalty == 1.0:
            return logits
        seen = torch.tensor(request.prompt + request.generated, device=self.device)
        return request.sampler.penalize(logits, seen)

    def _take(self, request: _Request, token: int, events: list[Event]) -> bool:
        """Append token to request's answer and emit what it makes visible;
        return True when the request has ended."""
        now = self.clock()
        if request.timings.first_token is None:
            request.timings.first_token = now
        request.timings.token_times.append(now)
        request.generated.append(token)
        request.last_token = token
        request.drafts.observe(request.prompt, request.generated)

        if token in self.eos_ids and not request.params.ignore_eos:
            # Release what the detokenizer, the stop strings and the output
            # filter still hold: the answer ends here.
            tail = request.stops.push(request.detok.flush())
            if not request.stops.stopped:
                tail += request.stops.flush()
            self._emit(request, tail, events, final=True, reason=FinishReason.STOP)
            return True
        text = request.stops.push(request.detok.push(token))
        if request.stops.stopped:
            self._emit(request, text, events, final=True, reason=FinishReason.STOP)
            return True
        at_limit = len(request.generated) >= request.params.max_new_tokens or (
            request.length + 1 >= self.max_context
        )
        if at_limit:
            tail = request.stops.push(request.detok.flush())
            if request.stops.stopped:
                self._emit(request, text + tail, events, final=True, reason=FinishReason.STOP)
                return True
            self._emit(request, text + tail + request.stops.flush(), events, final=True,
                       reason=FinishReason.LENGTH)  # fmt: skip
            return True
        self._emit(request, text, events, final=False, reason=None)
        return request.cancelled

    def _emit(
        self, request: _Request, text: str, events: list[Event], *, final: bool, reason: str | None
    ) -> None:
        """Pass text through the request's output filter and emit it."""
        output_filter = request.output_filter
        if output_filter is not None:
            result = output_filter.push(text) if text else FilterResult("")
            text = result.text
            if not result.block and final:
                end = output_filter.finish()
                text += end.text
                result = end
            if result.block:
                if text:
                    events.append(Event(request.id, text=text))
                events.append(self._finish(request, FinishReason.CONTENT_FILTER))
                return
        if text:
            events.append(Event(request.id, text=text))
        if final:
            events.append(self._finish(request, reason or FinishReason.STOP))

    # --- rows ----------------------------------------------------------

    def _promote_to_decoding(self, request: _Request) -> None:
        """Move a request that finished prefill into the decoding rows."""
        target = len(self.decoding)
        if request.row != target:
            other = next(r for r in self.prefilling if r.row == target)
            self._swap_rows(request, other)
        self.prefilling.remove(request)
        self.decoding.append(request)

    def _swap_rows(self, a: _Request, b: _Request) -> None:
        length = max(a.length, b.length, a.prefilled, b.prefilled)
        for keys, values in zip(self.cache.keys, self.cache.values, strict=True):
            for buffer in (keys, values):
                saved = buffer[a.row, :, :length].clone()
                buffer[a.row, :, :length] = buffer[b.row, :, :length]
                buffer[b.row, :, :length] = saved
        a.row, b.row = b.row, a.row

    def _release(self, request: _Request) -> None:
        """Free request's row and keep the rows compact."""
        if request in self.decoding:
            self.decoding.remove(request)
            hole = request.row
            last_decoding = len(self.decoding)
            if hole != last_decoding:
                mover = next(r for r in self.decoding if r.row == last_decoding)
                self.cache.move_row(mover.row, hole, mover.length + 1)
                mover.row, hole = hole, last_decoding
            self._fill_hole(hole)
            # The decode batch reads rows 0..d-1 in list order.
            self.decoding.sort(key=lambda r: r.row)
        elif request in self.prefilling:
            self.prefilling.remove(request)
            self._fill_hole(request.row)
        request.row = -1

    def _fill_hole(self, hole: int) -> None:
        last = self.running  # rows 0..running-1 stay occupied
        if hole >= last:
            return
        mover = next(r for r in self.prefilling if r.row == last)
        self.cache.move_row(mover.row, hole, mover.prefilled)
        mover.row = hole

    # --- endings -------------------------------------------------------

    def _finish(self, request: _Request, reason: str, *, release: bool = True) -> Event:
        if release:
            self._release(request)
        request.cancelled = True
        request.timings.finished = self.clock()
        self.ids.discard(request.id)
        gaps = [b - a for a, b in itertools.pairwise(request.timings.token_times)]
        return Event(
            request.id,
            finished=True,
            finish_reason=reason,
            prompt_tokens=len(request.prompt),
            completion_tokens=len(request.generated),
            timings=request.timings.summary(),
            token_gaps=gaps,
            token_ids=list(request.generated),
        )

    def _error_event(self, request: _Request, message: str) -> Event:
        return Event(request.id, finished=True, finish_reason=FinishReason.ERROR, error=message)


def chat_answer(
    loaded: LoadedModel,
    messages: list[Message],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Answer one conversation with a one-slot engine; stream to on_text."""
    try:
        params = SamplingParams(
            temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new_tokens
        )
        params.validate()
    except SamplingError as exc:
        raise RequestError(str(exc)) from None
    engine = Engine(loaded, slots=1, max_context=4096)
    engine.submit("answer", messages=messages, params=params)
    parts: list[str] = []
    while engine.has_work():
        for event in engine.step():
            if event.text:
                parts.append(event.text)
                if on_text:
                    on_text(event.text)
            if event.error:
                raise RequestError(event.error)
    return "".join(parts)
