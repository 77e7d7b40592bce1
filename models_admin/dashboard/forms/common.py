"""Pieces shared by the dashboard's filter forms."""

from __future__ import annotations

from typing import Any

from django import forms


class DateRangeForm(forms.Form):
    """A form with optional ``date_from`` and ``date_to`` fields (declared
    by the subclass, with its own labels) that refuses an end before the
    start."""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end comes before the start.")
        return data
