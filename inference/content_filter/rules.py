"""Rule specs compiled into rules: limits, kinds, presets and the check
of regular expressions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import regex

from inference.content_filter.text import keyword_forms

#: Seconds one regular expression may run on a text of up to
#: REGEX_TIMEOUT_CHARS characters; a longer text gets proportionally more
#: (a pattern that passed the backtracking check runs in linear time, so
#: a fixed limit would block long, harmless texts).
REGEX_TIMEOUT_S = 0.02
REGEX_TIMEOUT_CHARS = 16_000
#: Seconds a pattern may take on the probe texts when it is saved.
PATTERN_CHECK_TIMEOUT_S = 0.05
#: Text a stream filter may hold back before it lets the oldest go.
MAX_HOLD_CHARS = 1000
#: Characters of emitted text kept as context (word boundaries, spacing).
CONTEXT_CHARS = 48
#: Characters shown on each side of a match in an audit excerpt.
EXCERPT_CHARS = 60
#: Hits one text (or one answer) adds to the audit; masking and blocking
#: still apply to every match, only the record stops.
MAX_HITS = 50

KINDS = ("keywords", "regex", "preset")
SCOPES = ("input", "output", "both")
ACTIONS = ("block", "mask", "flag")
SURFACES = ("all", "chat", "widget", "api")


class RuleError(Exception):
    """A rule that cannot be compiled; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in _digits(number)]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _phone_valid(text: str) -> bool:
    count = len(_digits(text))
    if not 7 <= count <= 15:
        return False
    # A bare run of digits is more often an order or a reference number.
    return text.lstrip().startswith("+") or any(c in text for c in " .-()") or count >= 10


@dataclass(frozen=True)
class _Preset:
    pattern: str
    label: str
    validate: Callable[[str], bool] | None = None


PRESETS: dict[str, _Preset] = {
    "email": _Preset(
        r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*\.[A-Za-z]{2,24}(?![\w-])",
        "[email]",
    ),
    "phone": _Preset(
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,4}(?!\w)",
        "[phone]",
        _phone_valid,
    ),
    "card": _Preset(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", "[card]", luhn_valid),
    "url": _Preset(r"(?i)(?<![\w@])(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", "[link]"),
}

#: Texts that make badly written patterns backtrack for a long time.
_PROBES = (
    "a" * 3000 + "!",
    "1" * 3000 + "x",
    " " * 3000 + "x",
    "ab" * 1500 + "!",
    ("hello world, " * 250) + "\u0000",
)


def pattern_check(pattern: str) -> None:
    """Raise RuleError when pattern does not compile, matches empty text,
    or runs too long on texts built to make it backtrack."""
    if not pattern.strip():
        raise RuleError("pattern", "Write a regular expression.")
    try:
        compiled = regex.compile(pattern, regex.V0)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:
        raise RuleError("pattern", f"This is not a valid regular expression: {exc}.") from None
    if compiled.fullmatch(""):
        raise RuleError("pattern", "The pattern matches empty text; it would match everywhere.")
    # Also the pattern's own characters, repeated: (x+x+)+y on "xxxx...".
    own = sorted({c for c in pattern if c.isalnum()})[:12]
    probes = (*_PROBES, *(c * 2500 + "\u0000" for c in own))
    for probe in probes:
        try:
            compiled.search(probe, timeout=PATTERN_CHECK_TIMEOUT_S)
        except TimeoutError:
            raise RuleError(
                "pattern",
                "The pattern takes too long on some texts (catastrophic backtracking, "
                "e.g. nested repeats like (a+)+); simplify it.",
            ) from None


# --- compiled rules -------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A compiled rule."""

    id: int | None
    name: str
    kind: str
    action: str
    scope: str
    surface: str
    priority: int
    replacement: str
    notice: str
    compiled: Any  # a regex pattern; None for keyword lists
    keywords: tuple[str, ...] = ()  # canonical forms
    whole_word: bool = True
    validate: Callable[[str], bool] | None = None
    pii: bool = False
    site: int | None = None  # a widget site's id, for rules of one site

    @property
    def on_skeleton(self) -> bool:
        return self.kind == "keywords"

    def applies(self, *, scope: str, surface: str, site: int | None = None) -> bool:
        """Whether the rule runs on this text: its scope, its surface and,
        for a rule tied to one widget site, that site."""
        if self.site is not None and self.site != site:
            return False
        return self.scope in (scope, "both") and self.surface in ("all", surface)

    def mask(self, matched: str) -> str:
        return self.replacement or "*" * len(matched)


def rule_compile(spec: dict[str, Any]) -> Rule:
    """Compile one rule from its spec; raise RuleError naming the field."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise RuleError("kind", "Choose keyword list, regular expression or preset.")
    for name, allowed in (("scope", SCOPES), ("action", ACTIONS), ("surface", SURFACES)):
        if spec.get(name, allowed[0]) not in allowed:
            raise RuleError(name, f"{name} must be one of {', '.join(allowed)}.")
    preset = None
    validate = None
    forms: list[str] = []
    compiled: Any = None
    if kind == "keywords":
        keywords = [k for k in spec.get("keywords") or [] if k.strip()]
        if not keywords:
            raise RuleError("keywords", "List at least one keyword or phrase, one per line.")
        for keyword in keywords:
            spelled = keyword_forms(keyword)
            if not spelled:
                raise RuleError("keywords", f"{keyword!r} has no letters or digits to match.")
            forms.extend(spelled)
    elif kind == "regex":
        pattern_check(spec.get("pattern") or "")
        compiled = regex.compile(spec["pattern"], regex.V0)
    else:
        preset = PRESETS.get(spec.get("preset") or "")
        if preset is None:
            raise RuleError("preset", f"Choose a preset: {', '.join(PRESETS)}.")
        compiled = regex.compile(preset.pattern)
        validate = preset.validate
    replacement = spec.get("mask_with") or (preset.label if preset else "")
    return Rule(
        id=spec.get("id"),
        name=str(spec.get("name") or "rule"),
        kind=kind,
        action=spec.get("action", "block"),
        scope=spec.get("scope", "both"),
        surface=spec.get("surface", "all"),
        priority=int(spec.get("priority") or 0),
        replacement=replacement,
        notice=spec.get("notice") or "",
        compiled=compiled,
        keywords=tuple(dict.fromkeys(forms)),
        whole_word=bool(spec.get("whole_word", True)),
        validate=validate,
        site=spec.get("site"),
        pii=kind == "preset",
    )
