"""The form of a widget site, with its business hours as opening times
per weekday.

The site form parses what staff type; ``widget_site_save`` decides
whether a site is acceptable (origins, colour, business hours), and its
errors come back next to the fields they name.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Any, cast
from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.utils.translation import gettext, gettext_lazy

from chat.languages import language_choices
from chat.models import WidgetSite
from models_admin.dashboard.forms.common import ServiceForm, VersionChoiceField
from models_admin.models import KnowledgeBase, ModelVersion

#: The weekdays as ``business_hours["days"]`` names them, with labels.
DAYS = [
    ("mon", gettext_lazy("Monday")),
    ("tue", gettext_lazy("Tuesday")),
    ("wed", gettext_lazy("Wednesday")),
    ("thu", gettext_lazy("Thursday")),
    ("fri", gettext_lazy("Friday")),
    ("sat", gettext_lazy("Saturday")),
    ("sun", gettext_lazy("Sunday")),
]
#: Opening spans a day has room for: a second one for a lunch break; more
#: when a stored site has more (up to the most a form takes).
SPANS_SHOWN = 2
SPANS_MAX = 6
#: The site fields that go to ``widget_site_save`` as they are.
SITE_FIELDS = (
    "name",
    "allowed_origins",
    "enabled",
    "title",
    "color",
    "position",
    "language",
    "avatar_url",
    "greeting",
    "suggestions",
    "system_prompt",
    "model_version",
    "knowledge_base",
    "offline_message",
    "handoff_enabled",
    "messages_per_minute",
    "train_on_conversations",
)
_SPAN_FIELD = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)_(from|to)_(\d+)$")


class _DefaultYesNo(forms.NullBooleanSelect):
    """Empty reads as the site default, not "unknown"."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.choices = [
            ("unknown", gettext_lazy("As the site default")),
            ("true", gettext_lazy("Yes")),
            ("false", gettext_lazy("No")),
        ]


def _time_zones() -> list[tuple[str, str]]:
    zones = sorted(available_timezones() | {"UTC"})
    return [(zone, zone.replace("_", " ")) for zone in zones]


def _span_field(label: str) -> forms.TimeField:
    return forms.TimeField(
        required=False,
        label=label,
        input_formats=["%H:%M", "%H:%M:%S"],
        widget=forms.TimeInput(format="%H:%M", attrs={"type": "time"}),
    )


