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
import logging
import time
from collections.abc import Callable

import torch

from inference.engine_base import EngineBase, Message, Request
from inference.engine_types import Event, RequestError
from inference.kv_cache import SlotKVCache
from inference.loading import LoadedModel
from inference.protocol import SamplingError, SamplingParams

logger = logging.getLogger(__name__)

__all__ = ["Engine", "Message", "chat_answer"]


class Engine(EngineBase):
    backend = "transformers"

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
        super().__init__(
            tokenizer=loaded.tokenizer,
            eos_ids=loaded.eos_token_ids,
            device=loaded.device,
            slots=slots,
            max_context=min(max_context, getattr(config, "max_position_embeddings", max_context)),
            step_token_budget=step_token_budget,
            vocab_size=int(config.vocab_size),
            clock=clock,
        )
        self.loaded = loaded
        self.model = model
        self.speculative_tokens = max(speculative_tokens, 0)
        self.speculative_max_batch = speculative_max_batch
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.cache = SlotKVCache(
            layers=config.num_hidden_layers,
            slots=slots,
            kv_heads=getattr(config, "num_key_value_heads", config.num_attention_heads),
            head_dim=head_dim,
            max_len=self.max_context,
            # Where the padding of batched prompt chunks is written.
            spare=self.step_token_budget,
            dtype=loaded.dtype,
            device=self.device,
        )
        self._mask_min = torch.finfo(loaded.dtype).min
        parameters = inspect.signature(type(model).forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"

    # --- the step ------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[Event]:
        return super().step()

    def _work(self, events: list[Event]) -> None:
        if self.decoding:
            self._decode(events)
        if self.prefilling:
            self._prefill(events, self.step_token_budget - len(self.decoding))

    def _slot_take(self, request: Request) -> None:
        request.row = self.running

    def _row_copy(self, source: Request, target: Request) -> None:
        # Called with source's logits in hand: its last token is in the
        # cache, the one it picks next is not.
        held = source.prefilled + len(source.generated)
        self.cache.move_row(source.row, target.row, held)
        target.prefilled = source.prefilled
        target.generated = list(source.generated)
        target.last_token = source.last_token

    def _fork_start(self, source: Request, fork: Request) -> None:
        fork.row = self.running
        self.prefilling.append(fork)
        # Into a decoding row first (a swap copies only what rows hold),
        # then the copy.
        self._promote_to_decoding(fork)
        self._row_copy(source, fork)

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

    def _drafts(self, batch: list[Request]) -> list[list[int]]:
        """Guess the next tokens of each request from its own earlier text
        (prompt lookup), when the batch is small enough that checking them
        costs about as much as one decode step: at small batch sizes a step
        is bound by reading the weights, not by arithmetic."""
        if not self.speculative_tokens or len(batch) > self.speculative_max_batch:
            return [[] for _ in batch]
        drafts: list[list[int]] = []
        for request in batch:
            if (
                request.group is not None and request.group.beam is not None
            ) or request.grammar is not None:
                # A beam moves by the search, a grammar token by token.
                drafts.append([])
                continue
            room = min(
                self.speculative_tokens,
                request.params.max_new_tokens - len(request.generated) - 1,
                self.max_context - request.length - 2,
            )
            drafts.append(request.drafts.propose(request.prompt, request.generated, room))
        return drafts

    def _decode_speculative(
        self, batch: list[Request], drafts: list[list[int]], events: list[Event]
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
            if (
                request.group is not None and request.group.beam is not None
            ) or request.grammar is not None:
                self._accept(request, logits[index, 0], events)
                continue
            for offset in range(len(draft) + 1):
                row_logits = self._penalized(request, logits[index, offset])
                if offset < len(draft):
                    token, accepted = request.sampler.verify(row_logits, draft[offset])
                else:
                    token, accepted = request.sampler.sample(row_logits), False
                self._logprob_note(request, row_logits, token)
                request.drafts.record(proposed=offset < len(draft), accepted=accepted)
                if self._take(request, token, events) or not accepted:
                    break

    def _prefill(self, events: list[Event], budget: int) -> None:
        """Feed prompt chunks within budget, shortest remaining prompt
        first: one forward for one chunk, one batched forward for several."""
        # Always make some progress, even when decodes use the budget up.
        budget = max(budget, min(32, self.step_token_budget))
        chunks: list[tuple[Request, list[int]]] = []
        for request in sorted(self.prefilling, key=lambda r: len(r.prompt) - r.prefilled):
            if budget <= 0:
                break
            chunk = request.prompt[request.prefilled : request.prefilled + budget]
            budget -= len(chunk)
            chunks.append((request, chunk))
        many = len(chunks) > 1
        # Every position's logits when a prompt's own log-probabilities are
        # asked for; the last one's otherwise.
        keep = 0 if any(r.params.prompt_logprobs is not None for r, _c in chunks) else 1
        if many:
            logits = self._prefill_many(chunks, keep)
        else:
            logits = self._prefill_one(*chunks[0], keep=keep)
        for index, (request, chunk) in enumerate(chunks):
            if request.params.prompt_logprobs is not None:
                rows = logits[index, logits.shape[1] - len(chunk) :]
                self._prompt_logprobs_note(request, request.prefilled, rows)
        # Every row's new length first: promoting one request swaps rows,
        # and a swap copies each row's positions up to its length.
        for request, chunk in chunks:
            self.trace.append((self.steps, "prefill", (request.id,)))
            request.prefilled += len(chunk)
        for index, (request, _chunk) in enumerate(chunks):
            if request.prefilled == len(request.prompt):
                self._promote_to_decoding(request)
                self._accept(request, logits[index, -1], events)

    def _prefill_one(self, request: Request, chunk: list[int], keep: int = 1) -> torch.Tensor:
        start, length = request.prefilled, len(chunk)
        self.cache.prefill_row(request.row, start, length)
        mask = torch.full(
            (length, start + length), self._mask_min, dtype=self.loaded.dtype, device=self.device
        ).triu(start + 1)
        positions = torch.arange(start, start + length, device=self.device)[None, :]
        input_ids = torch.tensor([chunk], device=self.device)
        return self._forward(input_ids, positions, mask[None, None], keep=keep)

    def _prefill_many(
        self, chunks: list[tuple[Request, list[int]]], keep: int = 1
    ) -> torch.Tensor:
        """Several rows' chunks in one forward. Chunks are aligned on their
        last token (so one kept logit per row is each chunk's last); the
        padding before a shorter chunk is fed at spare positions past the
        context, which no real token ever reads."""
        width = max(len(chunk) for _request, chunk in chunks)
        ids = torch.zeros((len(chunks), width), dtype=torch.long)
        positions = torch.empty((len(chunks), width), dtype=torch.long)
        kv_len = 0
        for index, (request, chunk) in enumerate(chunks):
            pad, start = width - len(chunk), request.prefilled
            ids[index, pad:] = torch.tensor(chunk)
            positions[index, :pad] = torch.arange(self.max_context, self.max_context + pad)
            positions[index, pad:] = torch.arange(start, start + len(chunk))
            kv_len = max(kv_len, start + len(chunk))
        ids, positions = ids.to(self.device), positions.to(self.device)
        rows = torch.tensor([request.row for request, _chunk in chunks], device=self.device)
        self.cache.scatter_rows(rows, positions, kv_len)
        keys = torch.arange(kv_len, device=self.device)
        valid = keys[None, None, :] <= positions[:, :, None]
        mask = torch.zeros(valid.shape, dtype=self.loaded.dtype, device=self.device)
        mask.masked_fill_(~valid, self._mask_min)
        return self._forward(ids, positions, mask[:, None], keep=keep)

    def _forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, keep: int = 1
    ) -> torch.Tensor:
        with self.model_threads():
            output = self.model(
                input_ids=input_ids,
                position_ids=positions,
                attention_mask=mask,
                use_cache=True,
                logits_to_keep=keep,
                **{self._cache_kwarg: self.cache},
            )
        return output.logits

    # --- rows ----------------------------------------------------------

    def _promote_to_decoding(self, request: Request) -> None:
        """Move a request that finished prefill into the decoding rows."""
        target = len(self.decoding)
        if request.row != target:
            other = next(r for r in self.prefilling if r.row == target)
            self._swap_rows(request, other)
        self.prefilling.remove(request)
        self.decoding.append(request)

    def _swap_rows(self, a: Request, b: Request) -> None:
        length = max(a.length, b.length, a.prefilled, b.prefilled)
        for keys, values in zip(self.cache.keys, self.cache.values, strict=True):
            for buffer in (keys, values):
                saved = buffer[a.row, :, :length].clone()
                buffer[a.row, :, :length] = buffer[b.row, :, :length]
                buffer[b.row, :, :length] = saved
        a.row, b.row = b.row, a.row

    def _slot_release(self, request: Request) -> None:
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


def chat_answer(
    model: LoadedModel | EngineBase,
    messages: list[Message],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Answer one conversation, streaming to on_text: with an idle engine
    given, or a one-slot torch engine over a loaded model."""
    try:
        params = SamplingParams(
            temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new_tokens
        )
        params.validate()
    except SamplingError as exc:
        raise RequestError(str(exc)) from None
    engine = model if isinstance(model, EngineBase) else Engine(model, slots=1, max_context=4096)
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
