"""Pieces shared by the dashboard's forms: errors of a service shown next
to the fields they name, list filters read from the query string, a
date range, and the choice of a model version."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.functional import lazy
from django.utils.translation import gettext, gettext_lazy

from models_admin.models import ModelVersion

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: The empty choice of a list filter.
ANY = ("", gettext_lazy("Any"))


def errors_by_field(form: forms.Form) -> dict[str, list[str]]:
    """The form's errors as plain text by field name, for JSON answers."""
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


class ServiceForm(forms.Form):
    """A form whose input a service decides on: the service's
    ValidationError comes back next to the fields it names."""

    #: Names a service gives that belong to another field of the form.
    service_fields: ClassVar[dict[str, str]] = {}

    def add_service_errors(self, exc: ValidationError) -> None:
        """Show a service's ValidationError next to the fields it names;
        what names no field goes above the form, with the name."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc.messages)
            return
        for name, messages in exc.message_dict.items():
            self.add_service_error(self.service_fields.get(name, name), messages)

    def add_service_error(self, name: str, messages: list[str]) -> None:
        """Place the messages a service gave under ``name``."""
        if name in self.fields:
            self.add_error(name, messages)
        elif name == NON_FIELD_ERRORS:
            self.add_error(None, messages)
        else:
            self.add_error(None, [f"{name}: {message}" for message in messages])


class ListFilterForm(forms.Form):
    """A list's filters, read from the query string; every field may be
    left empty, and a wrong one is left out of the filtering (and shown
    with its error)."""

    def valid_data(self) -> dict[str, Any]:
        """The fields that are valid; nothing for an unbound form."""
        if not self.is_bound:
            return {}
        self.is_valid()
        return getattr(self, "cleaned_data", {})


def text_with(text: Any, **values: Any) -> Any:
    """Return ``text % values`` as a lazy string: a form's help text
    declared at import time is then formatted in the language of the page
    that shows it, not the language the module was imported in."""
    return lazy(lambda: str(text) % values, str)()


def date_field(label: StrOrPromise) -> forms.DateField:
    """An optional day picked in the browser's date input."""
    return forms.DateField(
        label=label, required=False, widget=forms.DateInput(attrs={"type": "date"})
    )


class DateRangeForm(forms.Form):
    """A form with optional ``date_from`` and ``date_to`` fields (declared
    by the subclass, with its own labels) that refuses an end before the
    start."""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", gettext("The end comes before the start."))
        return data


class VersionChoiceField(forms.ModelChoiceField):
    """A model version by name, with its state in brackets unless it is
    one of ``plain_states``."""

    def __init__(self, *args: Any, plain_states: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plain_states = set(plain_states)

    def label_from_instance(self, obj: Any) -> str:
        version: ModelVersion = obj
        if version.state in self.plain_states:
            return version.name
        return f"{version.name} ({version.get_state_display().lower()})"
