"""Grounding answers in a knowledge base: the passages a question finds go
into the prompt, numbered, within a token budget; the answer may cite
them by number, and the numbers it may cite travel with the request so
the worker removes any other. A question that finds nothing relevant
gets the base's "nothing found" reply instead of a guess.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from chat.models import Conversation
from inference.citations import citations_used
from models_admin.knowledge.chunks import HEADING_JOIN
from models_admin.models import KnowledgeBase, ModelVersion
from models_admin.pii import at_rest
from models_admin.selectors.knowledge import Passage, Retrieval, knowledge_search

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Answer the question in one or two sentences, using only the numbered "
    "passages from {name} above. End each sentence with the number of the "
    'passage it comes from in square brackets, like this: "Refunds take 5 '
    'working days [2]." If the passages do not answer the question, say that '
    "you do not know."
)
#: Characters per token when the model's tokenizer cannot be read.
CHARS_PER_TOKEN = 3.5


@dataclass
class Grounding:
    """What a knowledge base adds to one answer."""

    base: KnowledgeBase
    retrieval: Retrieval
    passages: list[Passage] = field(default_factory=list)  # those in the prompt

    @property
    def found(self) -> bool:
        return self.retrieval.found and bool(self.passages)

    def record(self) -> dict[str, Any]:
        """What the answer keeps (``Message.knowledge``)."""
        return {
            "base": self.base.pk,
            "name": self.base.name,
            "query": at_rest(self.retrieval.query[:500]),
            "found": self.found,
            "match": round(self.retrieval.best_match, 3),
            "passages": [p.card(n) for n, p in enumerate(self.passages, start=1)],
            "cited": [],
        }

    def system_text(self) -> str:
        # The passages first and what to do with them last: small models
        # follow the instruction they read last.
        blocks = [_passage_block(n, p) for n, p in enumerate(self.passages, start=1)]
        blocks.append(INSTRUCTIONS.format(name=self.base.name))
        return "\n\n".join(blocks)


def _passage_block(number: int, passage: Passage) -> str:
    heading = passage.heading
    if passage.title and not heading.startswith(passage.title):
        heading = HEADING_JOIN.join(part for part in (passage.title, heading) if part)
    label = heading or passage.title
    return f"[{number}] {label}\n{passage.text}".strip()


@lru_cache(maxsize=8)
def _tokenizer(folder: str) -> Any:
    """The fast tokenizer of a model folder (the ``tokenizers`` library,
    no torch), or None."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    except Exception:
        logger.warning("Cannot read %s; estimating tokens by length", path, exc_info=True)
        return None


def token_count(text: str, *, version: ModelVersion | None) -> int:
    """Tokens of ``text`` for ``version``'s tokenizer (an estimate by
    length when it has none)."""
    tokenizer = _tokenizer(str(version.path)) if version is not None else None
    if tokenizer is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def grounding_for(
    *, base: KnowledgeBase, question: str, version: ModelVersion | None
) -> Grounding:
    """Search ``base`` for ``question`` and keep the best passages that
    fit in ``KNOWLEDGE_PROMPT_TOKENS`` (the first always, cut to fit)."""
    retrieval = knowledge_search(base=base, query=question)
    grounding = Grounding(base=base, retrieval=retrieval)
    if not retrieval.found:
        return grounding
    budget = settings.KNOWLEDGE_PROMPT_TOKENS
    used = token_count(INSTRUCTIONS.format(name=base.name), version=version)
    for passage in retrieval.passages:
        cost = token_count(_passage_block(len(grounding.passages) + 1, passage), version=version)
        if used + cost > budget:
            if grounding.passages:
                break
            # The best passage alone is over the budget: keep its start.
            share = max((budget - used) / max(cost, 1), 0.1)
            passage = dataclasses.replace(
                passage, text=passage.text[: int(len(passage.text) * share)]
            )
            cost = budget - used
        grounding.passages.append(passage)
        used += cost
    return grounding


def knowledge_base_of(conversation: Conversation) -> KnowledgeBase | None:
    """The base a conversation's answers are grounded in: its widget
    site's, or the one its owner attached."""
    if conversation.source == Conversation.Source.WIDGET:
        site = conversation.site
        return site.knowledge_base if site is not None and site.knowledge_base_id else None
    return conversation.knowledge_base if conversation.knowledge_base_id else None


def messages_grounded(
    messages: list[dict[str, str]], grounding: Grounding
) -> list[dict[str, str]]:
    """``messages`` with the passages added to the system message (one is
    put first when there is none)."""
    text = grounding.system_text()
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def knowledge_cited(knowledge: dict[str, Any], text: str) -> dict[str, Any]:
    """``knowledge`` (``Grounding.record``) with the numbers ``text``
    cites."""
    if not knowledge.get("passages"):
        return knowledge
    return {**knowledge, "cited": citations_used(text, allowed=len(knowledge["passages"]))}


def knowledge_json(knowledge: dict[str, Any], text: str) -> dict[str, Any]:
    """What an API answer says of its knowledge base: the base, whether it
    had anything on the question, and the passages given (``sources``),
    each marked when ``text`` cites it."""
    passages = knowledge.get("passages") or []
    cited = set(citations_used(text, allowed=len(passages)))
    return {
        "base": knowledge.get("name", ""),
        "found": bool(knowledge.get("found")),
        "sources": [
            {
                "n": card["n"],
                "title": card["title"],
                "url": card["url"],
                "heading": card["heading"],
                "excerpt": card["excerpt"],
                "cited": card["n"] in cited,
            }
            for card in passages
        ],
    }
