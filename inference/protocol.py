"""What travels through Redis between the web, the workers and the
clients. No Django here.

A request is one entry of the requests stream with a JSON ``payload``:
``{"id", "messages", "params", "model_version_id"}``, where ``params``
are the fields of ``SamplingParams``. Each generation has its own stream
whose entry ids are ``0-<seq>``, so the sequence number is the stream
position and a reader resumes with ``XREAD`` after the last one it
delivered. Events (field ``event``, JSON):

- ``{"type": "queued", "position": n}`` while waiting for a slot;
- ``{"type": "start", "model_version": ..., "worker": ...}``;
- ``{"type": "text", "text": "..."}``, the answer in order;
- ``{"type": "done", "finish_reason", "usage", "timings", "model_version"}``;
- ``{"type": "error", "error": "...", "finish_reason": "error"}``.

Each entry also carries ``w``, a mark of the worker run that wrote it: a
reader that sees the mark change checks that the stream still continues
what it delivered (another worker took over, or Redis lost its tail).

``done`` and ``error`` are final. The engine's output filters run before
text is appended, so no reader ever sees filtered text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

FINAL_TYPES = frozenset({"done", "error"})


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    type: str
    data: dict[str, Any]
    writer: str = ""

    @property
    def final(self) -> bool:
        return self.type in FINAL_TYPES

    @property
    def text(self) -> str:
        return self.data.get("text", "") if self.type == "text" else ""

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.data, "type": self.type}


def event_encode(event_type: str, **data: Any) -> dict[str, str]:
    return {"event": json.dumps({"type": event_type, **data}, separators=(",", ":"))}


def event_decode(entry_id: str, fields: dict[str, str]) -> StreamEvent:
    body = json.loads(fields["event"])
    return StreamEvent(
        seq=int(entry_id.split("-", 1)[1]),
        type=body.pop("type"),
        data=body,
        writer=fields.get("w", ""),
    )


def seq_of(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[1])


# The ``params`` of a request: checked by the web before it is queued and
# again by the worker that claims it.
MAX_STOP_STRINGS = 8
#: Alternatives a token's log-probabilities list at most (as OpenAI).
MAX_TOP_LOGPROBS = 20
MAX_STOP_LENGTH = 64
#: Answers one request may ask for (``n``), and beams of a beam search.
MAX_CHOICES = 16
MAX_BEAMS = 16


class SamplingError(ValueError):
    """A sampling parameter is out of range; the message names it."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    #: Drop tokens less likely than min_p times the most likely one (0: off).
    min_p: float = 0.0
    #: Multiplicative penalty on every token seen so far, as transformers.
    repetition_penalty: float = 1.0
    #: OpenAI's: subtracted from a token's logit once per time it was
    #: generated (frequency) and once if it was generated at all (presence).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    max_new_tokens: int = 512
    stop: tuple[str, ...] = field(default_factory=tuple)
    #: Generate exactly max_new_tokens, ignoring end-of-sequence (benchmarks).
    ignore_eos: bool = False
    #: Log-probabilities of each chosen token and of this many most likely
    #: alternatives (0 to MAX_TOP_LOGPROBS); None: not computed.
    logprobs: int | None = None
    #: Log-probabilities of the prompt's own tokens (each from the ones
    #: before it; the first has none) with this many alternatives: for
    #: completions that echo their prompt. None: not computed.
    prompt_logprobs: int | None = None
    #: The last message is an assistant's answer to go on with (a stopped or
    #: length-cut answer continued), not a turn to answer.
    continue_final_message: bool = False
    #: Independent answers to the prompt, sharing its prefill; with beam
    #: search, the best n beams.
    n: int = 1
    #: Beam search with this many beams when more than 1 (sampling
    #: parameters other than the penalties are then unused).
    beams: int = 1
    #: Beam search: a finished beam's score is its log-probability divided
    #: by its length to this power (above 0 favours longer answers).
    length_penalty: float = 1.0
    #: Beam search: True ends once ``beams`` answers are finished; False
    #: once no running beam can beat the finished ones as scored now;
    #: "never" once none could at the longest length (as transformers).
    early_stopping: bool | str = False
    #: OpenAI's ``response_format``: ``{"type": "json_object"}`` or
    #: ``{"type": "json_schema", "json_schema": {"schema": ...}}`` constrain
    #: decoding to JSON (``inference.structured``); None or text: free.
    response_format: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SamplingParams:
        """Build and validate parameters from untrusted input."""
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SamplingError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        stop = data.pop("stop", ())
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
            raise SamplingError("stop must be a string or a list of strings")
        try:
            params = cls(stop=tuple(stop), **data)
        except TypeError as exc:
            raise SamplingError(str(exc)) from None
        params.validate()
        return params

    def validate(self) -> None:
        def number(name: str, value: Any, low: float, high: float) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SamplingError(f"{name} must be a number")
            if not math.isfinite(value) or not low <= value <= high:
                raise SamplingError(f"{name} must be between {low} and {high}, got {value}")

        number("temperature", self.temperature, 0.0, 5.0)
        number("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0.0:
            raise SamplingError("top_p must be greater than 0")
        number("repetition_penalty", self.repetition_penalty, 0.1, 10.0)
        number("min_p", self.min_p, 0.0, 1.0)
        number("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        number("presence_penalty", self.presence_penalty, -2.0, 2.0)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingError("top_k must be a whole number, 0 or more (0 turns it off)")
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or self.max_new_tokens < 1
        ):
            raise SamplingError("max_new_tokens must be a whole number, 1 or more")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            raise SamplingError("seed must be a whole number, 0 or more")
        counts = (("logprobs", self.logprobs), ("prompt_logprobs", self.prompt_logprobs))
        for name, value in counts:
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= MAX_TOP_LOGPROBS
            ):
                raise SamplingError(
                    f"{name} must be a whole number from 0 to {MAX_TOP_LOGPROBS}, or null"
                )
        for name, value, high in (("n", self.n, MAX_CHOICES), ("beams", self.beams, MAX_BEAMS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise SamplingError(f"{name} must be a whole number from 1 to {high}")
        number("length_penalty", self.length_penalty, -10.0, 10.0)
        if not isinstance(self.early_stopping, bool) and self.early_stopping != "never":
            raise SamplingError('early_stopping must be true, false or "never"')
        if self.beams > 1:
            if self.n > self.beams:
                raise SamplingError(
                    f"n ({self.n}) must not exceed beams ({self.beams}): beam search returns "
                    "its best beams"
                )
            if self.logprobs is not None:
                raise SamplingError("logprobs are not available with beam search")
        if self.response_format is not None:
            from inference.structured import (
                StructuredError,
                response_format_check,
                response_format_constrains,
            )

            try:
                response_format_check(self.response_format)
            except StructuredError as exc:
                raise SamplingError(f"response_format: {exc}") from None
            if response_format_constrains(self.response_format):
                if self.beams > 1:
                    raise SamplingError("response_format is not available with beam search")
                if self.ignore_eos:
                    raise SamplingError("response_format cannot be combined with ignore_eos")
        if not isinstance(self.continue_final_message, bool):
            raise SamplingError("continue_final_message must be true or false")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise SamplingError(f"stop takes at most {MAX_STOP_STRINGS} strings")
        for text in self.stop:
            if not text or len(text) > MAX_STOP_LENGTH:
                raise SamplingError(f"each stop string must be 1 to {MAX_STOP_LENGTH} characters")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def constrained(self) -> bool:
        """Decoding follows a grammar (structured output)."""
        if self.response_format is None:
            return False
        from inference.structured import response_format_constrains

        return response_format_constrains(self.response_format)

    @property
    def beam_search(self) -> bool:
        return self.beams > 1

    @property
    def rows(self) -> int:
        """Sequences the request runs at once (each a row of KV memory)."""
        return self.beams if self.beam_search else self.n
