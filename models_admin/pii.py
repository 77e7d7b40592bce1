"""Personal data masked in stored text: the email, phone and card presets
of the content filter, plus the operator's own enabled mask rules (any
scope or surface). Used where text outlives its owner's control: stored
messages with ``PII_MASK_AT_REST``, and conversations that retention
anonymises."""

from __future__ import annotations

import functools
import threading
from typing import Any

from django.conf import settings

from inference.content_filter.ruleset import RuleBook, RuleSet

#: The presets masked at rest, with their labels as the replacement.
PII_PRESETS = ("email", "phone", "card")


class _PiiRules:
    """The masking rules compiled at one filter-rules epoch."""

    def __init__(self) -> None:
        self.current: tuple[str, RuleSet] | None = None
        self._lock = threading.Lock()

    def at(self, epoch: str) -> RuleSet:
        current = self.current
        if current is None or current[0] != epoch:
            with self._lock:
                current = self.current
                if current is None or current[0] != epoch:
                    current = self.current = (epoch, _compile())
        return current[1]


def _preset_specs() -> list[dict[str, Any]]:
    return [
        {
            "id": None,
            "name": f"PII: {preset}",
            "kind": "preset",
            "preset": preset,
            "action": "mask",
            "scope": "both",
            "surface": "all",
            "priority": -1,
        }
        for preset in PII_PRESETS
    ]


def _rule_set(specs: list[dict[str, Any]]) -> RuleSet:
    book = RuleBook(specs, notice=settings.FILTER_BLOCK_NOTICE)
    return book.rule_set(scope="input", surface="chat")


def _compile() -> RuleSet:
    from models_admin.filters import filter_specs

    specs = _preset_specs()
    for spec in filter_specs():
        if spec.get("action") == "mask" and spec.get("site") is None:
            specs.append({**spec, "scope": "both", "surface": "all"})
    return _rule_set(specs)


_rules = _PiiRules()


@functools.cache
def _presets() -> RuleSet:
    return _rule_set(_preset_specs())


def pii_mask(text: str, *, own_rules: bool = True) -> str:
    """text with every match of the PII presets, and with ``own_rules`` of
    the operator's mask rules, replaced by its mask."""
    if not text:
        return text
    if not own_rules:
        return _presets().check(text).text
    from models_admin.filters import filter_rules_epoch

    return _rules.at(filter_rules_epoch()).check(text).text


def at_rest(text: str) -> str:
    """text as it is stored: masked when ``PII_MASK_AT_REST`` is on."""
    return pii_mask(text) if settings.PII_MASK_AT_REST else text
