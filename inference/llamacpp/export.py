"""Turn a transformers llama-family folder into a GGUF version folder,
quantized or not. No Django here.

``gguf_write`` writes the weights as GGUF (F32 or F16) with the
``gguf`` package; ``gguf_quantize`` re-encodes a GGUF file with
llama.cpp's own quantizer (Q8_0, Q4_K_M...); ``gguf_folder_build`` does
both and puts the tokenizer files beside the GGUF file, so the new folder
is a model version the worker serves with llama.cpp. A failed build
leaves nothing half-written at the destination.

The platform renders prompts and decodes answers with the folder's own
tokenizer files; the vocabulary stored in the GGUF file is there for
llama.cpp (and for other programs that read the file).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.llamacpp.runtime import RuntimeUnavailable, bindings
from inference.staging import folder_staged

#: Architectures whose weights map onto llama.cpp's "llama" graph.
LLAMA_ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM"})

#: Files copied from the source folder into a GGUF version folder.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "config.json",
)


class ExportError(RuntimeError):
    """The folder cannot be turned into GGUF; the message says why."""


@dataclass(frozen=True)
class Quantization:
    name: str
    ftype: int  # llama_ftype
    label: str


#: What the compression job offers, best quality first.
QUANTIZATIONS: dict[str, Quantization] = {
    q.name: q
    for q in (
        Quantization("f16", 1, "F16 (16-bit, no quantization loss to speak of)"),
        Quantization("q8_0", 7, "Q8_0 (8-bit, near-lossless)"),
        Quantization("q6_k", 18, "Q6_K (6-bit)"),
        Quantization("q5_k_m", 17, "Q5_K_M (5-bit)"),
        Quantization("q4_k_m", 15, "Q4_K_M (4-bit, the usual size/quality trade)"),
        Quantization("q4_1", 3, "Q4_1 (4-bit, as SmolLM2's GGUF ships)"),
        Quantization("q4_0", 2, "Q4_0 (4-bit, fastest on CPUs)"),
    )
}


def _permute_for_rope(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k projection rows from the half-split rotary layout of
    transformers to the interleaved pairs llama.cpp's llama graph rotates."""
    rows = weights.shape[0]
    half = rows // heads // 2
    grouped = weights.reshape(heads, 2, half, *weights.shape[1:])
    return grouped.swapaxes(1, 2).reshape(weights.shape)


_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def _tensor_name(name: str) -> str | None:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    if name.startswith("model.layers."):
        index, _, rest = name.removeprefix("model.layers.").partition(".")
        target = _LAYER_NAMES.get(rest)
        if target and index.isdigit():
            return f"blk.{index}.{target}"
    if name.endswith("rotary_emb.inv_freq"):
        return None  # recomputed by llama.cpp
    raise ExportError(f"weight {name} has no place in a llama GGUF file")


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder}: cannot read config.json ({exc})") from None
    architectures = set(config.get("architectures") or [])
    if not architectures & LLAMA_ARCHITECTURES:
        names = ", ".join(sorted(architectures)) or "none"
        raise ExportError(
            f"{folder}: architecture {names} cannot be exported to GGUF "
            f"(supported: {', '.join(sorted(LLAMA_ARCHITECTURES))})"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ExportError(f"{folder}: models with scaled rotary embeddings cannot be exported yet")
    return config


def _rope_theta(config: dict[str, Any]) -> float:
    rope = config.get("rope_parameters") or {}
    return float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{folder} has no *.safetensors weights")
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception:
            # bfloat16 has no numpy type: go through torch for those.
            import torch
            from safetensors.torch import load_file as load_torch

            for name, tensor in load_torch(str(file)).items():
                tensors[name] = tensor.to(torch.float32).numpy()
    return tensors


def _tokenizer_metadata(writer: Any, folder: Path) -> None:
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    data = json.loads((folder / "tokenizer.json").read_text())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ExportError(f"{folder}: only byte-level BPE tokenizers can be exported to GGUF")
    vocab: dict[str, int] = dict(model["vocab"])
    special_ids: set[int] = set()
    user_ids: set[int] = set()
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        (special_ids if added.get("special") else user_ids).add(added["id"])
    size = max(len(tokenizer), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, index in vocab.items():
        tokens[index] = text
        if index in special_ids:
            types[index] = gguf.TokenType.CONTROL
        elif index in user_ids:
            types[index] = gguf.TokenType.USER_DEFINED
        else:
            types[index] = gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for value, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if isinstance(value, int):
            add(value)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def gguf_write(folder: Path, destination: Path, *, float16: bool = True) -> Path:
    """Write the llama-family transformers folder as one GGUF file:
    matrices in F16 (or F32), norms in F32."""
    import gguf

    folder, destination = Path(folder), Path(destination)
    config = _config(folder)
    weights = _weights(folder)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer = gguf.GGUFWriter(str(destination), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if float16 else gguf.LlamaFileType.ALL_F32)
    _tokenizer_metadata(writer, folder)
    tied = bool(config.get("tie_word_embeddings", False)) or "lm_head.weight" not in weights
    for name, array in weights.items():
        target = _tensor_name(name)
        if target is None or (target == "output.weight" and tied):
            continue
        data = array.astype(np.float32)
        if target.endswith("attn_q.weight"):
            data = _permute_for_rope(data, heads)
        elif target.endswith("attn_k.weight"):
            data = _permute_for_rope(data, kv_heads)
        if float16 and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(target, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return destination


def gguf_quantize(source: Path, destination: Path, kind: str, *, threads: int = 0) -> Path:
    """Re-encode the GGUF file at source as kind (a key of QUANTIZATIONS)."""
    quantization = QUANTIZATIONS.get(kind)
    if quantization is None:
        raise ExportError(f"unknown quantization {kind!r}: pick one of {', '.join(QUANTIZATIONS)}")
    try:
        llama_cpp = bindings()
    except RuntimeUnavailable as exc:
        raise ExportError(str(exc)) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads if threads > 0 else (os.cpu_count() or 1)
    params.ftype = quantization.ftype
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(destination).encode(), params)
    if code != 0 or not Path(destination).is_file():
        raise ExportError(f"llama.cpp could not quantize {source} to {kind} (code {code})")
    return Path(destination)


def gguf_folder_build(
    source: Path, destination: Path, *, quantization: str = "q8_0", threads: int = 0
) -> Path:
    """Build a GGUF version folder at destination from the transformers
    folder at source: ``model.gguf`` plus the tokenizer and config files."""
    source, destination = Path(source), Path(destination)
    if quantization not in QUANTIZATIONS and quantization != "f32":
        raise ExportError(
            f"unknown quantization {quantization!r}: pick one of f32, {', '.join(QUANTIZATIONS)}"
        )
    if destination.exists():
        raise ExportError(f"{destination} already exists")
    with folder_staged(destination) as staging:
        target = staging / "model.gguf"
        if quantization in ("f32", "f16"):
            gguf_write(source, target, float16=quantization == "f16")
        else:
            # Quantize from F32 so nothing is rounded twice.
            unquantized = staging / "unquantized.gguf.tmp"
            gguf_write(source, unquantized, float16=False)
            gguf_quantize(unquantized, target, quantization, threads=threads)
            unquantized.unlink()
        side_files_copy(source, staging)
    return destination


def side_files_copy(source: Path, target: Path) -> None:
    """Copy the tokenizer and config files of source into target."""
    for name in SIDE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
