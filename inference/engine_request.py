"""A request inside an engine, its group of answers, and the chat
prompt it is rendered from. No Django here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from inference.beam import BeamSearch
from inference.detokenize import IncrementalDetokenizer, StopMatcher
from inference.engine_types import (
    OutputFilter,
    RequestError,
    Timings,
    TokenLogprob,
)
from inference.protocol import SamplingParams
from inference.sampling import Sampler

if TYPE_CHECKING:
    from inference.structured import GrammarMatcher
from inference.speculative import PromptLookup

Message = dict[str, str]


@dataclass
class Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    sampler: Sampler
    detok: IncrementalDetokenizer
    stops: StopMatcher
    output_filter: OutputFilter | None
    timings: Timings
    row: int = -1  # the request's place in the KV memory
    prefilled: int = 0  # prompt tokens already in the cache
    generated: list[int] = field(default_factory=list)
    last_token: int | None = None
    cancelled: bool = False
    drafts: PromptLookup = field(default_factory=lambda: PromptLookup())
    #: Log-probabilities of the tokens decided since the last event.
    logprobs: list[TokenLogprob] = field(default_factory=list)
    #: Structured output: the grammar state that masks each next token.
    grammar: GrammarMatcher | None = None
    #: The prompt's token log-probabilities gathered while it is fed.
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    #: Several answers to one prompt (``n``, or beams) are a group; index
    #: is this one's place in it. Its events carry the group's id.
    group: Group | None = None
    index: int = 0
    #: The text given to the output filter and the text it showed, while
    #: log-probabilities are asked for; withheld once they differ.
    filter_raw: str = ""
    filter_shown: str = ""
    logprobs_withheld: bool = False

    @property
    def length(self) -> int:
        """Tokens in the cache for this request."""
        return self.prefilled + max(len(self.generated) - 1, 0)

    @property
    def event_id(self) -> str:
        """The id the request was submitted under."""
        return self.group.id if self.group is not None else self.id


@dataclass
class Group:
    """The sequences of one request that asked for several (``n`` samples
    or a beam search). The first member is fed the prompt; the others
    start from a copy of its KV memory once it is in (``pending`` until
    then), so the prompt is computed once."""

    id: str
    members: list[Request]
    pending: list[Request] = field(default_factory=list)
    beam: BeamSearch | None = None

    @property
    def primary(self) -> Request:
        return self.members[0]

    @property
    def ended(self) -> bool:
        return all(member.cancelled for member in self.members)


def messages_check(messages: Any) -> None:
    """Raise RequestError unless messages is a chat the template can render."""
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


def chat_prompt_ids(
    tokenizer: Any, messages: list[Message], *, continue_final: bool = False
) -> list[int]:
    """Render chat messages through the tokenizer's template into token ids:
    ready for a new assistant turn, or (``continue_final``) ending inside
    the last message, an assistant's, so the model goes on with it."""
    messages_check(messages)
    if continue_final:
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
            raise RequestError("only an assistant message with text can be continued")
        ids = tokenizer.apply_chat_template(
            messages, continue_final_message=True, add_generation_prompt=False, tokenize=True
        )
    else:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with torch using count intra-op threads."""
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
