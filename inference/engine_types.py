"""What the engine takes and gives: its events, finish reasons, request
errors, the output-filter protocol and per-request timings. No torch, so
callers can name these types without loading the model stack.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference.content_filter import FilterResult


class FinishReason:
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


class RequestError(ValueError):
    """A request cannot be served as given; the message says why, and
    ``code`` names the reason for clients that act on it."""

    code = ""


class ContextLengthError(RequestError):
    """The prompt leaves no room for an answer in the context."""

    code = "context_length_exceeded"


class OutputFilter(Protocol):
    """A stateful filter on one request's output text.

    ``push`` receives each new piece of text and returns what may be shown
    now (it may hold text back); ``finish`` returns the rest at the end.
    ``block=True`` ends the generation with finish reason content_filter.
    """

    def push(self, text: str) -> FilterResult: ...

    def finish(self) -> FilterResult: ...


@dataclass
class Timings:
    arrived: float
    scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    token_times: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        gaps = [b - a for a, b in itertools.pairwise(self.token_times)]
        return {
            "queue_s": _round(self.scheduled - self.arrived if self.scheduled else None),
            "ttft_s": _round(self.first_token - self.arrived if self.first_token else None),
            "total_s": _round(self.finished - self.arrived if self.finished else None),
            "itl_mean_s": _round(sum(gaps) / len(gaps) if gaps else None),
            "itl_max_s": _round(max(gaps) if gaps else None),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of a chosen token and of the most likely
    alternatives, from the distribution the sampler picked from
    (temperature and penalties applied, before top-k/top-p/min-p cuts)."""

    token: int
    logprob: float
    #: (token, logprob) of the most likely tokens, most likely first.
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class Event:
    """Something to deliver: new text, or the end of a request."""

    request_id: str
    text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, Any] | None = None
    token_gaps: list[float] | None = None
    #: On the final event: every token generated, end-of-sequence included.
    token_ids: list[int] | None = None
    #: When the request asked for them: the tokens decided since the last
    #: event, each with its log-probability (a token whose text is held
    #: back comes with a later event; the final event has the rest).
    logprobs: list[TokenLogprob] | None = None
    #: Which answer of a request that asked for several (n, beams).
    index: int = 0
    #: When asked for: the prompt's tokens, each with its log-probability
    #: given the tokens before it (the first: NaN), once, before any text.
    prompt_logprobs: list[TokenLogprob] | None = None
