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

from inference.content_filter.rules import (
    MAX_HITS,
    PRESETS,
    REGEX_TIMEOUT_S,
    Rule,
    RuleError,
    luhn_valid,
    pattern_check,
    rule_compile,
)
from inference.content_filter.ruleset import RuleBook, RuleSet
from inference.content_filter.stream import FilterResult, StreamFilter
from inference.content_filter.text import canonical, skeleton
from inference.content_filter.verdict import Match, Verdict

__all__ = [
    "MAX_HITS",
    "PRESETS",
    "REGEX_TIMEOUT_S",
    "FilterResult",
    "Match",
    "Rule",
    "RuleBook",
    "RuleError",
    "RuleSet",
    "StreamFilter",
    "Verdict",
    "canonical",
    "luhn_valid",
    "pattern_check",
    "rule_compile",
    "skeleton",
]
