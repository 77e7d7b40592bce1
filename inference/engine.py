"""Text generation over a loaded model. No Django, Redis or Channels here.

This module answers one request at a time with transformers' ``generate``;
the continuous-batching engine replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TextStreamer

from inference.loading import LoadedModel

Message = dict[str, str]


class _CallbackStreamer(TextStreamer):
    """Hand each finished piece of text to a callback instead of stdout."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)


def messages_validate(messages: list[Message]) -> None:
    if not messages:
        raise ValueError("messages must not be empty")
    for index, message in enumerate(messages):
        if message.get("role") not in {"system", "user", "assistant"}:
            raise ValueError(f"messages[{index}].role must be system, user or assistant")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{index}].content must be text")
    if messages[-1]["role"] != "user":
        raise ValueError("the last message must be the user's")


@torch.inference_mode()
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
    """Answer the conversation's last user message through the chat template."""
    messages_validate(messages)
    tokenizer = loaded.tokenizer
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(loaded.device)
    if seed is not None:
        torch.manual_seed(seed)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    output = loaded.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(loaded.eos_token_ids),
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        streamer=_CallbackStreamer(tokenizer, on_text) if on_text else None,
        **sampling,
    )
    new_tokens = output[0][inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)
