"""What every generation engine shares, whatever runs the model: the
request queue, admission, cancellation, and the way a sampled token
becomes text (detokenizer, stop strings, output filter, final event).
No Django here; torch only for the sampler's tensors.

An engine subclass owns the model and its KV memory: it implements
``_work`` (feed the model the tokens of this step and call ``_accept``
with each request's next-token logits), ``_slot_take`` and
``_slot_release`` (a request's place in the KV memory).

One thread calls ``step()``; other threads may call ``submit()`` and
``cancel()``, which take effect at the next step.
"""

from __future__ import annotations

import itertools
import math
import queue
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from inference.beam import BeamSearch
from inference.content_filter import FilterResult
from inference.detokenize import IncrementalDetokenizer, StopMatcher
from inference.engine_types import (
    ContextLengthError,
    Event,
    FinishReason,
    OutputFilter,
    RequestError,
    Timings,
    TokenLogprob,
)
from inference.protocol import SamplingParams
from inference.sampling import Sampler

if TYPE_CHECKING:
    from inference.structured import CompiledGrammar, GrammarCompiler


from inference.engine_beams import beam_accept
from inference.engine_request import (  # noqa: F401 (the engines' names)
    Group,
    Message,
    Request,
    chat_prompt_ids,
    messages_check,
    torch_threads,
)


