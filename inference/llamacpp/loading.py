"""Recognise and open a GGUF model version folder. No Django here.

A GGUF version folder holds one ``*.gguf`` file (weights, quantized or
not) and, beside it, the transformers tokenizer files (``tokenizer.json``,
``tokenizer_config.json`` with the chat template). Prompts are rendered
and answers detokenized by that tokenizer, exactly as for a transformers
folder; llama.cpp only runs the forward passes. A folder without
tokenizer files uses the tokenizer stored in the GGUF file.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inference.loading import ModelLoadError

_LOAD_LOCK = threading.Lock()


def gguf_folder_check(path: Path) -> Path:
    """Return the folder's GGUF file; raise ModelLoadError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist")
    files = sorted(path.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"model folder {path} has no .gguf file")
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise ModelLoadError(f"model folder {path} has more than one .gguf file ({names})")
    with files[0].open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelLoadError(f"{files[0]} is not a GGUF file")
    return files[0]


@dataclass
class GGUFModel:
    """A GGUF version opened for serving: the tokenizer now, the weights
    when an engine is built (they are mapped by llama.cpp)."""

    path: Path
    gguf: Path
    tokenizer: Any
    eos_token_ids: set[int]
    device: torch.device
    #: The weights' type as llama.cpp names it (Q4_1, Q8_0, F16...), set
    #: once the engine has loaded them.
    dtype: str = "gguf"


def gguf_model_load(path: Path) -> GGUFModel:
    from transformers import AutoTokenizer

    path = Path(path)
    gguf = gguf_folder_check(path)
    has_tokenizer = any(
        (path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    )
    with _LOAD_LOCK:
        try:
            if has_tokenizer:
                tokenizer = AutoTokenizer.from_pretrained(str(path))
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(path), gguf_file=gguf.name)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the tokenizer of {path}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"model folder {path}: the tokenizer has no chat template")
    eos: set[int] = set()
    generation = path / "generation_config.json"
    if generation.is_file():
        try:
            value = json.loads(generation.read_text()).get("eos_token_id")
        except (OSError, ValueError):
            value = None
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list):
            eos.update(v for v in value if isinstance(v, int))
    if isinstance(tokenizer.eos_token_id, int):
        eos.add(tokenizer.eos_token_id)
    return GGUFModel(
        path=path, gguf=gguf, tokenizer=tokenizer, eos_token_ids=eos, device=torch.device("cpu")
    )
