"""Structured output: decoding held to the JSON that an OpenAI
``response_format`` asks for. llguidance works out, at each step, which
tokens keep the answer a valid prefix, and the mask sets every other
logit to -inf before the sampler sees the row.

No Django here, and nothing heavy at import: llguidance, numpy and torch
load on first use, so the web process can check a request's format with
``response_format_check`` without loading torch.

The grammar allows no free whitespace: items are separated by ", " and
keys by ": " (as ``json.dumps`` writes them), so a model cannot spend its
tokens on blank space, and an answer that the grammar ends always parses
with ``json.loads``. A string, array or object the schema leaves unbounded
is bounded only by the request's token limit.

A schema is always followed as JSON Schema reads it, ``strict`` or not:
an object takes keys beyond its ``properties`` unless
``additionalProperties`` is false (OpenAI's strict mode requires schemas
to say so).

Use::

    response_format_check(response_format)  # at the API, for a 400
    compiler = grammar_compiler(tokenizer, vocab_size, eos_ids=end_ids)
    matcher = compiler.compile(response_format).matcher()  # per request
    logits = matcher.mask(logits)  # each step, before sampling
    matcher.accept(token)  # each step, after sampling
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import llguidance
    import numpy as np
    import torch

#: The largest schema accepted, as compact JSON text (UTF-8 bytes).
MAX_SCHEMA_BYTES = 64 * 1024
#: Refusal reasons are cut to this many characters (some quote the schema).
REASON_MAX_CHARS = 300
#: Schemas checked without a tokenizer, remembered by their JSON text.
CHECKED_CACHE_SIZE = 256
#: Compiled grammars each tokenizer's compiler keeps.
COMPILED_CACHE_SIZE = 64

_ANY_OBJECT = '{"type":"object"}'
_SCHEMA = "response_format.json_schema.schema"


class StructuredError(ValueError):
    """A response format that cannot be followed; the message says why and
    can go back to the client as it is (HTTP 400)."""


def response_format_constrains(response_format: Any) -> bool:
    """Whether response_format constrains the answer: False for None and
    ``{"type": "text"}``. A malformed value counts as constraining, so
    that compiling it raises instead of silently dropping a constraint."""
    if response_format is None:
        return False
    return not (isinstance(response_format, dict) and response_format.get("type") == "text")


def response_format_check(response_format: Any) -> None:
    """Raise StructuredError unless response_format is None or an OpenAI
    response format that can be followed: ``{"type": "text"}``,
    ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
    {"name": ..., "schema": {...}, "strict": ..., "description": ...}}``
    with a schema llguidance supports. Needs no tokenizer; a schema's
    verdict is cached, so checking a known one costs a ``json.dumps``."""
    if response_format is None:
        return
    text = _schema_text(response_format)
    if text is not None:
        _grammar_get(text)


def _schema_text(response_format: Any) -> str | None:
    """The JSON schema, as compact text, that response_format asks the
    answer to follow; None for plain text."""
    if not isinstance(response_format, dict):
        raise StructuredError("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _ANY_OBJECT
    if kind != "json_schema":
        raise StructuredError("response_format.type must be text, json_object or json_schema")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise StructuredError("response_format.json_schema must be an object")
    # OpenAI requires a name; it does not change the grammar, so a missing
    # one is let through, but a present one must be what OpenAI takes.
    for field, kinds, label in (
        ("name", str, "a string"),
        ("description", str, "a string"),
        ("strict", bool, "true or false"),
    ):
        if spec.get(field) is not None and not isinstance(spec[field], kinds):
            raise StructuredError(f"response_format.json_schema.{field} must be {label}")
    schema = spec.get("schema")
    if schema is None:
        raise StructuredError(f"{_SCHEMA} is missing")
    if not isinstance(schema, dict):
        raise StructuredError(f"{_SCHEMA} must be an object")
    try:
        text = json.dumps(schema, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as error:
        raise StructuredError(f"{_SCHEMA} is not valid JSON: {error}") from None
    size = len(text.encode())
    if size > MAX_SCHEMA_BYTES:
        raise StructuredError(
            f"{_SCHEMA} is too large: {size} bytes as JSON, at most {MAX_SCHEMA_BYTES}"
        )
    return text


@functools.lru_cache(maxsize=CHECKED_CACHE_SIZE)
def _grammar_build(text: str) -> tuple[str, str]:
    """The llguidance grammar for a schema's JSON text and, when llguidance
    refuses the schema, the reason (else ""). Refusals are cached too."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            text,
            overrides={
                "whitespace_flexible": False,
                "item_separator": ", ",
                "key_separator": ": ",
            },
        )
    except ValueError as error:
        return "", str(error)
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        return "", messages[0] if messages else "the schema is not supported"
    return grammar, ""


