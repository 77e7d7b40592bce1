"""Training datasets in the chat format: validate uploaded JSONL, write it
back, and split it into train and eval sets.

A dataset file holds one conversation per line::

    {"messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

An optional system message comes first; then user and assistant turns
alternate, starting with the user and ending with the assistant.

A preference file (``parse_line=pair_parse``) holds one pair per line::

    {"prompt": [...messages ending with a user's...],
     "chosen": "the better answer", "rejected": "the worse one"}
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.utils.formats import number_format
from django.utils.translation import gettext, ngettext

ROLES = ("system", "user", "assistant")
MAX_REPORTED_ERRORS = 50

_BOM = b"\xef\xbb\xbf"
# Long enough to recognise a bad value in an error, short enough that a
# pasted essay does not flood the report.
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class LineError:
    """One problem in a dataset file.

    ``line`` is 1-based; 0 marks a problem with the whole file.
    """

    line: int
    error: str

    def __str__(self) -> str:
        if self.line == 0:
            return self.error
        return gettext("line %(line)s: %(error)s") % {"line": self.line, "error": self.error}


class DatasetFormatError(ValueError):
    """The dataset file is not in the training format.

    ``errors`` holds the first ``MAX_REPORTED_ERRORS`` problems in file
    order (whole-file problems first); ``total`` counts all of them.
    """

    def __init__(self, errors: list[LineError], *, total: int | None = None) -> None:
        self.errors = list(errors[:MAX_REPORTED_ERRORS])
        self.total = len(errors) if total is None else total
        super().__init__(self._message())

    def _message(self) -> str:
        head = ngettext(
            "the dataset has %(count)s problem", "the dataset has %(count)s problems", self.total
        ) % {"count": self.total}
        if self.total > len(self.errors):
            head += " " + gettext("(the first %(count)s are listed)") % {"count": len(self.errors)}
        return head + ":\n" + "\n".join(str(error) for error in self.errors)


def _shown(value: Any) -> str:
    """Describe a JSON value for an error message: strings quoted and cut
    short, anything else by its type."""
    if isinstance(value, str):
        if len(value) > _SHOWN_CHARS:
            value = value[: _SHOWN_CHARS - 1] + "…"
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return gettext("a boolean")
    if isinstance(value, int | float):
        return gettext("a number")
    if isinstance(value, list):
        return gettext("an array")
    if isinstance(value, dict):
        return gettext("an object")
    return type(value).__name__


def _message_check(number: int, message: Any) -> str | None:
    """Return the first problem with one message, or None."""
    if not isinstance(message, dict):
        return gettext("message %(number)s must be an object (got %(message)s)") % {
            "number": number,
            "message": _shown(message),
        }
    if "role" not in message:
        return gettext('message %(number)s has no "role"') % {"number": number}
    role = message["role"]
    if not isinstance(role, str) or role not in ROLES:
        return gettext('"role" of message %(number)s must be one of %(roles)s (got %(role)s)') % {
            "number": number,
            "roles": ", ".join(ROLES),
            "role": _shown(role),
        }
    if "content" not in message:
        return gettext('message %(number)s has no "content"') % {"number": number}
    content = message["content"]
    if not isinstance(content, str):
        return gettext('"content" of message %(number)s must be a string (got %(content)s)') % {
            "number": number,
            "content": _shown(content),
        }
    if not content.strip():
        return gettext('"content" of message %(number)s is empty') % {"number": number}
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        # JSON escapes such as "\ud800" decode to lone surrogates, which
        # no tokenizer can encode and no file can store as UTF-8.
        return gettext('"content" of message %(number)s holds an unpaired surrogate escape') % {
            "number": number
        }
    return None


def _order_check(roles: list[str]) -> str | None:
    """Return the first problem with the order of roles, or None."""
    for index, role in enumerate(roles):
        if role == "system" and index > 0:
            return gettext(
                "message %(index)s is a system message; only the first message may be one"
            ) % {"index": index + 1}
    start = 1 if roles[0] == "system" else 0
    for index in range(start, len(roles)):
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        if roles[index] != expected:
            return gettext(
                'message %(index)s is "%(role)s" but should be "%(expected)s": '
                "turns must alternate user, assistant, user, ..."
            ) % {"index": index + 1, "role": roles[index], "expected": expected}
    if roles[-1] != "assistant":
        return gettext(
            'the conversation must end with an assistant message (the last is "%(roles)s")'
        ) % {"roles": roles[-1]}
    return None


def _object_parse(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """One line as a JSON object, or the first problem with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return None, gettext("not valid JSON: %(msg)s (column %(colno)s)") % {
            "msg": error.msg,
            "colno": error.colno,
        }
    except RecursionError:
        return None, gettext("not valid JSON: nested too deeply")
    except ValueError as error:
        # Integers longer than Python's digit limit land here.
        return None, gettext("not valid JSON: %(error)s") % {"error": error}
    if not isinstance(value, dict):
        return None, gettext("each line must be a JSON object (got %(value)s)") % {
            "value": _shown(value)
        }
    return value, None


def _example_parse(text: str) -> tuple[list[dict[str, str]] | None, str | None]:
    """Parse one non-blank line into a conversation.

    Return ``(conversation, None)`` or ``(None, first problem)``.
    """
    value, problem = _object_parse(text)
    if value is None:
        return None, problem
    if "messages" not in value:
        return None, gettext('the object has no "messages" key')
    messages = value["messages"]
    if not isinstance(messages, list):
        return None, gettext('"messages" must be a list (got %(messages)s)') % {
            "messages": _shown(messages)
        }
    if not messages:
        return None, gettext('"messages" is empty')
    for number, message in enumerate(messages, start=1):
        problem = _message_check(number, message)
        if problem is not None:
            return None, problem
    problem = _order_check([message["role"] for message in messages])
    if problem is not None:
        return None, problem
    return [{"role": m["role"], "content": m["content"]} for m in messages], None


