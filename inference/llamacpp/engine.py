"""The generation engine for GGUF versions: iteration-level batching
over llama.cpp. No Django, Redis or Channels here.

Scheduling, sampling, stop strings and output filters are the platform's
own (``inference.engine_base``), so a GGUF version answers with the same
parameters and events as a transformers one. llama.cpp runs the model:
every ``step()`` makes one ``llama_decode`` call holding one token of
every decoding request and, in what is left of the step's token budget,
chunks of prompts (shortest remaining first).

Prompts share what they have in common with earlier ones (prefix
caching): a finished request's tokens stay in the pool under a spare
sequence id, and a new request whose prompt starts the same way (the
system prompt, or the whole conversation so far on the next turn) gets
those cells shared into its own sequence and is fed only the rest. The
least recently used entries go when the pool needs room.

KV memory is one pool shared by every sequence. It starts at
``kv_tokens`` positions and doubles when a step finds it full (the
running sequences are copied into the larger pool), up to
``kv_max_tokens`` (by default ``slots x max_context``, where every
request fits at once); it shrinks back once the engine is idle. When
it cannot grow, the request admitted last is preempted: its memory is
freed and it goes back to the head of the queue, to be fed its prompt
and answer so far again when there is room (nothing it streamed is
repeated).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from inference.engine_base import EngineBase, Request
from inference.engine_types import Event, FinishReason
from inference.llamacpp.loading import GGUFModel
from inference.llamacpp.runtime import NO_KV_SLOT, DecodeError, LlamaRuntime

logger = logging.getLogger(__name__)

#: Tokens of a prompt fed per step even when decodes use the budget up.
MIN_PREFILL_CHUNK = 32
#: The shortest common prefix worth sharing.
MIN_SHARED_PREFIX = 8


def _common_length(left: list[int], right: list[int]) -> int:
    length = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        length += 1
    return length


class LlamaCppEngine(EngineBase):
    backend = "llama.cpp"

    def __init__(
        self,
        loaded: GGUFModel,
        *,
        slots: int = 32,
        max_context: int = 2048,
        step_token_budget: int = 256,
        kv_tokens: int = 4096,
        kv_max_tokens: int = 0,
        kv_type: str = "f16",
        threads: int = 0,
        cached_prefixes: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        budget = max(step_token_budget, 1)
        retained = slots if cached_prefixes is None else max(cached_prefixes, 0)
        runtime = LlamaRuntime(
            loaded.gguf,
            # Running requests use 0..slots-1; cached prefixes the ids after.
            sequences=slots + retained,
            sequence_tokens=max_context,
            # The pool always holds one request's whole context.
            pool_tokens=max(kv_tokens, max_context),
            batch_tokens=budget + slots,
            threads=threads,
            kv_type=kv_type,
        )
        super().__init__(
            tokenizer=loaded.tokenizer,
            eos_ids=set(loaded.eos_token_ids),
            device=loaded.device,
            slots=slots,
            max_context=runtime.sequence_tokens,
            step_token_budget=budget,
            vocab_size=runtime.vocab_size,
            clock=clock,
        )
        self.loaded = loaded
        self.runtime = runtime
        info = runtime.info()
        loaded.dtype = info.description.rsplit(" ", 1)[-1] or "gguf"
        self.info = info
        self.pool_min = runtime.pool_tokens
        ceiling = kv_max_tokens if kv_max_tokens > 0 else slots * self.max_context
        self.pool_max = max(ceiling, self.pool_min)
        self.preemptions = 0
        # After a preemption nothing new is admitted until a running
        # request ends and frees its memory.
        self._pool_full = False
        self._free_rows = list(range(slots))
        self._cached: dict[str, int] = {}  # request id -> its tokens in the pool
        #: Cached prefixes: sequence id -> the tokens its cells hold, least
        #: recently used first.
        self._prefixes: OrderedDict[int, list[int]] = OrderedDict()
        self._free_prefix_ids = list(range(slots, slots + retained))
        #: Prompt tokens not fed because an earlier prompt had them.
        self.prefix_hits = 0

    def _admit(self) -> None:
        if self._pool_full and self.running:
            return
        self._pool_full = False
        super()._admit()

    def _admission_held(self, request: Request) -> bool:
        """A request ahead of it is still feeding their common start: it
        shares those cells next step instead of computing them again."""
        for other in self.prefilling:
            common = _common_length(other.prompt, request.prompt)
            if common >= MIN_SHARED_PREFIX and self._cached.get(other.id, 0) < common:
                return True
        return False

    # --- rows ------------------------------------------------------------

    def _slot_take(self, request: Request) -> None:
        request.row = self._free_rows.pop(0)
        self._cached[request.id] = self._prefix_share(request)

    def _row_copy(self, source: Request, target: Request) -> None:
        held = self._cached[source.id]
        self.runtime.sequence_clear(target.row)
        self.runtime.sequence_share(source.row, target.row, held)
        self._cached[target.id] = held
        target.prefilled = source.prefilled
        target.generated = list(source.generated)
        target.last_token = source.last_token

    def _fork_start(self, source: Request, fork: Request) -> None:
        fork.row = self._free_rows.pop(0)
        self._row_copy(source, fork)
        self.decoding.append(fork)

    def _prefix_share(self, request: Request) -> int:
        """Share into request's row the longest start of its tokens that a
        cached prefix or a running request holds; return its length."""
        if request.params.prompt_logprobs is not None:
            return 0  # every prompt position is fed, for its logits
        context = request.prompt + request.generated
        # At least the last token is fed: its logits are the next token's.
        limit = len(context) - 1
        best, source = 0, -1
        candidates = list(self._prefixes.items())
        for other in (*self.decoding, *self.prefilling):
            held = self._cached.get(other.id, 0)
            candidates.append((other.row, (other.prompt + other.generated)[:held]))
        for sequence, tokens in candidates:
            length = min(_common_length(tokens, context), limit)
            if length > best:
                best, source = length, sequence
        if best < MIN_SHARED_PREFIX:
            return 0
        self.runtime.sequence_share(source, request.row, best)
        if source in self._prefixes:
            self._prefixes.move_to_end(source)
        self.prefix_hits += best
        request.prefilled = min(best, len(request.prompt))
        return best

    def _prefix_keep(self, request: Request) -> None:
        """Keep a finished request's cells as a cached prefix."""
        held = self._cached.get(request.id, 0)
        if held < MIN_SHARED_PREFIX or not (self._free_prefix_ids or self._prefixes):
            return
        if not self._free_prefix_ids:
            self._prefix_drop(next(iter(self._prefixes)))
        sequence = self._free_prefix_ids.pop()
        self.runtime.sequence_share(request.row, sequence, held)
        self._prefixes[sequence] = (request.prompt + request.generated)[:held]

    def _prefix_drop(self, sequence: int) -> None:
        self.runtime.sequence_clear(sequence)
        del self._prefixes[sequence]
        self._free_prefix_ids.append(sequence)

    def _slot_release(self, request: Request) -> None:
        if request in self.decoding:
            self.decoding.remove(request)
        elif request in self.prefilling:
            self.prefilling.remove(request)
        if request.row >= 0:
            if request.cancelled:  # it ended: what it fed may start the next one
                self._prefix_keep(request)
            self.runtime.sequence_clear(request.row)
            self._free_rows.append(request.row)
            self._free_rows.sort()
        request.row = -1
        self._cached.pop(request.id, None)
        if request.cancelled:  # it ended, rather than waits to be fed again
            self._pool_full = False
        if not self.running and self.runtime.pool_tokens > self.pool_min:
            # Idle after a busy spell: memory back, cached prefixes with it.
            self._prefixes.clear()
            self._free_prefix_ids = list(range(self.slots, self.runtime.sequences))
            self.runtime.pool_resize(self.pool_min)
            logger.info("KV pool back to %d positions", self.runtime.pool_tokens)

    # --- the step --------------------------------------------------------

    def _work(self, events: list[Event]) -> None:
        entries: list[tuple[int, int, int, bool]] = []
        fed: list[tuple[Request, int]] = []
        for request in self.decoding:
            position = self._cached[request.id]
            assert request.last_token is not None
            entries.append((request.last_token, position, request.row, True))
            fed.append((request, 1))
        room = max(self.step_token_budget - len(entries), MIN_PREFILL_CHUNK)
        room = min(room, self.runtime.batch_tokens - len(entries))
        prefill_ids: list[str] = []
        for request in sorted(self.prefilling, key=self._pending):
            if room <= 0:
                break
            context = request.prompt + request.generated
            start = self._cached[request.id]
            chunk = context[start : start + room]
            last = len(context) - 1
            every = request.params.prompt_logprobs is not None
            for offset, token in enumerate(chunk):
                position = start + offset
                entries.append((token, position, request.row, every or position == last))
            fed.append((request, len(chunk)))
            prefill_ids.append(request.id)
            room -= len(chunk)
        if not entries:
            return
        try:
            code = self.runtime.decode(entries)
        except DecodeError as exc:
            logger.error("llama.cpp failed a step: %s", exc)
            for request, _count in fed:
                events.append(self._fail(request, str(exc)))
            return
        if code == NO_KV_SLOT:
            self._make_room()
            return
        if self.decoding:
            self.trace.append((self.steps, "decode", tuple(r.id for r in self.decoding)))
        for request_id in prefill_ids:
            self.trace.append((self.steps, "prefill", (request_id,)))
        index = 0
        for request, count in fed:
            wants = request.params.prompt_logprobs is not None and not request.generated
            if wants and request in self.prefilling:
                rows = np.stack([self.runtime.logits(index + i) for i in range(count)])
                start = self._cached[request.id]
                self._prompt_logprobs_note(request, start, torch.from_numpy(rows))
            index += count
            self._cached[request.id] += count
            request.prefilled = min(self._cached[request.id], len(request.prompt))
            if self._cached[request.id] < len(request.prompt) + len(request.generated):
                continue  # more of its prompt next step
            if request in self.prefilling:
                self.prefilling.remove(request)
                self.decoding.append(request)
            logits = torch.from_numpy(self.runtime.logits(index - 1))
            self._accept(request, logits, events)

    def _pending(self, request: Request) -> int:
        return len(request.prompt) + len(request.generated) - self._cached[request.id]

    def _make_room(self) -> None:
        """The pool is full: drop the cached prefixes, grow it, or preempt
        the request admitted last."""
        runtime = self.runtime
        if self._prefixes:
            for sequence in list(self._prefixes):
                self._prefix_drop(sequence)
            return
        if runtime.pool_tokens < self.pool_max:
            size = min(runtime.pool_tokens * 2, self.pool_max)
            running = [*self.decoding, *self.prefilling]
            lost = runtime.pool_resize(size, keep=tuple(r.row for r in running))
            for request in running:
                if request.row in lost:
                    self._feed_again(request)
            logger.info("KV pool grown to %d positions", runtime.pool_tokens)
            return
        running = [*self.decoding, *self.prefilling]
        if len(running) <= 1:
            return  # a lone request always fits: the pool holds a whole context
        # A beam waits for the whole search: beams are never preempted.
        candidates = [r for r in running if r.group is None or r.group.beam is None]
        if not candidates:
            return
        victim = max(candidates, key=lambda r: r.timings.scheduled or 0.0)
        self.preemptions += 1
        logger.info("KV pool full: request %s waits to be fed again", victim.id)
        self._pool_full = True
        self._slot_release(victim)
        self.waiting.appendleft(victim)

    def _feed_again(self, request: Request) -> None:
        """Forget what request has in the pool: it is fed again from the start."""
        self._cached[request.id] = 0
        if request in self.decoding:
            self.decoding.remove(request)
            self.prefilling.append(request)

    def _fail(self, request: Request, message: str) -> Event:
        self._cached[request.id] = 0  # its cells are not worth keeping
        event = self._finish(request, FinishReason.ERROR)
        event.error = message
        return event

    def close(self) -> None:
        self.runtime.close()
