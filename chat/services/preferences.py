"""Preference pairs from what people leave in conversations, for
preference tuning (DPO): a prompt, a chosen answer and a rejected one.

- An answer rated up against a version of it (a sibling under the same
  question) rated down, or one the person regenerated away from (an
  earlier version not rated up).
- A staff member's reply in a handoff against the model's answer it
  replaced (replies in a row count as one).

A prompt is the conversation up to the question, in the training format
(the conversation's system prompt first). Only a version's finished text
is an answer to prefer; text an API caller supplied is never one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext

from chat.models import Conversation, Feedback, Message
from chat.services.privacy import training_allowed_q
from models_admin.models import Dataset
from models_admin.services.datasets import dataset_pairs_create

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    prompt: Messages
    chosen: str
    rejected: str
    #: Where it came from: "rating", "regenerated" or "handoff".
    kind: str
    chosen_id: int
    rejected_id: int

    def as_dict(self) -> dict[str, Any]:
        """The upload format (``models_admin.dataset_format.pair_parse``)."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def _prompt(conversation: Conversation, question: Message, by_id: dict[int, Message]) -> Messages:
    chain: list[Message] = []
    node: Message | None = question
    while node is not None:
        chain.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    messages: Messages = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt})
    for message in reversed(chain):
        messages.append({"role": message.role, "content": message.content})
    return messages


def _usable_prompt(messages: Messages) -> bool:
    """Turns alternate from a user's and end with one (as pairs must)."""
    roles = [m["role"] for m in messages if m["role"] != "system"]
    return bool(roles) and all(
        role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(roles)
    ) and roles[-1] == "user"  # fmt: skip


def _answer(message: Message) -> bool:
    return (
        message.role == Message.Role.ASSISTANT
        and message.author_id is None
        and message.status in (Message.Status.DONE, Message.Status.CANCELLED)
        and bool(message.content.strip())
    )


def _conversation_pairs(
    conversation: Conversation, ratings: dict[int, int]
) -> list[PreferencePair]:
    rows = list(conversation.messages.order_by("created_at", "pk"))
    by_id = {m.pk: m for m in rows}
    children: dict[int | None, list[Message]] = defaultdict(list)
    for message in rows:
        children[message.parent_id].append(message)
    pairs: list[PreferencePair] = []
    seen: set[tuple[int, int]] = set()

    def add(question: Message, chosen: Message, chosen_text: str, rejected: Message, kind: str):
        key = (chosen.pk, rejected.pk)
        if key in seen or chosen_text.strip() == rejected.content.strip():
            return
        prompt = _prompt(conversation, question, by_id)
        if not _usable_prompt(prompt):
            return
        seen.add(key)
        pairs.append(
            PreferencePair(prompt, chosen_text, rejected.content, kind, chosen.pk, rejected.pk)
        )

    for question in rows:
        if question.role != Message.Role.USER:
            continue
        versions = [m for m in children[question.pk] if _answer(m) and m.status == "done"]
        for liked in (m for m in versions if ratings.get(m.pk) == Feedback.Rating.UP):
            for other in versions:
                if other.pk == liked.pk or ratings.get(other.pk) == Feedback.Rating.UP:
                    continue
                if ratings.get(other.pk) == Feedback.Rating.DOWN:
                    add(question, liked, liked.content, other, "rating")
                elif (other.created_at, other.pk) < (liked.created_at, liked.pk):
                    add(question, liked, liked.content, other, "regenerated")
        # A person's reply in place of the model's answer.
        for answer in children[question.pk]:
            if not _answer(answer):
                continue
            replies = []
            node = answer
            while True:
                staff = [
                    m
                    for m in children[node.pk]
                    if m.role == Message.Role.ASSISTANT and m.author_id is not None
                ]
                if not staff:
                    break
                node = staff[0]
                replies.append(node)
            if replies:
                text = "\n\n".join(r.content for r in replies if r.content.strip())
                add(question, replies[0], text, answer, "handoff")
    return pairs


def preference_pairs(
    *,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    source: str = "",
    exclude_flagged: bool = True,
) -> list[PreferencePair]:
    """Every preference pair the stored conversations hold (see the
    module), oldest conversation first; conversations whose people chose
    not to train models give none."""
    rows = Conversation.objects.filter(training_allowed_q())
    if date_from is not None:
        rows = rows.filter(updated_at__gte=date_from)
    if date_to is not None:
        rows = rows.filter(updated_at__lte=date_to)
    if source:
        rows = rows.filter(source=source)
    if exclude_flagged:
        rows = rows.filter(flagged_at__isnull=True)
    ratings = dict(Feedback.objects.values_list("message_id", "rating"))
    pairs: list[PreferencePair] = []
    for conversation in rows.order_by("pk").iterator():
        pairs.extend(_conversation_pairs(conversation, ratings))
    return pairs


def preference_dataset_create(
    *,
    name: str,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    source: str = "",
    exclude_flagged: bool = True,
    eval_fraction: float = 0.1,
    seed: int = 0,
    user: Any = None,
) -> Dataset:
    """Store the preference pairs of the conversations chosen (see
    ``preference_pairs``) as a preference dataset; each pair remembers the
    messages it came from and how. Raise ValidationError when there is
    none."""
    pairs = preference_pairs(
        date_from=date_from, date_to=date_to, source=source, exclude_flagged=exclude_flagged
    )
    if not pairs:
        raise ValidationError(
            {"pairs": [gettext("No conversation in the range holds a preference pair yet.")]}
        )
    owners = {
        pk: {"conversation_id": conversation, "user_id": user}
        for pk, conversation, user in Message.objects.filter(
            pk__in=[p.chosen_id for p in pairs]
        ).values_list("pk", "conversation_id", "conversation__user_id")
    }
    return dataset_pairs_create(
        name=name,
        pairs=[pair.as_dict() for pair in pairs],
        origins=[
            {
                "kind": p.kind,
                "chosen_id": p.chosen_id,
                "rejected_id": p.rejected_id,
                **owners[p.chosen_id],
            }
            for p in pairs
        ],
        source=Dataset.Source.FEEDBACK,
        description="Preference pairs from ratings, regenerations and staff handoff replies.",
        eval_fraction=eval_fraction,
        seed=seed,
        filters={
            "from": date_from.isoformat() if date_from else None,
            "to": date_to.isoformat() if date_to else None,
            "source": source,
            "exclude_flagged": exclude_flagged,
        },
        user=user,
    )
