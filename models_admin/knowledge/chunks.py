"""Splitting a document's sections into passages that keep their headings.

A passage is a run of whole paragraphs under one heading path, about
``target`` words long; a paragraph longer than ``limit`` words is cut at
sentence ends (a sentence longer still, at words). Small neighbouring
sections are not merged: a heading is what a question is most often
about, so each passage stays under exactly one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models_admin.knowledge.documents import Document

#: The words a passage aims at, and never exceeds.
TARGET_WORDS = 140
LIMIT_WORDS = 220
HEADING_JOIN = " \u203a "  # a single right-pointing angle quotation mark
# Latin and CJK (full-width) sentence ends.
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")


@dataclass(frozen=True)
class Passage:
    heading: str
    text: str

    def indexed(self, title: str) -> str:
        """What the search index reads: the document's title, the headings
        and the text."""
        return "\n".join(part for part in (title, self.heading, self.text) if part)


def _pieces(paragraph: str, limit: int) -> list[str]:
    """A paragraph as pieces of at most ``limit`` words, cut at sentence
    ends where possible."""
    if len(paragraph.split()) <= limit:
        return [paragraph]
    pieces: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split()
        while len(words) > limit:  # a run-on "sentence" (a table, a list)
            if current:
                pieces.append(" ".join(current))
                current, count = [], 0
            pieces.append(" ".join(words[:limit]))
            words = words[limit:]
        if count + len(words) > limit and current:
            pieces.append(" ".join(current))
            current, count = [], 0
        if words:
            current.append(" ".join(words))
            count += len(words)
    if current:
        pieces.append(" ".join(current))
    return pieces


def passages_split(
    document: Document, *, target: int = TARGET_WORDS, limit: int = LIMIT_WORDS
) -> list[Passage]:
    """The passages of ``document``, in reading order."""
    passages: list[Passage] = []
    for section in document.sections:
        heading = HEADING_JOIN.join(section.headings)
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", section.text) if p.strip()]
        current: list[str] = []
        count = 0
        for paragraph in paragraphs:
            for piece in _pieces(paragraph, limit):
                words = len(piece.split())
                if current and (count >= target or count + words > limit):
                    passages.append(Passage(heading, "\n\n".join(current)))
                    current, count = [], 0
                current.append(piece)
                count += words
        if current:
            passages.append(Passage(heading, "\n\n".join(current)))
    return passages