def _grammar_get(text: str) -> str:
    grammar, reason = _grammar_build(text)
    if reason:
        raise StructuredError(f"{_SCHEMA} cannot be followed: {_reason_short(reason)}")
    return grammar


def _reason_short(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > REASON_MAX_CHARS:
        reason = reason[: REASON_MAX_CHARS - 3] + "..."
    return reason


# --- per tokenizer ---------------------------------------------------------

_COMPILERS: weakref.WeakKeyDictionary[Any, dict[tuple[int, frozenset[int]], GrammarCompiler]]
_COMPILERS = weakref.WeakKeyDictionary()
_COMPILERS_LOCK = threading.Lock()


def grammar_compiler(
    tokenizer: Any, vocab_size: int, *, eos_ids: set[int] | frozenset[int] | None = None
) -> GrammarCompiler:
    """The compiler for a Hugging Face fast tokenizer, built once per
    tokenizer object, vocab_size and eos_ids (half a second for a 49k
    vocabulary) and kept while the tokenizer lives.

    vocab_size is the model's logits width, at least ``len(tokenizer)``;
    ids from ``len(tokenizer)`` up are never allowed. eos_ids are the ids
    that end an answer (the engine's end tokens; default the tokenizer's
    ``eos_token_id``): once the JSON value is complete the mask allows
    these and nothing else, and before that none of them."""
    if eos_ids is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; pass eos_ids")
        eos_ids = {tokenizer.eos_token_id}
    ends = frozenset(int(token) for token in eos_ids)
    if not ends:
        raise ValueError("eos_ids is empty")
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is under the tokenizer's {len(tokenizer)}")
    if not all(0 <= token < vocab_size for token in ends):
        raise ValueError(f"eos_ids {sorted(ends)} are not all under vocab_size {vocab_size}")
    key = (vocab_size, ends)
    # One lock for all: building takes a while, and two threads asking for
    # the same tokenizer at start-up should build it once.
    with _COMPILERS_LOCK:
        compilers = _COMPILERS.setdefault(tokenizer, {})
        compiler = compilers.get(key)
        if compiler is None:
            compiler = compilers[key] = GrammarCompiler(tokenizer, vocab_size, ends)
    return compiler


class GrammarCompiler:
    """Turns response formats into grammars over one tokenizer's vocabulary.
    Safe to share between threads. Build it with ``grammar_compiler``."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: frozenset[int]) -> None:
        import llguidance.hf

        self.vocab_size = vocab_size
        self.eos_ids = eos_ids
        self._tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_ids)
        )
        self._compiled: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, response_format: Any) -> CompiledGrammar:
        """The grammar for a constraining response format (see
        ``response_format_constrains``), cached by its schema text; raise
        StructuredError for one that cannot be followed. About a
        millisecond for a typical schema the first time."""
        text = _schema_text(response_format)
        if text is None:
            raise ValueError("a text response format has no grammar")
        with self._lock:
            compiled = self._compiled.get(text)
            if compiled is not None:
                self._compiled.move_to_end(text)
                return compiled
        import llguidance

        grammar = _grammar_get(text)
        initial = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if initial.is_error():
            # Limits that depend on the vocabulary (lexer size) show here.
            reason = _reason_short(initial.get_error())
            raise StructuredError(f"{_SCHEMA} cannot be followed: {reason}")
        compiled = CompiledGrammar(initial, self.vocab_size, self.eos_ids)
        with self._lock:
            self._compiled[text] = compiled
            while len(self._compiled) > COMPILED_CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled


class CompiledGrammar:
    """A response format's grammar over one vocabulary: immutable, shared by
    every request that asks for the same format."""

    def __init__(
        self, initial: llguidance.LLMatcher, vocab_size: int, eos_ids: frozenset[int]
    ) -> None:
        self._initial = initial  # never advanced; only copied
        self.vocab_size = vocab_size
        self.eos_ids = eos_ids

    def matcher(self) -> GrammarMatcher:
        """A matcher at the start of the answer (a copy: microseconds)."""
        return GrammarMatcher(self._initial.deep_copy(), self.vocab_size, self.eos_ids)


class GrammarMatcher:
    """Where one answer stands in its grammar: the mask for the next token
    and the tokens taken so far. One request's; not for concurrent use."""

    def __init__(
        self, matcher: llguidance.LLMatcher, vocab_size: int, eos_ids: frozenset[int]
    ) -> None:
        import numpy as np

        self._matcher = matcher
        self.vocab_size = vocab_size
        self.eos_ids = eos_ids
        self._words = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    @property
    def finished(self) -> bool:
        """Whether the JSON value is complete and only an end token may
        follow. A value that could go on (a top-level number) is not
        finished; the mask then allows end tokens beside the rest."""
        return self._matcher.is_stopped()

    def allowed(self) -> np.ndarray:
        """Whether each token may come next: uint8 0 or 1, vocab_size long."""
        import numpy as np

        words = self._words
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return np.unpackbits(words.view(np.uint8), count=self.vocab_size, bitorder="little")

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits of the tokens that may not come next to -inf, in
        place, and return logits: a 1-D row of vocab_size floats (float32,
        bfloat16, float16 or float64; any device). Tens of microseconds
        for a 49k row on CPU, most of it in writing the row."""
        import torch

        if logits.dim() != 1 or logits.shape[0] != self.vocab_size:
            raise ValueError(f"logits must be one row of {self.vocab_size}, not {logits.shape}")
        allowed = self.allowed()
        bits_dtype = _bits_dtype(logits.dtype)
        if logits.device.type == "cpu" and logits.is_contiguous() and bits_dtype is not None:
            _blank_bitwise(logits, allowed, bits_dtype)
        else:
            blocked = torch.from_numpy(allowed == 0).to(logits.device, non_blocking=True)
            logits.masked_fill_(blocked, float("-inf"))
        return logits

    def accept(self, token: int) -> None:
        """Advance past token, the one sampled from the masked row; raise
        StructuredError (and stay where it was) for a token the mask did
        not allow. An end token after a finished value is accepted."""
        matcher = self._matcher
        if matcher.is_stopped():
            # llguidance takes nothing more once stopped; only the end is
            # left, and it needs no advancing.
            fits = token in self.eos_ids
        else:
            fits = 0 <= token < self.vocab_size and matcher.try_consume_tokens([token]) == 1
        if not fits:
            raise StructuredError(f"token {token} does not fit the response format here")

    def rollback(self, count: int) -> None:
        """Undo the last count accepted tokens (for rejected drafts)."""
        if count and not self._matcher.rollback(count):
            raise ValueError(f"cannot roll back {count} tokens")

    def fork(self) -> GrammarMatcher:
        """An independent copy at the same place (microseconds): for the
        samples of one prompt, which start where the prompt left off."""
        return GrammarMatcher(self._matcher.deep_copy(), self.vocab_size, self.eos_ids)


@functools.cache
def _bits_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """The integer dtype as wide as float dtype, None for other dtypes."""
    import torch

    widths = {
        torch.float32: torch.int32,
        torch.bfloat16: torch.int16,
        torch.float16: torch.int16,
        torch.float64: torch.int64,
    }
    return widths.get(dtype)


@functools.cache
def _negative_infinity_bits(dtype: torch.dtype, bits_dtype: torch.dtype) -> int:
    import torch

    return int(torch.tensor(float("-inf"), dtype=dtype).view(bits_dtype).item())


def _blank_bitwise(logits: torch.Tensor, allowed: np.ndarray, bits_dtype: torch.dtype) -> None:
    """logits[i] = logits[i] if allowed[i] else -inf, on the bit patterns
    through a numpy view: branch-free, so a mask that alternates often
    costs the same as a plain one, and 2-4 times faster on CPU than
    ``masked_fill_``, whose cost follows the mask's pattern."""
    import numpy as np

    bits = logits.detach().view(bits_dtype).numpy()
    keep = allowed.astype(bits.dtype)
    np.negative(keep, out=keep)  # all ones where allowed, zeros elsewhere
    np.bitwise_and(bits, keep, out=bits)
    np.invert(keep, out=keep)
    negative_infinity = bits.dtype.type(_negative_infinity_bits(logits.dtype, bits_dtype))
    np.bitwise_and(keep, negative_infinity, out=keep)
    np.bitwise_or(bits, keep, out=bits)
