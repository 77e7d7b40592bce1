"""A thin, typed layer over llama.cpp's C API (through llama-cpp-python's
ctypes bindings): load a GGUF file, keep one context whose KV cache holds
many sequences, decode a batch of tokens from several sequences in one
call, read logits. No Django, no scheduling here (see ``engine``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class RuntimeUnavailable(RuntimeError):
    """llama.cpp cannot be used here (the package is missing or broken)."""


class DecodeError(RuntimeError):
    """llama_decode failed for a reason other than a full KV cache."""


#: Types the KV cache can be kept in (ggml type ids): f16 is llama.cpp's
#: default, f32 is exact (and runs attention without flash attention,
#: whose CPU kernel computes in 16 bits), q8_0 halves f16's memory.
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}

#: llama_decode's return code when the KV cache has no room for the batch;
#: the cache is left as it was before the call.
NO_KV_SLOT = 1

_INIT_LOCK = threading.Lock()
_INITIALISED = False
_LOG_CALLBACK: Any = None  # kept alive for as long as llama.cpp may call it


def bindings() -> Any:
    try:
        import llama_cpp
    except Exception as exc:  # ImportError, or OSError when the library fails to load
        raise RuntimeUnavailable(f"llama.cpp is not available: {exc}") from None
    return llama_cpp


def available() -> str:
    """Empty when llama.cpp can be used here, else the reason it cannot."""
    try:
        bindings()
    except RuntimeUnavailable as exc:
        return str(exc)
    return ""


@functools.cache
def _cpu_has_amx() -> bool:
    """Whether the CPU has Intel AMX tiles for int8 (Linux: /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        return False
    return False


def _backend_init(llama_cpp: Any) -> None:
    """Initialise the backend once per process and route llama.cpp's
    chatter into Python logging (debug level; errors as warnings)."""
    global _INITIALISED, _LOG_CALLBACK
    with _INIT_LOCK:
        if _INITIALISED:
            return

        def log(level: int, text: bytes, _user: Any) -> None:
            message = text.decode("utf-8", "replace").rstrip()
            if message:
                # GGML_LOG_LEVEL_ERROR is 4; 5 continues the previous line
                # (the dots of a load's progress).
                logger.log(logging.WARNING if level == 4 else logging.DEBUG, "%s", message)

        _LOG_CALLBACK = llama_cpp.llama_log_callback(log)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _INITIALISED = True


@dataclass(frozen=True)
class RuntimeInfo:
    description: str
    vocab_size: int
    trained_context: int
    weights_bytes: int
    parameters: int
    layers: int


class LlamaRuntime:
    """One model and one context whose KV cache is a pool of
    ``pool_tokens`` positions shared by up to ``sequences`` sequences of
    at most ``sequence_tokens`` positions each, fed at most
    ``batch_tokens`` tokens per decode call. The pool can be resized
    (which empties it): memory follows use instead of reserving every
    sequence's whole context up front.

    Not thread-safe: one thread decodes; loading may happen on another.
    """

    def __init__(
        self,
        gguf_path: Path,
        *,
        sequences: int,
        sequence_tokens: int,
        pool_tokens: int,
        batch_tokens: int,
        threads: int = 0,
        kv_type: str = "f16",
    ) -> None:
        llama_cpp = bindings()
        _backend_init(llama_cpp)
        self._c = llama_cpp
        self.path = Path(gguf_path)
        self.sequences = max(int(sequences), 1)
        self.batch_tokens = max(int(batch_tokens), 1)
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, not {kv_type!r}")
        self.kv_type = kv_type

        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        # Weights are mapped from the file: pages are shared between
        # processes serving the same version and loaded as they are read.
        model_params.use_mmap = True
        if _cpu_has_amx():
            # llama.cpp's AMX weight buffers crash in llama_decode on small
            # quantized matrices (seen with Q8_0 on a Xeon with AMX):
            # quantized weights stay in plain buffers on such CPUs.
            model_params.use_extra_bufts = False
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise RuntimeUnavailable(f"llama.cpp cannot load {self.path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        trained = int(llama_cpp.llama_model_n_ctx_train(self._model))
        self.sequence_tokens = min(int(sequence_tokens), trained) if trained else sequence_tokens

        self.pool_tokens = 0
        self._ctx: Any = None
        self._memory: Any = None
        try:
            self.pool_resize(pool_tokens)
        except BaseException:
            llama_cpp.llama_model_free(self._model)
            raise
        self._batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, 1)
        size = self.batch_tokens
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(size,))
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(size,))
        self._seq_counts = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(size,))
        self._outputs = np.ctypeslib.as_array(self._batch.logits, shape=(size,))
        self._seq_rows = [self._batch.seq_id[i] for i in range(size)]
        self._closed = False

    def pool_resize(self, tokens: int, keep: tuple[int, ...] = ()) -> set[int]:
        """Make a new context whose KV pool holds tokens positions. The
        sequences in keep are copied over; every other one is forgotten.
        Return the kept sequences that could not be copied (they are empty
        in the new pool and must be fed again)."""
        c = self._c
        saved: dict[int, Any] = {}
        for sequence in keep if self._ctx else ():
            size = int(c.llama_state_seq_get_size(self._ctx, sequence))
            if size <= 0:
                continue
            buffer = (ctypes.c_uint8 * size)()
            if int(c.llama_state_seq_get_data(self._ctx, buffer, size, sequence)) == size:
                saved[sequence] = (buffer, size)
        tokens = max(int(tokens), self.batch_tokens)
        params = c.llama_context_default_params()
        # One pool for every sequence (as llama-server does): attention
        # masks out other sequences' positions, and memory is what the
        # pool holds, not sequences x context.
        params.n_ctx = tokens
        params.n_seq_max = self.sequences
        params.kv_unified = True
        params.n_batch = self.batch_tokens
        params.n_ubatch = self.batch_tokens
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        params.type_k = params.type_v = KV_TYPES[self.kv_type]
        if self.kv_type == "q8_0":
            params.flash_attn_type = 1  # a quantized V cache needs flash attention
        elif self.kv_type == "f32":
            params.flash_attn_type = 0  # its CPU kernel rounds through 16 bits
        if self._ctx:
            c.llama_free(self._ctx)
            self._ctx = self._memory = None
        context = c.llama_init_from_model(self._model, params)
        if not context:
            raise RuntimeUnavailable(
                f"llama.cpp cannot make a context of {tokens} positions for {self.path}"
            )
        self._ctx = context
        self._memory = c.llama_get_memory(context)
        self.pool_tokens = int(c.llama_n_ctx(context))
        lost = set(keep) - set(saved)
        for sequence, (buffer, size) in saved.items():
            if int(c.llama_state_seq_set_data(context, buffer, size, sequence)) == 0:
                self.sequence_clear(sequence)
                lost.add(sequence)
        return lost

    # --- facts -----------------------------------------------------------

    def info(self) -> RuntimeInfo:
        c = self._c
        buffer = ctypes.create_string_buffer(256)
        c.llama_model_desc(self._model, buffer, len(buffer))
        return RuntimeInfo(
            description=buffer.value.decode("utf-8", "replace"),
            vocab_size=self.vocab_size,
            trained_context=int(c.llama_model_n_ctx_train(self._model)),
            weights_bytes=int(c.llama_model_size(self._model)),
            parameters=int(c.llama_model_n_params(self._model)),
            layers=int(c.llama_model_n_layer(self._model)),
        )

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._c.llama_vocab_is_eog(self._vocab, token))

    # --- decoding ----------------------------------------------------------

    def decode(self, tokens: list[tuple[int, int, int, bool]]) -> int:
        """Feed (token, position, sequence, wants_logits) entries in one
        call. Return 0, or NO_KV_SLOT when the cache has no room (nothing
        changed then); raise DecodeError on anything else."""
        count = len(tokens)
        if not 0 < count <= self.batch_tokens:
            raise DecodeError(f"a batch holds 1 to {self.batch_tokens} tokens, not {count}")
        for index, (token, position, sequence, wants) in enumerate(tokens):
            self._tokens[index] = token
            self._positions[index] = position
            self._seq_rows[index][0] = sequence
            self._outputs[index] = 1 if wants else 0
        self._seq_counts[:count] = 1
        self._batch.n_tokens = count
        rc = int(self._c.llama_decode(self._ctx, self._batch))
        if rc not in (0, NO_KV_SLOT):
            raise DecodeError(f"llama_decode failed with code {rc}")
        return rc

    def logits(self, index: int) -> np.ndarray:
        """The logits of the index-th token of the last batch (it must have
        asked for them). A view valid until the next decode."""
        pointer = self._c.llama_get_logits_ith(self._ctx, index)
        if not pointer:
            raise DecodeError(f"no logits for batch entry {index}")
        return np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))

    def sequence_clear(self, sequence: int) -> None:
        """Forget every position of sequence."""
        self._c.llama_memory_seq_rm(self._memory, sequence, -1, -1)

    def sequence_share(self, source: int, target: int, length: int) -> None:
        """Give target the first length positions of source. In the one
        pool the cells are shared, not copied: a common prefix costs its
        memory once."""
        self._c.llama_memory_seq_cp(self._memory, source, target, 0, length)

    def sequence_truncate(self, sequence: int, length: int) -> None:
        """Forget the positions of sequence from length on."""
        self._c.llama_memory_seq_rm(self._memory, sequence, length, -1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        c = self._c
        c.llama_batch_free(self._batch)
        c.llama_free(self._ctx)
        c.llama_model_free(self._model)

    def __del__(self) -> None:  # pragma: no cover - best effort at exit
        # The interpreter may be shutting down.
        with contextlib.suppress(Exception):
            self.close()
