"""A static key/value cache with one row per engine slot. No Django here.

Why static rather than paged: one preallocated buffer per layer
([slots, kv_heads, max_len, head_dim]) makes every decode step one
scatter and a view, with no allocation and no block tables. On the CPU
the buffers are anonymous memory maps the operating system backs page
by page as positions are first written, so resident memory follows the
tokens held, not slots x context. Rows are kept compact
(running requests occupy rows 0..n-1) so a decode step attends over a
plain slice of the buffer.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
import torch


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed buffer; on the CPU an anonymous memory map, whose zero
    pages the operating system backs only once written, in small pages
    (huge pages would back a slot's whole context at its first token)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    element = torch.empty((), dtype=dtype).element_size()
    size = max(math.prod(shape) * element, 1)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    raw = np.frombuffer(memory, dtype={1: np.uint8, 2: np.uint16, 4: np.float32}[element])
    return torch.from_numpy(raw.reshape(shape)).view(dtype)


class SlotKVCache:
    """Per-slot KV storage that a transformers decoder layer writes through.

    Before each forward the engine calls ``decode_batch`` or ``prefill_row``
    to say which rows and positions the new keys and values belong to;
    ``update`` (called by every attention layer) stores them there and
    returns the keys and values that the layer should attend over.
    """

    is_compileable = False

    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
        spare: int = 0,
    ) -> None:
        # spare positions past max_len take writes nobody reads (padding).
        shape = (slots, kv_heads, max_len + spare, head_dim)
        self.keys = [_zeros(shape, dtype, device) for _ in range(layers)]
        self.values = [_zeros(shape, dtype, device) for _ in range(layers)]
        self.slots = slots
        self.max_len = max_len
        self._rows: slice | torch.Tensor = slice(0, 0)
        self._row_index: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._kv_len = 0

    # --- what the next forward writes ----------------------------------

    def decode_batch(
        self, rows: int, positions: torch.Tensor, kv_len: int, width: int = 1
    ) -> None:
        """Rows 0..rows-1 each add width tokens from positions[i] on (one
        token, or a token and its speculative draft); attend over the first
        kv_len positions."""
        self._rows = slice(0, rows)
        self._row_index = torch.arange(rows, device=positions.device)[:, None]
        self._positions = positions[:, None] + torch.arange(width, device=positions.device)
        self._kv_len = kv_len

    def scatter_rows(self, rows: torch.Tensor, positions: torch.Tensor, kv_len: int) -> None:
        """The given rows (any, in this order) each add tokens at their
        positions ([rows, width]); attend over the first kv_len positions."""
        self._rows = rows
        self._row_index = rows[:, None]
        self._positions = positions
        self._kv_len = kv_len

    def prefill_row(self, row: int, start: int, length: int) -> None:
        """Row adds length tokens from position start."""
        self._rows = slice(row, row + 1)
        self._row_index = None
        self._positions = torch.arange(start, start + length)
        self._kv_len = start + length

    # --- the transformers Cache protocol (the parts layers call) --------

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._row_index is not None:
            # Decode: each row writes at its own positions. Indexing with
            # [rows, :, positions] puts the token axis before the heads.
            keys[self._row_index, :, self._positions] = key_states.transpose(1, 2)
            values[self._row_index, :, self._positions] = value_states.transpose(1, 2)
        else:
            assert self._positions is not None
            start = int(self._positions[0])
            end = start + key_states.shape[2]
            keys[self._rows, :, start:end] = key_states
            values[self._rows, :, start:end] = value_states
        return (
            keys[self._rows, :, : self._kv_len],
            values[self._rows, :, : self._kv_len],
        )

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    # --- row management -------------------------------------------------

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy the first length positions of row source into row target."""
        if source == target or length == 0:
            return
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]
