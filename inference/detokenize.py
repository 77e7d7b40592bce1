"""Turn a growing list of token ids into text deltas, safely. No Django here.

``IncrementalDetokenizer`` never emits half a multi-byte character: while
the decoded tail ends in U+FFFD it waits for more tokens, at most
``MAX_HOLD_TOKENS`` (a UTF-8 character spans at most four bytes).
``StopMatcher`` holds back text that could still become a stop string and
never lets a stop string through. ``token_bytes`` gives one token's own
bytes (for log-probabilities, where a token may be part of a character).
"""

from __future__ import annotations

import functools
import re
from typing import Any

REPLACEMENT = "\ufffd"
MAX_HOLD_TOKENS = 4


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # ids before this are already emitted and settled
        self._read = 0  # ids before this are emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to show."""
        self.ids.append(token_id)
        return self._delta(final=False)

    def flush(self) -> str:
        """Return whatever is still held back (the stream is ending)."""
        return self._delta(final=True)

    def _delta(self, *, final: bool) -> str:
        # Decoding from a little before the new tokens keeps the tokenizer's
        # spacing rules (leading spaces, merges) the same as a full decode.
        settled = self._decode(self.ids[self._prefix : self._read])
        current = self._decode(self.ids[self._prefix :])
        held = len(self.ids) - self._read
        delta = current[len(settled) :] if current.startswith(settled) else current
        incomplete = REPLACEMENT in delta
        if not final and (not delta or (incomplete and held < MAX_HOLD_TOKENS)):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        # Past the bound the bytes cannot form a character: drop them.
        return delta.replace(REPLACEMENT, "") if incomplete else delta


class StopMatcher:
    """Cut the stream at the first stop string, holding back partial ones."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = self._partial_suffix()
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest tail of pending that starts a stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character that stands for
    each byte in a byte-level BPE vocabulary."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The bytes token_id stands for: byte-level BPE pieces mapped back to
    bytes, SentencePiece byte tokens (<0xE2>) as their byte, "▁" as a
    space, special tokens as their text."""
    if token_id in set(getattr(tokenizer, "all_special_ids", ()) or ()):
        return tokenizer.decode([token_id]).encode()
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str):
        return tokenizer.decode([token_id]).encode()
    match = _BYTE_TOKEN.match(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    decoder = _byte_level_decoder()
    if all(char in decoder for char in piece):
        return bytes(decoder[char] for char in piece)
    return piece.replace("\u2581", " ").encode()