def pair_parse(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one line of a preference file, ``{"prompt": [messages],
    "chosen": "...", "rejected": "..."}``: the prompt is a conversation that
    ends with a user's turn; chosen and rejected are two different answers
    to it. Return ``(pair, None)`` or ``(None, first problem)``."""
    value, problem = _object_parse(text)
    if value is None:
        return None, problem
    for key in ("prompt", "chosen", "rejected"):
        if key not in value:
            return None, gettext('the object has no "%(key)s" key') % {"key": key}
    prompt = value["prompt"]
    if not isinstance(prompt, list) or not prompt:
        return None, gettext('"prompt" must be a non-empty list of messages (got %(prompt)s)') % {
            "prompt": _shown(prompt)
        }
    for number, message in enumerate(prompt, start=1):
        problem = _message_check(number, message)
        if problem is not None:
            return None, gettext("in the prompt, %(problem)s") % {"problem": problem}
    roles = [message["role"] for message in prompt]
    problem = _order_check([*roles, "assistant"])
    if problem is not None:
        return None, gettext("in the prompt, %(problem)s") % {"problem": problem}
    answers = {}
    for key in ("chosen", "rejected"):
        answer = value[key]
        if not isinstance(answer, str):
            return None, gettext('"%(key)s" must be a string (got %(answer)s)') % {
                "key": key,
                "answer": _shown(answer),
            }
        if not answer.strip():
            return None, gettext('"%(key)s" is empty') % {"key": key}
        try:
            answer.encode("utf-8")
        except UnicodeEncodeError:
            return None, gettext('"%(key)s" holds an unpaired surrogate escape') % {"key": key}
        answers[key] = answer
    if answers["chosen"].strip() == answers["rejected"].strip():
        return None, gettext('"chosen" and "rejected" are the same answer')
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
        **answers,
    }, None


def jsonl_parse(
    data: bytes,
    *,
    max_bytes: int = 50_000_000,
    max_examples: int = 100_000,
    parse_line: Callable[[str], tuple[Any, str | None]] = _example_parse,
) -> list[Any]:
    """Return the examples in a JSONL dataset file: conversations, or
    whatever ``parse_line`` reads from a line (preference pairs).

    Each conversation is a list of ``{"role", "content"}`` dicts; other
    keys are dropped. A leading UTF-8 byte order mark, CRLF line endings
    and blank lines are accepted. Raise ``DatasetFormatError`` listing the
    first problem of every bad line; a file with any bad line yields no
    conversations at all. Nothing else is raised, whatever the input.
    """
    if len(data) > max_bytes:
        raise DatasetFormatError(
            [
                LineError(
                    0,
                    gettext("the file is %(data)s bytes; the limit is %(max_bytes)s")
                    % {
                        "data": number_format(len(data), force_grouping=True),
                        "max_bytes": number_format(max_bytes, force_grouping=True),
                    },
                )
            ]
        )
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        number = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DatasetFormatError(
            [
                LineError(
                    number,
                    gettext(
                        "not UTF-8 text (byte 0x%(start)s at byte column "
                        "%(column)s); save the file as UTF-8"
                    )
                    % {"start": format(data[error.start], "02x"), "column": column},
                )
            ]
        ) from None

    conversations: list[list[dict[str, str]]] = []
    errors: list[LineError] = []
    examples = 0
    # Split on "\n" only: str.splitlines() would also break at U+2028 and
    # other separators that JSON strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        examples += 1
        if examples > max_examples:
            errors.insert(
                0,
                LineError(
                    0,
                    gettext("the file has more than %(max_examples)s examples")
                    % {"max_examples": number_format(max_examples, force_grouping=True)},
                ),
            )
            break
        conversation, problem = parse_line(line.removesuffix("\r"))
        if problem is not None:
            errors.append(LineError(number, problem))
        elif conversation is not None:
            conversations.append(conversation)
    if examples == 0:
        errors.append(LineError(0, gettext("the file has no examples")))
    if errors:
        raise DatasetFormatError(errors)
    return conversations


def jsonl_dump(conversations: Iterable[list[dict[str, str]]]) -> str:
    """Return conversations as JSONL text that ``jsonl_parse`` reads back.

    Write one compact object per line, non-ASCII characters as they are,
    each line ending in a newline. Keep only ``role`` and ``content``.
    """
    lines = []
    for conversation in conversations:
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        lines.append(
            json.dumps({"messages": messages}, ensure_ascii=False, separators=(",", ":")) + "\n"
        )
    return "".join(lines)


def split_indices(count: int, *, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(count)`` into shuffled train and eval indices.

    The eval part gets ``round(count * eval_fraction)`` indices, at least
    one when ``count >= 2`` and ``eval_fraction > 0``, and never all of
    them: train keeps at least one whenever ``count >= 1``. The same
    arguments give the same split; both parts come back sorted. Raise
    ``ValueError`` unless ``0 <= eval_fraction < 1`` and ``count >= 0``.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more (got {count})")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be at least 0 and below 1 (got {eval_fraction})")
    size = round(count * eval_fraction)
    if eval_fraction > 0 and count >= 2:
        size = max(size, 1)
    size = min(size, max(count - 1, 0))
    order = list(range(count))
    # Reproducible shuffling, not security: the seed is stored with the job.
    random.Random(seed).shuffle(order)  # noqa: S311
    return sorted(order[size:]), sorted(order[:size])