class EngineBase(ABC):
    """Queue, admission and output of an iteration-level batching engine.

    Running requests are in ``decoding`` (prompt fully in the cache) and
    ``prefilling``; ``waiting`` holds the rest in arrival order.
    """

    #: Which runtime serves the model, for status pages and heartbeats.
    backend = ""
    #: The model as loaded: at least its ``device`` and ``dtype``.
    loaded: Any
    #: Whether the engine runs beam searches (it can copy a row's KV).
    beam_search_supported = True

    def __init__(
        self,
        *,
        tokenizer: Any,
        eos_ids: set[int],
        device: torch.device,
        slots: int,
        max_context: int,
        step_token_budget: int,
        vocab_size: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.device = device
        self.slots = slots
        self.max_context = max_context
        self.step_token_budget = max(step_token_budget, 1)
        self.clock = clock
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.waiting: deque[Request] = deque()
        self.decoding: list[Request] = []
        self.prefilling: list[Request] = []
        self.ids: set[str] = set()
        self.steps = 0
        #: Width of the model's logits (the grammar masks' length).
        self.vocab_size = vocab_size or len(tokenizer)
        self._grammars: GrammarCompiler | None = None
        #: Each step's work, for tests and diagnostics: (step, kind, request ids).
        self.trace: deque[tuple[int, str, tuple[str, ...]]] = deque(maxlen=10_000)

    # --- requests ------------------------------------------------------

    def prompt_ids(self, messages: list[Message], *, continue_final: bool = False) -> list[int]:
        """Render chat messages through the model's template into token ids."""
        return chat_prompt_ids(self.tokenizer, messages, continue_final=continue_final)

    def submit(
        self,
        request_id: str,
        *,
        messages: list[Message] | None = None,
        prompt: list[int] | None = None,
        params: SamplingParams | None = None,
        output_filter: OutputFilter | None = None,
        output_filters: list[OutputFilter | None] | None = None,
    ) -> None:
        """Queue a request; raise RequestError or SamplingError when it is
        invalid. Thread-safe: it is admitted at the next step.

        A request with ``n`` > 1 gives each answer's events under the same
        id with its ``index``, each answer ending with its own final event;
        ``output_filters`` then holds one filter per answer. A beam search
        emits its best ``n`` beams when it ends."""
        params = params or SamplingParams()
        params.validate()
        if prompt is None:
            if messages is None:
                raise RequestError("a request needs messages or prompt ids")
            prompt = self.prompt_ids(messages, continue_final=params.continue_final_message)
        if not prompt:
            raise RequestError("the prompt is empty")
        if len(prompt) >= self.max_context:
            raise ContextLengthError(
                f"the prompt is {len(prompt)} tokens; the context holds {self.max_context} "
                "and the answer needs at least one more: shorten the conversation"
            )
        if params.rows > self.slots:
            raise RequestError(
                f"the request runs {params.rows} sequences at once (n or beams); this engine "
                f"holds {self.slots}"
            )
        if params.beam_search and not self.beam_search_supported:
            raise RequestError(f"beam search is not available on the {self.backend} engine")
        if output_filters is not None:
            filters = list(output_filters)
        else:
            filters = [output_filter] + [None] * (params.rows - 1)
        if (output_filter is not None and params.n > 1) or len(filters) < params.n:
            raise RequestError("each answer of the request needs its own output filter")
        arrived = self.clock()
        grammar = self._grammar_compile(params)

        def member(index: int) -> Request:
            seed = params.seed
            sampler_params = params
            if index and seed is not None:
                # Each answer its own reproducible stream of random numbers.
                sampler_params = replace(params, seed=(seed + index) % 2**32)
            return Request(
                id=request_id if index == 0 else f"{request_id}/{index}",
                prompt=list(prompt),
                params=params,
                sampler=Sampler(sampler_params, self.device),
                detok=IncrementalDetokenizer(self.tokenizer),
                stops=StopMatcher(params.stop),
                output_filter=filters[index] if index < len(filters) else None,
                timings=Timings(arrived=arrived),
                index=index,
                grammar=grammar.matcher() if grammar is not None else None,
            )

        request = member(0)
        if params.rows > 1:
            members = [request, *(member(i) for i in range(1, params.rows))]
            group = Group(id=request_id, members=members, pending=members[1:])
            if params.beam_search:
                group.beam = BeamSearch(params, eos_ids=self.eos_ids, max_context=self.max_context)
            for each in members:
                each.group = group
        self._inbox.put(("submit", request))

    def _grammar_compile(self, params: SamplingParams) -> CompiledGrammar | None:
        """The grammar a structured-output request decodes under; raise
        RequestError when the format cannot be compiled for this model."""
        if not params.constrained:
            return None
        from inference.structured import StructuredError, grammar_compiler

        try:
            if self._grammars is None:
                self._grammars = grammar_compiler(
                    self.tokenizer, self.vocab_size, eos_ids=set(self.eos_ids)
                )
            return self._grammars.compile(params.response_format)
        except StructuredError as exc:
            raise RequestError(f"response_format: {exc}") from None

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

    def step(self) -> list[Event]:
        events: list[Event] = []
        # Sampling and bookkeeping are many small tensor operations per
        # request: run them on one thread (torch splits a 49k-entry softmax
        # over its threads, and the handover costs ten times the work).
        # Model forwards get the process's threads back (model_threads).
        self._threads = torch.get_num_threads()
        with torch_threads(1):
            self._drain_inbox(events)
            self._admit()
            if self.decoding or self.prefilling:
                self._work(events)
        self.steps += 1
        return events

    def model_threads(self) -> AbstractContextManager[None]:
        """Inside step(): run a model forward on the process's threads."""
        return torch_threads(getattr(self, "_threads", torch.get_num_threads()))

    @abstractmethod
    def _work(self, events: list[Event]) -> None:
        """Feed the model this step's tokens and ``_accept`` each request's
        next-token logits."""

    @abstractmethod
    def _slot_take(self, request: Request) -> None:
        """Give an admitted request its place in the KV memory (row)."""

    @abstractmethod
    def _slot_release(self, request: Request) -> None:
        """Free the KV memory of a request that leaves the running lists."""

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
        for request in (*self.waiting, *self.decoding, *self.prefilling):
            if request.event_id == request_id:
                self._end_all(request, FinishReason.CANCELLED, events)
                return

    def _end_all(self, request: Request, reason: str, events: list[Event]) -> None:
        """End request and the rest of its group, waiting or running: one
        final event for each answer the request asked for."""
        members = request.group.members if request.group is not None else [request]
        started = {id(m) for m in (*self.decoding, *self.prefilling)}
        for member in members:
            if member in self.waiting:
                self.waiting.remove(member)
            if member.cancelled:
                continue
            event = self._finish(member, reason, release=id(member) in started)
            if member.index < member.params.n:
                events.append(event)
        if request.group is not None:
            request.group.pending.clear()
            if request.group.beam is not None:
                request.group.beam.spare.clear()

    def _admit(self) -> None:
        while self.waiting and self._rows_free() >= self._rows_wanted(self.waiting[0]):
            if self._admission_held(self.waiting[0]):
                break
            request = self.waiting.popleft()
            request.timings.scheduled = self.clock()
            self._slot_take(request)
            self.prefilling.append(request)

    def _rows_free(self) -> int:
        """Rows neither running nor kept for a group's sequences to come."""
        groups = {
            id(r.group): r.group for r in (*self.decoding, *self.prefilling) if r.group is not None
        }
        reserved = sum(
            len(g.pending) + (len(g.beam.spare) if g.beam is not None else 0)
            for g in groups.values()
        )
        return self.slots - self.running - reserved

    @staticmethod
    def _rows_wanted(request: Request) -> int:
        """Rows a waiting request needs: its own and its group's to come."""
        group = request.group
        if group is None:
            return 1
        return 1 + len(group.pending) + (len(group.beam.spare) if group.beam is not None else 0)

    def _admission_held(self, request: Request) -> bool:
        """Whether the request at the head of the queue waits a step."""
        return False

    # --- groups ---------------------------------------------------------

    @abstractmethod
    def _row_copy(self, source: Request, target: Request) -> None:
        """Give target (running, or just given a row) the KV memory source
        holds now, and the answer so far that goes with it."""

    @abstractmethod
    def _fork_start(self, source: Request, fork: Request) -> None:
        """Start a group member that has no row yet: take one, copy
        source's KV memory into it (``_row_copy``), and decode."""

    def _forks_start(self, request: Request) -> list[Request]:
        """When a group's first member has its prompt in: start the others
        from copies of it; return them."""
        group = request.group
        if group is None or not group.pending or request is not group.primary:
            return []
        forks, group.pending = group.pending, []
        if group.beam is not None:
            # Beams start one by one, as the search branches.
            group.beam.spare = forks
            return []
        now = self.clock()
        for fork in forks:
            fork.timings.scheduled = now
            self._fork_start(request, fork)
        return forks

    # --- tokens to text ------------------------------------------------

    def _accept(self, request: Request, logits: torch.Tensor, events: list[Event]) -> None:
        """Sample the next token of request and emit what it makes visible."""
        if request.cancelled:
            return
        if not request.generated and request.params.prompt_logprobs is not None:
            # The prompt is in: its log-probabilities come before any text.
            self._prompt_logprobs_emit(request, events)
        forks = self._forks_start(request)
        group = request.group
        if group is not None and group.beam is not None:
            beam_accept(self, request, logits, events)
            return
        for member in (request, *forks):
            penalized = self._penalized(member, logits)
            token = member.sampler.sample(self._masked(member, penalized))
            self._logprob_note(member, penalized, token)
            self._grammar_accept(member, token)
            self._take(member, token, events)

    @staticmethod
    def _masked(request: Request, logits: torch.Tensor) -> torch.Tensor:
        """Logits with the tokens the request's grammar forbids ruled out
        (a copy: the row may be shared by a group's answers)."""
        if request.grammar is None:
            return logits
        return request.grammar.mask(logits.clone())

    @staticmethod
    def _grammar_accept(request: Request, token: int) -> None:
        if request.grammar is not None and not request.grammar.finished:
            request.grammar.accept(token)

    def _prompt_logprobs_note(self, request: Request, start: int, logits: torch.Tensor) -> None:
        """Rows of logits for the prompt positions start.. of a chunk just
        fed: keep the log-probabilities of the prompt tokens they predict."""
        count = request.params.prompt_logprobs
        if count is None:
            return
        targets = request.prompt[start + 1 : start + 1 + logits.shape[0]]
        if targets:
            rows = logits[: len(targets)]
            request.prompt_logprobs.extend(Sampler.prompt_logprobs(rows, targets, count))

    def _prompt_logprobs_emit(self, request: Request, events: list[Event]) -> None:
        if request.params.prompt_logprobs is None:
            return
        # The first token has nothing before it: no log-probability (NaN).
        first = TokenLogprob(token=request.prompt[0], logprob=math.nan)
        entries = [first, *request.prompt_logprobs]
        events.append(Event(request.event_id, index=request.index, prompt_logprobs=entries))
        request.prompt_logprobs = []

    def _logprob_note(self, request: Request, logits: torch.Tensor, token: int) -> None:
        """Keep token's log-probabilities for the next event, when asked."""
        if request.params.logprobs is not None:
            request.logprobs.append(request.sampler.logprobs(logits, token))

    @staticmethod
    def _logprobs_take(request: Request) -> list[TokenLogprob] | None:
        if request.params.logprobs is None:
            return None
        taken, request.logprobs = request.logprobs, []
        return [] if request.logprobs_withheld else taken

    @staticmethod
    def _logprobs_guard(request: Request, raw: str, shown: str) -> None:
        """Tokens spell the model's own text: once an output filter shows
        something else (a masked word), the tokens would give away what it
        hid, so the request's log-probabilities stop there."""
        if request.params.logprobs is None or request.logprobs_withheld:
            return
        request.filter_raw += raw
        request.filter_shown += shown
        if not request.filter_raw.startswith(request.filter_shown):
            request.logprobs_withheld = True
            request.logprobs = []

    def _penalized(self, request: Request, logits: torch.Tensor) -> torch.Tensor:
        if not request.sampler.penalizes:
            return logits
        seen = torch.tensor(request.prompt + request.generated, device=self.device)
        generated = torch.tensor(request.generated, dtype=torch.long, device=self.device)
        return request.sampler.penalize(logits, seen, generated)

    def _take(self, request: Request, token: int, events: list[Event]) -> bool:
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
        self, request: Request, text: str, events: list[Event], *, final: bool, reason: str | None
    ) -> None:
        """Pass text through the request's output filter and emit it."""
        output_filter = request.output_filter
        if output_filter is not None:
            raw = text
            result = output_filter.push(text) if text else FilterResult("")
            text = result.text
            if not result.block and final:
                end = output_filter.finish()
                text += end.text
                result = end
            self._logprobs_guard(request, raw, text)
            if result.block:
                if text:
                    events.append(Event(request.event_id, text=text, index=request.index))
                events.append(self._finish(request, FinishReason.CONTENT_FILTER))
                return
        if text:
            events.append(
                Event(
                    request.event_id,
                    text=text,
                    logprobs=self._logprobs_take(request),
                    index=request.index,
                )
            )
        if final:
            events.append(self._finish(request, reason or FinishReason.STOP))

    # --- endings -------------------------------------------------------

    def _finish(self, request: Request, reason: str, *, release: bool = True) -> Event:
        request.cancelled = True
        if release:
            self._slot_release(request)
        request.timings.finished = self.clock()
        if request.group is None or request.group.ended:
            self.ids.discard(request.event_id)
        gaps = [b - a for a, b in itertools.pairwise(request.timings.token_times)]
        return Event(
            request.event_id,
            index=request.index,
            finished=True,
            finish_reason=reason,
            prompt_tokens=len(request.prompt),
            completion_tokens=len(request.generated),
            timings=request.timings.summary(),
            token_gaps=gaps,
            token_ids=list(request.generated),
            logprobs=self._logprobs_take(request),
        )

    def _error_event(self, request: Request, message: str) -> Event:
        return Event(request.id, finished=True, finish_reason=FinishReason.ERROR, error=message)
