"""``{{ value|word }}``: the words the dashboard shows for raw values kept
in data (message roles, filter actions and surfaces, version and worker
states), in the page's language; any other value is shown as it is. The
dashboard's scripts have the same words (``static/js/dashboard/usage.js``)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import pgettext_lazy

register = template.Library()

WORDS = {
    "user": pgettext_lazy("a message's role", "user"),
    "assistant": pgettext_lazy("a message's role", "assistant"),
    "system": pgettext_lazy("a message's role", "system"),
    "block": pgettext_lazy("a filter rule's action", "block"),
    "mask": pgettext_lazy("a filter rule's action", "mask"),
    "flag": pgettext_lazy("a filter rule's action", "flag"),
    "drop": pgettext_lazy("a filter rule's action", "drop"),
    "keep": pgettext_lazy("a filter rule's action", "keep"),
    "input": pgettext_lazy("a filter rule's direction", "input"),
    "output": pgettext_lazy("a filter rule's direction", "output"),
    "both": pgettext_lazy("a filter rule's direction", "both"),
    "chat": pgettext_lazy("a surface", "chat"),
    "widget": pgettext_lazy("a surface", "widget"),
    "api": pgettext_lazy("a surface", "API"),
    "train": pgettext_lazy("a dataset's split", "train"),
    "eval": pgettext_lazy("a dataset's split", "eval"),
    "production": pgettext_lazy("a version's state", "production"),
    "candidate": pgettext_lazy("a version's state", "candidate"),
    "archived": pgettext_lazy("a version's state", "archived"),
    "starting": pgettext_lazy("a worker's state", "starting"),
    "loading": pgettext_lazy("a worker's state", "loading"),
    "ready": pgettext_lazy("a worker's state", "ready"),
    "error": pgettext_lazy("a worker's state", "error"),
    "no_model": pgettext_lazy("a worker's state", "no model"),
    "stopping": pgettext_lazy("a worker's state", "stopping"),
}


@register.filter
def word(value: Any) -> Any:
    """Return the page-language word for a raw value, else the value."""
    return WORDS.get(str(value), value)
