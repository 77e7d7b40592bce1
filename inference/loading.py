"""Load a model version folder onto a device. No Django here."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    pass


def device_resolve(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelLoadError("INFERENCE_DEVICE=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def dtype_resolve(preference: str, device: torch.device) -> torch.dtype:
    if preference != "auto":
        return _DTYPES[preference]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def threads_configure(threads: int) -> None:
    """Use threads intra-op threads; 0 leaves torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def model_folder_check(path: Path) -> None:
    """Raise ModelLoadError naming what a model folder lacks."""
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist")
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"model folder {path} has no config.json")
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model folder {path}: config.json is not valid JSON ({exc})"
        ) from None
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelLoadError(f"model folder {path} has no weights (*.safetensors)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ModelLoadError(f"model folder {path} has no tokenizer")


@dataclass
class LoadedModel:
    path: Path
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return ids


def model_load(path: Path, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load weights and tokenizer from path, in eval mode, on the device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    model_folder_check(path)
    target = device_resolve(device)
    torch_dtype = dtype_resolve(dtype, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    except Exception as exc:
        raise ModelLoadError(f"cannot load model folder {path}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"model folder {path}: the tokenizer has no chat template")
    model.to(target)  # type: ignore[arg-type]
    model.eval()
    logger.info("Loaded %s on %s as %s", path, target, torch_dtype)
    return LoadedModel(
        path=path, model=model, tokenizer=tokenizer, device=target, dtype=torch_dtype
    )
