"""Pick the engine for a model version folder. No Django here.

``folder_backend`` (from ``inference.formats``) names the runtime.

A folder with one ``*.gguf`` file is served by llama.cpp
(``inference.llamacpp``); a transformers folder (``config.json`` and
``*.safetensors``) by the torch engine (``inference.engine``). Both take
the same requests and give the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.engine_base import EngineBase
from inference.formats import folder_backend, is_gguf_folder
from inference.llamacpp.loading import gguf_folder_check
from inference.loading import ModelLoadError, model_folder_check

__all__ = ["EngineOptions", "engine_open", "folder_backend", "folder_check"]


@dataclass(frozen=True)
class EngineOptions:
    """How engines are sized. The step budget of llama.cpp engines is
    larger: its prefill is cheap enough per token that bigger chunks keep
    time to first token low without stalling running streams."""

    slots: int = 32
    max_context: int = 2048
    step_token_budget: int = 64
    speculative_tokens: int = 4
    speculative_max_batch: int = 4
    gguf_step_token_budget: int = 256
    gguf_kv_tokens: int = 4096
    gguf_kv_max_tokens: int = 0
    gguf_kv_type: str = "f16"
    threads: int = 0


def folder_check(path: Path) -> None:
    """Raise ModelLoadError naming what a model version folder lacks."""
    path = Path(path)
    if path.is_dir() and any(path.glob("*.gguf")):
        # Without tokenizer files beside it, the tokenizer stored in the
        # GGUF file serves.
        gguf_folder_check(path)
        return
    model_folder_check(path)


def engine_open(
    path: Path, *, device: str = "auto", dtype: str = "auto", options: EngineOptions | None = None
) -> EngineBase:
    """Load the folder at path and return an engine serving it."""
    options = options or EngineOptions()
    path = Path(path)
    if is_gguf_folder(path):
        from inference.llamacpp.engine import LlamaCppEngine
        from inference.llamacpp.loading import gguf_model_load
        from inference.llamacpp.runtime import RuntimeUnavailable

        loaded = gguf_model_load(path)
        try:
            return LlamaCppEngine(
                loaded,
                slots=options.slots,
                max_context=options.max_context,
                step_token_budget=options.gguf_step_token_budget,
                kv_tokens=options.gguf_kv_tokens,
                kv_max_tokens=options.gguf_kv_max_tokens,
                kv_type=options.gguf_kv_type,
                threads=options.threads,
            )
        except RuntimeUnavailable as exc:
            raise ModelLoadError(str(exc)) from None
    from inference.engine import Engine
    from inference.loading import model_load

    return Engine(
        model_load(path, device=device, dtype=dtype),
        slots=options.slots,
        max_context=options.max_context,
        step_token_budget=options.step_token_budget,
        speculative_tokens=options.speculative_tokens,
        speculative_max_batch=options.speculative_max_batch,
    )
