"""Load a model version folder onto a device. No Django here."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
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


def dtype_resolve(
    preference: str, device: torch.device, shape: tuple[int, int] = (576, 1536)
) -> torch.dtype:
    """The dtype to run in: as asked, bf16 on CUDA, and on the CPU whichever
    of float32 and bfloat16 runs a batched decode-sized matmul faster here
    (bf16 wins on CPUs with AMX or AVX-512 BF16, loses badly without)."""
    if preference != "auto":
        return _DTYPES[preference]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return cpu_dtype_measure(*shape)


@functools.cache
def cpu_dtype_measure(hidden: int, intermediate: int, batch: int = 16) -> torch.dtype:
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        left = torch.randn(batch, hidden, dtype=dtype)
        right = torch.randn(hidden, intermediate, dtype=dtype)
        for _ in range(3):
            torch.mm(left, right)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                torch.mm(left, right)
            best = min(best, time.perf_counter() - start)
        timings[dtype] = best
    # Prefer float32 unless bf16 is clearly faster: it is exact and needs
    # no conversion of the saved weights.
    chosen = (
        torch.bfloat16
        if timings[torch.bfloat16] * 1.15 < timings[torch.float32]
        else torch.float32
    )
    logger.info(
        "CPU dtype by measurement: float32 %.2f ms, bfloat16 %.2f ms -> %s",
        timings[torch.float32] * 100, timings[torch.bfloat16] * 100, chosen,
    )  # fmt: skip
    return chosen


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


_LOAD_LOCK = threading.Lock()


def model_load(path: Path, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load weights and tokenizer from path, in eval mode, on the device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    model_folder_check(path)
    target = device_resolve(device)
    config = json.loads((path / "config.json").read_text())
    shape = (int(config.get("hidden_size", 576)), int(config.get("intermediate_size", 1536)))
    torch_dtype = dtype_resolve(dtype, target, shape)
    # transformers builds models under process-wide patches (empty
    # weights on the meta device): two loads in threads of one process
    # would see each other's, so loads take turns.
    with _LOAD_LOCK:
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
