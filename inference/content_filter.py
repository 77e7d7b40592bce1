"""Content filter matching: keyword lists, regular expressions and
presets (email, phone number, payment card, URL), on whole texts and on
streamed output. No Django here: rules arrive as plain dicts
(``FilterRule.spec()``).

Keywords are matched on a *skeleton* of the text: compatibility
decomposition (fullwidth and mathematical letters, ligatures), accents
and zero-width characters removed, case folded, common Cyrillic and Greek
look-alikes mapped to Latin letters, and every run of spaces and
punctuation collapsed to one space. A keyword letter also matches its
usual leetspeak digits and symbols (``a``: ``4 @``, ``s``: ``5 $`` ...), and
a keyword of three letters or more also matches when every letter is
separated (``b a d``, ``b.a.d``) but not when only some are, so two
innocent words side by side do not make a banned compound. Whole-word
keywords do not fire inside longer words.

Regular expressions run on the text as written, with the ``regex``
module's time limit; one that runs out of time fails closed (it counts as
a match that blocks) and the caller logs it.

A ``RuleBook`` compiles a site's rules once; keep it while the rules stay
the same, so a message pays for matching only, never for compiling.

``StreamFilter`` filters streamed output: it holds back only text that may
still turn out to be part of a match (a partial match at the end of what
arrived, or a complete one that the next piece could extend), so a banned
term split across tokens is never shown.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import regex

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


# --- the skeleton ---------------------------------------------------------

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u034f")
#: Kept in the skeleton because they stand for letters in leetspeak.
_LEET_SYMBOLS = frozenset("@$!|+")
#: Leet symbols that stand for a letter only inside a word.
_WORD_INNER = frozenset("!|")
# The look-alikes below are the point of this table.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h",
        "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i",
        "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g",
        "ӏ": "l", "һ": "h", "ь": "b", "ɑ": "a",
        # Greek
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v",
        "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "μ": "u",
        # Latin variants NFKD leaves alone
        "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe",
    }
)  # fmt: skip


@functools.lru_cache(maxsize=8192)
def _fold(char: str) -> str:
    """One character as the skeleton spells it ("" for nothing, " " for a
    separator)."""
    if char in _ZERO_WIDTH:
        return ""
    out = []
    for part in unicodedata.normalize("NFKD", char):
        if unicodedata.combining(part):
            continue
        for folded in part.casefold().translate(_CONFUSABLES):
            if folded.isalnum() or folded in _LEET_SYMBOLS:
                out.append(folded)
            elif unicodedata.category(folded) in ("Mn", "Me", "Cf"):
                continue
            else:
                out.append(" ")
    return "".join(out)


#: The skeleton of one ASCII character: letters lower-cased, digits and
#: leet symbols kept, everything else a separator.
_ASCII_FOLD = str.maketrans(
    {
        chr(code): (
            chr(code).lower() if chr(code).isalnum() or chr(code) in _LEET_SYMBOLS else " "
        )
        for code in range(128)
    }
)
_INNER_AT_WORD_END = re.compile(r"[!|](?![a-z0-9])")
_SKELETON_CHAR = re.compile(r"[^ ]| +")


def _skeleton_ascii(text: str) -> tuple[str, list[int]]:
    """``skeleton`` for ASCII text, the same result without a Python step
    for every character."""
    folded = _INNER_AT_WORD_END.sub(" ", text.translate(_ASCII_FOLD))
    return re.sub(" +", " ", folded), [m.start() for m in _SKELETON_CHAR.finditer(folded)]


def skeleton(text: str) -> tuple[str, list[int]]:
    """Return the skeleton of text and, for each of its characters, the
    index of the character of text it came from."""
    if text.isascii():
        return _skeleton_ascii(text)
    chars: list[str] = []
    origin: list[int] = []
    last = len(text) - 1
    for index, char in enumerate(text):
        for folded in _fold(char):
            if folded in _WORD_INNER and not (index < last and text[index + 1].isalnum()):
                folded = " "  # "wow!" ends a word; "sh!t" does not
            if folded == " " and chars and chars[-1] == " ":
                continue
            chars.append(folded)
            origin.append(index)
    return "".join(chars), origin


#: Leetspeak read as letters; one character for one, so positions hold.
_CANON = str.maketrans(
    {
        "4": "a", "@": "a", "8": "b", "3": "e", "1": "i", "!": "i", "|": "i",
        "0": "o", "$": "s", "5": "s", "+": "t", "7": "t", "2": "z", "9": "g",
    }
)  # fmt: skip


def canonical(text: str) -> str:
    """A skeleton with leetspeak read as letters (same length)."""
    return text.translate(_CANON)


def keyword_forms(keyword: str) -> list[str]:
    """The canonical spellings a keyword matches: itself and, since "1"
    reads as "i", the same with every "l" written as "i"."""
    letters = canonical(skeleton(keyword)[0]).strip()
    if not letters:
        return []
    forms = [letters]
    if "l" in letters:
        forms.append(letters.replace("l", "i"))
    return forms


# --- presets --------------------------------------------------------------


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


@dataclass(frozen=True)
class Match:
    rule: Rule
    start: int
    end: int
    text: str
    timed_out: bool = False


@dataclass
class Hit:
    """What the audit keeps of a match."""

    rule_id: int | None
    rule_name: str
    action: str
    excerpt: str
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "action": self.action,
            "excerpt": self.excerpt,
            "timed_out": self.timed_out,
        }


def excerpt(text: str, match: Match, others: Iterable[Match] = ()) -> str:
    """The text around a match, the match marked; personal data (preset
    matches, this one or others nearby) stays masked."""
    low, high = max(match.start - EXCERPT_CHARS, 0), min(match.end + EXCERPT_CHARS, len(text))
    nearby = [
        m for m in others if m.rule.pii and m is not match and m.start < high and m.end > low
    ]
    for other in nearby:  # never cut personal data in half at the edges
        low, high = min(low, other.start), max(high, other.end)
    parts: list[str] = []
    position = low
    for item in sorted([*nearby, match], key=lambda m: (m.start, m is not match)):
        if item.start < position:
            continue
        parts.append(text[position : item.start])
        if item is match:
            parts.append(match.rule.mask(match.text) if match.rule.pii else f"«{match.text}»")
        else:
            parts.append(item.rule.mask(item.text))
        position = item.end
    parts.append(text[position:high])
    return "".join(parts).replace("\n", " ")[:500]


_TOKEN = re.compile(r"[^ ]+")


class _KeywordIndex:
    """Every keyword rule's canonical forms, found by dictionary look-ups
    on the words of a canonical skeleton rather than one pattern each:
    the cost hardly grows with the number of rules.

    The work is linear in the length of the text: no look-up reaches
    further than the longest keyword, and a stretch of text is only
    extended while it still spells the beginning of some keyword.
    """

    def __init__(self, rules: list[Rule]) -> None:
        self.whole: dict[str, list[Rule]] = {}
        self.inside: dict[str, list[Rule]] = {}
        self.prefixes: set[str] = set()
        #: Beginnings of the one-word whole-word forms, for letters
        #: written apart.
        self.run_prefixes: set[str] = set()
        self.longest_words = 1
        self.longest_form = 0
        for rule in rules:
            for form in rule.keywords:
                target = self.whole if rule.whole_word else self.inside
                target.setdefault(form, []).append(rule)
                self.longest_words = max(self.longest_words, form.count(" ") + 1)
                self.longest_form = max(self.longest_form, len(form))
                spaced = [form, " ".join(form)] if " " not in form and len(form) >= 3 else [form]
                for spelling in spaced:
                    self.prefixes.update(spelling[:n] for n in range(1, len(spelling) + 1))
                if rule.whole_word and " " not in form:
                    self.run_prefixes.update(form[:n] for n in range(1, len(form) + 1))
        self.longest_prefix = max((len(p) for p in self.prefixes), default=0)

    def __bool__(self) -> bool:
        return bool(self.whole or self.inside)

    def _phrases(self, canon: str, words: list[tuple[int, int]]) -> list[tuple[Rule, int, int]]:
        """Whole-word keywords and phrases: spans of whole words."""
        spans: list[tuple[Rule, int, int]] = []
        longest = self.longest_form
        for i, (start, _end) in enumerate(words):
            for n in range(self.longest_words):
                if i + n >= len(words):
                    break
                end = words[i + n][1]
                if end - start > longest:
                    break
                for rule in self.whole.get(canon[start:end], ()):
                    spans.append((rule, start, end))
        return spans

    def _run(self, canon: str, run: list[tuple[int, int]]) -> list[tuple[Rule, int, int]]:
        """Letters written apart ("b a d"): a run of one-letter words read
        as one word, in which any stretch of three letters or more may be
        a whole-word keyword ("a z y l o p h i n" holds one)."""
        spans: list[tuple[Rule, int, int]] = []
        joined = "".join(canon[start] for start, _end in run)
        prefixes = self.run_prefixes
        for first in range(len(joined) - 2):
            last = first + 1
            # Only as long as the stretch still begins some keyword.
            while last <= len(joined) and joined[first:last] in prefixes:
                if last - first >= 3:
                    for rule in self.whole.get(joined[first:last], ()):
                        spans.append((rule, run[first][0], run[last - 1][1]))
                last += 1
        for form, rules in self.inside.items():
            at = joined.find(form)
            while at != -1:
                spans.extend((r, run[at][0], run[at + len(form) - 1][1]) for r in rules)
                at = joined.find(form, at + 1)
        return spans

    def find(self, canon: str, *, partial: bool) -> tuple[list[tuple[Rule, int, int]], int | None]:
        """Return (rule, start, end) spans in canon and, with partial, the
        earliest position a keyword may still be in progress from."""
        words = [(m.start(), m.end()) for m in _TOKEN.finditer(canon)]
        spans = self._phrases(canon, words)
        i = 0
        last_run_start = None
        while i < len(words):
            j = i
            while j < len(words) and words[j][1] - words[j][0] == 1:
                j += 1
            if j == len(words) and j > i:
                last_run_start = words[i][0]
            if j - i >= 3:
                spans.extend(self._run(canon, words[i:j]))
            i = max(j, i + 1)
        for form, rules in self.inside.items():
            at = canon.find(form)
            while at != -1:
                spans.extend((rule, at, at + len(form)) for rule in rules)
                at = canon.find(form, at + 1)
        if not partial:
            return spans, None
        hold = None
        # The longest end of the text that begins some keyword may grow
        # into it (a complete keyword too: the next letter may make it a
        # longer, innocent word).
        for n in range(min(self.longest_prefix, len(canon)), 0, -1):
            if canon[-n:] in self.prefixes:
                hold = len(canon) - n
                break
        if last_run_start is not None and not canon.endswith(" "):
            # Letters written apart, the last one perhaps the start of a
            # longer word: wait for the word to end before reading the run.
            hold = last_run_start if hold is None else min(hold, last_run_start)
        ending = [s for s in spans if s[2] == len(canon)]
        if ending:
            first = min(s[1] for s in ending)
            hold = first if hold is None else min(hold, first)
        if hold is not None:
            spans = [s for s in spans if s[2] <= hold]
        return spans, hold


class RuleSet:
    """The rules for one scope and surface, in priority order."""

    def __init__(self, rules: Iterable[Rule], *, notice: str) -> None:
        self.rules = sorted(rules, key=lambda r: (r.priority, r.id or 0))
        self.notice = notice
        self._keywords = _KeywordIndex([r for r in self.rules if r.on_skeleton])
        self._others = [r for r in self.rules if not r.on_skeleton]

    @classmethod
    def from_specs(
        cls,
        specs: Iterable[dict[str, Any]],
        *,
        scope: str,
        surface: str,
        notice: str,
        site: int | None = None,
        on_error: Callable[[dict[str, Any], RuleError], None] | None = None,
    ) -> RuleSet:
        """Compile the specs that apply (see ``RuleBook``); a spec that does
        not compile is skipped and reported to on_error."""
        book = RuleBook(specs, notice=notice, on_error=on_error)
        return book.rule_set(scope=scope, surface=surface, site=site)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scan(
        self, text: str, *, partial: bool = False, start_at: int = 0
    ) -> tuple[list[Match], int]:
        """Find the matches in text that start at or after start_at.

        With ``partial``, also return where text must be held back from:
        the start of the earliest match still in progress at the end of
        text (or one that the next piece could extend); len(text) when
        nothing is. Matches overlapping an earlier, higher-priority one
        are dropped.
        """
        hold = len(text)
        found: list[Match] = []
        if self._keywords:
            letters, origin = skeleton(text)
            spans, keyword_hold = self._keywords.find(canonical(letters), partial=partial)
            if keyword_hold is not None and keyword_hold < len(origin):
                hold = min(hold, max(origin[keyword_hold], start_at))
            for rule, first, last in spans:
                start, end = origin[first], origin[last - 1] + 1
                if start >= start_at:
                    found.append(Match(rule, start, end, text[start:end]))
        timeout = REGEX_TIMEOUT_S * max(1.0, (len(text) - start_at) / REGEX_TIMEOUT_CHARS)
        for rule in self._others:
            try:
                for m in rule.compiled.finditer(
                    text, pos=start_at, partial=partial, timeout=timeout
                ):
                    start, end = m.start(), m.end()
                    if partial and (m.partial or end == len(text)):
                        hold = min(hold, start)
                        continue
                    if end == start:
                        continue
                    matched = text[start:end]
                    if rule.validate is not None and not rule.validate(matched):
                        continue
                    found.append(Match(rule, start, end, matched))
            except TimeoutError:
                # Fail closed: this text counts as matched by the rule.
                found.append(Match(rule, start_at, len(text), text[start_at:], timed_out=True))
        return _resolve(found), hold

    def check(self, text: str) -> Verdict:
        """Filter a whole text (an incoming message)."""
        matches, _hold = self.scan(text)
        return _verdict(text, matches, default_notice=self.notice)


class RuleBook:
    """Every rule of a site, compiled once from plain specs
    (``FilterRule.spec()``), and the rule set (keyword index and regular
    expressions) of each scope, surface and widget site, built on first
    use and kept. A book never changes: build a new one when the rules do.
    """

    def __init__(
        self,
        specs: Iterable[dict[str, Any]],
        *,
        notice: str,
        on_error: Callable[[dict[str, Any], RuleError], None] | None = None,
    ) -> None:
        """Compile every spec; one that does not compile is left out and
        reported to on_error. ``notice`` is what a block shows when its
        rule has no notice of its own."""
        self.notice = notice
        self.rules: list[Rule] = []
        for spec in specs:
            try:
                self.rules.append(rule_compile(spec))
            except RuleError as exc:
                if on_error is not None:
                    on_error(spec, exc)
        self._sets: dict[tuple[str, str, int | None], RuleSet] = {}
        #: Rule sets by the positions of their rules: scopes, surfaces and
        #: sites that run the same rules share one keyword index.
        self._shared: dict[tuple[int, ...], RuleSet] = {}

    def rule_set(self, *, scope: str, surface: str, site: int | None = None) -> RuleSet:
        """The rules that run on a text of this scope and surface (and
        widget site)."""
        key = (scope, surface, site)
        rules = self._sets.get(key)
        if rules is None:
            # Threads that race here build equal sets; either one will do.
            chosen = tuple(
                i
                for i, rule in enumerate(self.rules)
                if rule.applies(scope=scope, surface=surface, site=site)
            )
            rules = self._shared.get(chosen)
            if rules is None:
                rules = RuleSet([self.rules[i] for i in chosen], notice=self.notice)
                self._shared[chosen] = rules
            self._sets[key] = rules
        return rules

    def check(self, text: str, *, surface: str, site: int | None = None) -> Verdict:
        """Filter an incoming text with the input rules."""
        return self.rule_set(scope="input", surface=surface, site=site).check(text)

    def stream(self, *, surface: str, site: int | None = None) -> StreamFilter | None:
        """The output filter of one answer; None when no output rule
        applies."""
        rules = self.rule_set(scope="output", surface=surface, site=site)
        return StreamFilter(rules) if rules else None


_ACTION_RANK = {"block": 0, "mask": 1, "flag": 2}


def _resolve(matches: list[Match]) -> list[Match]:
    """Keep non-overlapping matches, blocking ones and higher priority
    first, then the longest."""
    ordered = sorted(
        matches,
        key=lambda m: (_ACTION_RANK[m.rule.action], m.rule.priority, m.start, m.start - m.end),
    )
    # One byte a character, set where a kept match lies: a candidate is
    # checked, and a kept one marked, over its own span only.
    covered = bytearray(max((m.end for m in matches), default=0))
    kept: list[Match] = []
    for match in ordered:
        if not match.timed_out and covered.find(1, match.start, match.end) != -1:
            continue
        covered[match.start : match.end] = b"\x01" * (match.end - match.start)
        kept.append(match)
    return sorted(kept, key=lambda m: m.start)


def _nearby(matches: list[Match], starts: list[int], match: Match) -> list[Match]:
    """The matches of a sorted list close enough to show in match's
    excerpt (the ones a span that overlaps others could reach too)."""
    low = bisect.bisect_left(starts, match.start - EXCERPT_CHARS)
    high = bisect.bisect_right(starts, match.end + EXCERPT_CHARS)
    # Kept matches do not overlap: of those starting further left, only
    # the last can reach into the excerpt.
    return matches[max(low - 1, 0) : high]


@dataclass
class Verdict:
    """What a text becomes: masked text, or blocked with a notice."""

    text: str
    blocked: bool = False
    notice: str = ""
    hits: list[Hit] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return any(hit.action == "flag" for hit in self.hits)


def _hits(text: str, matches: list[Match], *, limit: int = MAX_HITS) -> list[Hit]:
    """The audit rows of the first ``limit`` matches (sorted by start)."""
    starts = [m.start for m in matches]
    return [
        Hit(m.rule.id, m.rule.name, "block" if m.timed_out else m.rule.action,
            excerpt(text, m, _nearby(matches, starts, m)), m.timed_out)
        for m in matches[:limit]
    ]  # fmt: skip


def _verdict(
    text: str, matches: list[Match], *, default_notice: str, hit_limit: int = MAX_HITS
) -> Verdict:
    hits = _hits(text, matches, limit=hit_limit)
    blocking = [m for m in matches if m.timed_out or m.rule.action == "block"]
    if blocking:
        notice = blocking[0].rule.notice or default_notice
        return Verdict(text="", blocked=True, notice=notice, hits=hits)
    out = []
    position = 0
    for match in matches:
        if match.rule.action == "mask":
            out.append(text[position : match.start])
            out.append(match.rule.mask(match.text))
            position = match.end
    out.append(text[position:])
    return Verdict(text="".join(out), hits=hits)


@dataclass
class FilterResult:
    """What an output filter lets through now; ``block`` ends the answer."""

    text: str
    block: bool = False


class StreamFilter:
    """The output filter of one generation (``inference.engine.OutputFilter``).

    ``hits`` collects what matched; ``notice`` is set when it blocked.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.context = ""  # emitted text, for boundaries and spacing
        self.pending = ""
        self.hits: list[Hit] = []
        self.blocked = False
        self.notice = ""

    def push(self, text: str) -> FilterResult:
        self.pending += text
        return self._release(final=False)

    def finish(self) -> FilterResult:
        return self._release(final=True)

    def _release(self, *, final: bool) -> FilterResult:
        if self.blocked:
            return FilterResult("", block=True)
        if not self.pending:
            return FilterResult("")
        buffer = self.context + self.pending
        base = len(self.context)
        matches, hold = self.rules.scan(buffer, partial=not final, start_at=base)
        if len(buffer) - hold > MAX_HOLD_CHARS:
            # Something keeps a match open too long: let the oldest go.
            hold = len(buffer) - MAX_HOLD_CHARS
        # A complete match reaching into the held text waits with it.
        while True:
            crossing = [m for m in matches if m.start < hold < m.end]
            if not crossing:
                break
            hold = min(m.start for m in crossing)
        ready = [m for m in matches if m.end <= hold]
        released = buffer[base:hold]
        shifted = [Match(m.rule, m.start - base, m.end - base, m.text, m.timed_out) for m in ready]
        verdict = _verdict(
            released,
            shifted,
            default_notice=self.rules.notice,
            hit_limit=max(MAX_HITS - len(self.hits), 0),
        )
        # Excerpts take their context from the whole buffer.
        starts = [m.start for m in ready]
        for hit, match in zip(verdict.hits, ready, strict=False):
            hit.excerpt = excerpt(buffer[:hold], match, _nearby(ready, starts, match))
        self.hits.extend(verdict.hits)
        if verdict.blocked:
            self.blocked = True
            self.notice = verdict.notice
            return FilterResult("", block=True)
        self.context = (self.context + released)[-CONTEXT_CHARS:]
        self.pending = buffer[hold:]
        return FilterResult(verdict.text)

    def report(self) -> dict[str, Any]:
        return {"hits": [hit.as_dict() for hit in self.hits], "notice": self.notice}
