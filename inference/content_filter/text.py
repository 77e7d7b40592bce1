"""The skeleton of a text: what keywords are matched on (see the
package docstring)."""

from __future__ import annotations

import functools
import re
import unicodedata

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
