"""Forms of the inbox: its filters and a staff member's reply to a
visitor."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.utils.translation import gettext, gettext_lazy

from models_admin.dashboard.forms.common import ANY, ListFilterForm
from models_admin.dashboard.selectors.inbox import INBOX_STATES, widget_site_choices

REPLY_MAX_CHARS = 16_000


class InboxFilterForm(ListFilterForm):
    """The inbox's filters, read from the query string; both may be empty."""

    site = forms.ChoiceField(label=gettext_lazy("Site"), required=False)
    state = forms.ChoiceField(
        label=gettext_lazy("State"),
        required=False,
        choices=[
            ANY,
            *[(state.value, state.label) for state in INBOX_STATES],
        ],
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        site = cast(forms.ChoiceField, self.fields["site"])
        site.choices = [("", gettext("All sites")), *widget_site_choices()]

    def selector_kwargs(self) -> dict[str, Any]:
        """The filters as arguments of ``inbox_rows``; an invalid one is
        left out (and shown with its error)."""
        data = self.valid_data()
        site = data.get("site") or ""
        return {
            "site_id": int(site) if site else None,
            "state": data.get("state") or "",
        }


class InboxReplyForm(forms.Form):
    """A staff member's reply to a visitor."""

    content = forms.CharField(
        max_length=REPLY_MAX_CHARS,
        label=gettext_lazy("Reply"),
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "placeholder": gettext_lazy(
                    "Write to the visitor (Enter sends, Shift+Enter: new line)"
                ),
            }
        ),
        error_messages={"required": "Write a reply first."},
    )
