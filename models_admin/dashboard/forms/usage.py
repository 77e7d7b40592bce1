"""The usage page's form: the window and the filters, read from the query
string."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy

from chat.models import Conversation
from models_admin.dashboard.forms.common import date_field
from models_admin.dashboard.selectors.usage import DEFAULT_PERIOD, PERIODS, usage_window
from models_admin.models import ModelVersion


class UsageFilterForm(forms.Form):
    """The window and filters, read from the query string."""

    period = forms.ChoiceField(
        label=gettext_lazy("Period"),
        choices=[(key, PERIODS[key]) for key in ("24h", "7d", "30d", "custom")],
        required=False,
        initial=DEFAULT_PERIOD,
    )
    start = date_field(gettext_lazy("From"))
    end = date_field(gettext_lazy("To"))
    version = forms.ModelChoiceField(
        label=gettext_lazy("Version"),
        queryset=ModelVersion.objects.order_by("name"),
        required=False,
        empty_label=gettext_lazy("All versions"),
    )
    source = forms.ChoiceField(
        label=gettext_lazy("Source"),
        choices=[("", gettext_lazy("All sources")), *Conversation.Source.choices],
        required=False,
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        period = data.get("period") or ("custom" if data.get("start") else DEFAULT_PERIOD)
        try:
            data["window"] = usage_window(
                period=period, first_day=data.get("start"), last_day=data.get("end")
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return data