class WidgetSiteForm(ServiceForm):
    """Every field of a widget site; the business hours as a time zone and,
    per weekday, opening spans ("from" and "to"; a day left empty is
    closed, every day empty means always open). A valid form's
    ``site_data()`` is what ``widget_site_save`` takes.

    ``read_only=True`` shows a site to staff who may not change it.
    """

    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=200,
        help_text=gettext_lazy("Staff see it; visitors do not."),
    )
    allowed_origins = forms.CharField(
        required=False,
        max_length=10_000,
        label=gettext_lazy("Allowed origins"),
        widget=forms.Textarea(
            attrs={"rows": 4, "spellcheck": "false", "class": "mono"},
        ),
        help_text=(
            gettext_lazy(
                "The pages that may embed the widget, one origin a line: https://shop.example, "
                "https://shop.example:8443, or https://*.example.com for every subdomain. "
                "No paths."
            )
        ),
    )
    enabled = forms.BooleanField(
        label=gettext_lazy("Enabled"),
        required=False,
        initial=True,
        help_text=gettext_lazy("Off: the widget does not load anywhere."),
    )
    title = forms.CharField(
        label=gettext_lazy("Title"),
        max_length=100,
        # In the language of the page that creates the site.
        initial=gettext_lazy("Chat with us"),
        help_text=gettext_lazy("The head of the chat window."),
    )
    color = forms.CharField(
        max_length=7,
        initial="#2f6feb",
        label=gettext_lazy("Colour"),
        widget=forms.TextInput(attrs={"type": "color"}),
        help_text=gettext_lazy("The button and the visitor's messages."),
    )
    position = forms.ChoiceField(
        label=gettext_lazy("Position"),
        choices=WidgetSite.Position.choices,
        initial=WidgetSite.Position.RIGHT,
    )
    language = forms.ChoiceField(
        label=gettext_lazy("Language"),
        required=False,
        choices=[("", gettext_lazy("Each visitor's browser")), *language_choices()],
        help_text=gettext_lazy("What the widget's buttons and notices are written in."),
    )
    avatar_url = forms.CharField(
        required=False,
        max_length=200,
        label=gettext_lazy("Avatar URL"),
        widget=forms.URLInput(attrs={"placeholder": "https://…/avatar.png"}),
        help_text=gettext_lazy("A square picture beside the title; empty: none."),
    )
    greeting = forms.CharField(
        label=gettext_lazy("Greeting"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=gettext_lazy("The first message visitors see."),
    )
    suggestions = forms.CharField(
        label=gettext_lazy("Suggestions"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy("Questions offered as buttons, one a line."),
    )
    system_prompt = forms.CharField(
        required=False,
        max_length=8000,
        label=gettext_lazy("System prompt"),
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text=gettext_lazy(
            "What the assistant is told about the site before each conversation."
        ),
    )
    model_version = VersionChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        label=gettext_lazy("Model version"),
        empty_label=gettext_lazy("Production (whichever version is live)"),
    )
    knowledge_base = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.none(),
        required=False,
        label=gettext_lazy("Knowledge base"),
        empty_label=gettext_lazy("None (answers are not grounded in documents)"),
        help_text=(
            gettext_lazy(
                "Answers are grounded in this base's documents and cite them; a question it "
                "has nothing on gets the base's nothing-found reply."
            )
        ),
    )
    timezone = forms.ChoiceField(
        choices=(),
        # IANA names, the same in every language.
        widget=forms.Select(attrs={"translate": "no"}),
        label=gettext_lazy("Time zone"),
        help_text=gettext_lazy("The opening times below are in this zone."),
    )
    offline_message = forms.CharField(
        required=False,
        max_length=2000,
        label=gettext_lazy("Offline message"),
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=gettext_lazy("Shown to visitors who ask for a person outside business hours."),
    )
    handoff_enabled = forms.BooleanField(
        required=False,
        initial=True,
        label=gettext_lazy("Visitors may ask for a person"),
        help_text=gettext_lazy("Staff with the inbox answer them."),
    )
    train_on_conversations = forms.NullBooleanField(
        required=False,
        label=gettext_lazy("Visitors' conversations may train models"),
        widget=_DefaultYesNo(),
        help_text=gettext_lazy(
            "Left out of every dataset made from now on when no (TRAINING_OPT_IN_DEFAULT "
            "is the default)."
        ),
    )
    messages_per_minute = forms.IntegerField(
        min_value=1,
        max_value=600,
        initial=10,
        label=gettext_lazy("Messages a minute"),
        help_text=gettext_lazy("The most one visitor may send a minute."),
    )

    def __init__(self, *args: Any, read_only: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        versions = cast(forms.ModelChoiceField, self.fields["model_version"])
        versions.queryset = ModelVersion.objects.order_by("-created_at", "-id")
        bases = cast(forms.ModelChoiceField, self.fields["knowledge_base"])
        bases.queryset = KnowledgeBase.objects.order_by("name")
        zone = cast(forms.ChoiceField, self.fields["timezone"])
        zone.choices = _time_zones()
        zone.initial = settings.TIME_ZONE
        self.spans = self._span_count()
        for day, label in DAYS:
            for index in range(self.spans):
                self.fields[f"{day}_from_{index}"] = _span_field(
                    gettext("%(day)s: from") % {"day": label}
                )
                self.fields[f"{day}_to_{index}"] = _span_field(
                    gettext("%(day)s: to") % {"day": label}
                )
        #: Errors of the business hours as a whole (from the service).
        self.hours_errors: list[str] = []
        if read_only:
            for field in self.fields.values():
                field.disabled = True

    def _span_count(self) -> int:
        """Room for the spans the initial site has, or the posted data
        fills (a page's script may add rows), at least ``SPANS_SHOWN``."""
        highest = SPANS_SHOWN - 1
        for name in [*(self.initial or {}), *(self.data or {})]:
            match = _SPAN_FIELD.match(name)
            if match:
                highest = max(highest, int(match.group(3)))
        return min(highest + 1, SPANS_MAX)

    @classmethod
    def initial_for(cls, site: WidgetSite) -> dict[str, Any]:
        """The site's values as the form's ``initial``."""
        initial: dict[str, Any] = {name: getattr(site, name) for name in SITE_FIELDS}
        initial["model_version"] = site.model_version_id
        initial["knowledge_base"] = site.knowledge_base_id
        hours = site.business_hours or {}
        initial["timezone"] = hours.get("timezone") or settings.TIME_ZONE
        for day, spans in (hours.get("days") or {}).items():
            for index, (start, end) in enumerate(spans[:SPANS_MAX]):
                initial[f"{day}_from_{index}"] = start
                initial[f"{day}_to_{index}"] = end
        return initial

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for day, _label in DAYS:
            for index in range(self.spans):
                start = data.get(f"{day}_from_{index}")
                end = data.get(f"{day}_to_{index}")
                if start is None and end is None:
                    continue
                if start is None or end is None:
                    missing = f"{day}_from_{index}" if start is None else f"{day}_to_{index}"
                    self.add_error(
                        missing, gettext("Give both times, or neither for a closed day.")
                    )
                elif start >= end:
                    self.add_error(
                        f"{day}_to_{index}",
                        gettext(
                            "The end comes before the start. A span over midnight is two: "
                            "until 23:59, and from 00:00 the next day."
                        ),
                    )
        return data

    def business_hours(self) -> dict[str, Any]:
        """The cleaned opening times as ``WidgetSite.business_hours``: {}
        (always open) when every day is empty."""
        days: dict[str, list[list[str]]] = {}
        for day, _label in DAYS:
            spans: list[tuple[time, time]] = []
            for index in range(self.spans):
                start = self.cleaned_data.get(f"{day}_from_{index}")
                end = self.cleaned_data.get(f"{day}_to_{index}")
                if start is not None and end is not None:
                    spans.append((start, end))
            if spans:
                days[day] = [[s.strftime("%H:%M"), e.strftime("%H:%M")] for s, e in sorted(spans)]
        if not days:
            return {}
        return {"timezone": self.cleaned_data["timezone"], "days": days}

    def site_data(self) -> dict[str, Any]:
        """The cleaned site as ``widget_site_save`` takes it."""
        data = {name: self.cleaned_data[name] for name in SITE_FIELDS}
        data["business_hours"] = self.business_hours()
        return data

    def add_service_error(self, name: str, messages: list[str]) -> None:
        """Business hours errors go with the opening times."""
        if name == "business_hours":
            self.hours_errors.extend(messages)
        else:
            super().add_service_error(name, messages)

    @property
    def has_problems(self) -> bool:
        return bool(self.errors or self.hours_errors)

    def hours_rows(self) -> list[dict[str, Any]]:
        """One row a weekday for the template: ``day``, ``label``, ``spans``
        (pairs of bound fields, with ``filled`` and ``extra``) and
        ``errors``."""
        rows = []
        for day, label in DAYS:
            spans = []
            errors: list[str] = []
            for index in range(self.spans):
                start, end = self[f"{day}_from_{index}"], self[f"{day}_to_{index}"]
                errors += [*start.errors, *end.errors]
                filled = bool(start.value() or end.value())
                spans.append({"start": start, "end": end, "filled": filled, "extra": index > 0})
            rows.append({"day": day, "label": label, "spans": spans, "errors": errors})
        return rows
