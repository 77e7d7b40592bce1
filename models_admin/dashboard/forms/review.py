"""Forms of the conversation review area: list filters, flagging, adding
conversations to a dataset, and the audit log filter."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext, gettext_lazy

from chat.models import Conversation
from models_admin.dashboard.forms.common import ANY, DateRangeForm, ListFilterForm, date_field
from models_admin.dashboard.selectors.review import (
    Feedbacks,
    review_datasets_list,
    review_source_choices,
    review_staff_list,
)
from models_admin.models import Dataset, ReviewEvent


class ReviewFilterForm(ListFilterForm, DateRangeForm):
    """The list's filters, read from the query string; every field may be
    left empty."""

    FLAGGED_CHOICES = [ANY, ("yes", gettext_lazy("Flagged")), ("no", gettext_lazy("Not flagged"))]
    FEEDBACK_CHOICES = [
        ANY,
        (Feedbacks.UP, gettext_lazy("Thumbs up")),
        (Feedbacks.DOWN, gettext_lazy("Thumbs down")),
        (Feedbacks.NONE, gettext_lazy("No feedback")),
    ]

    q = forms.CharField(
        label=gettext_lazy("Text"),
        required=False,
        max_length=200,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": gettext_lazy("in messages")}
        ),
    )
    user = forms.CharField(
        label=gettext_lazy("User"),
        required=False,
        max_length=150,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": gettext_lazy("username contains")}
        ),
    )
    feedback = forms.ChoiceField(
        label=gettext_lazy("Feedback"), choices=FEEDBACK_CHOICES, required=False
    )
    flagged = forms.ChoiceField(
        label=gettext_lazy("Flagged"), choices=FLAGGED_CHOICES, required=False
    )
    source = forms.ChoiceField(label=gettext_lazy("Source"), required=False)
    date_from = date_field(gettext_lazy("Updated from"))
    date_to = date_field(gettext_lazy("Updated to"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        source = cast(forms.ChoiceField, self.fields["source"])
        source.choices = [ANY, *review_source_choices()]

    def selector_kwargs(self) -> dict[str, Any]:
        """The filters as arguments of ``conversations_for_review``; an
        invalid one is left out (and shown with its error)."""
        data = self.valid_data()
        flagged = {"yes": True, "no": False}.get(data.get("flagged") or "")
        return {
            "query": data.get("q") or "",
            "username": data.get("user") or "",
            "feedback": data.get("feedback") or "",
            "flagged": flagged,
            "source": data.get("source") or "",
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
        }


class FlagForm(forms.Form):
    """Flag with a reason, or clear the flag (the reason is then optional)."""

    action = forms.ChoiceField(
        label=gettext_lazy("Action"), choices=[("flag", "Flag"), ("unflag", "Unflag")]
    )
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") == "flag" and not (data.get("reason") or "").strip():
            self.add_error("reason", gettext("Say why the conversation is flagged."))
        return data


class DatasetAddForm(forms.Form):
    """Selected conversations and where they go: an existing dataset or a
    new one."""

    conversations = forms.ModelMultipleChoiceField(
        label=gettext_lazy("Conversations"),
        queryset=Conversation.objects.all(),
        widget=forms.MultipleHiddenInput,
        error_messages={"required": "Select at least one conversation."},
    )
    dataset = forms.ModelChoiceField(
        label=gettext_lazy("Existing dataset"),
        queryset=Dataset.objects.none(),
        required=False,
        empty_label=gettext_lazy("— new dataset —"),
    )
    new_name = forms.CharField(
        label=gettext_lazy("New dataset name"),
        required=False,
        max_length=Dataset._meta.get_field("name").max_length,
    )
    thumbs_up_only = forms.BooleanField(
        label=gettext_lazy("Only turns up to the last answer rated up"), required=False
    )
    exclude_flagged = forms.BooleanField(
        label=gettext_lazy("Skip flagged conversations (blocked answers always end an example)"),
        required=False,
        initial=True,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["dataset"]).queryset = review_datasets_list()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        dataset, name = data.get("dataset"), (data.get("new_name") or "").strip()
        if dataset is None and not name and "dataset" not in self.errors:
            self.add_error("new_name", gettext("Choose an existing dataset or name a new one."))
        elif dataset is not None and name:
            self.add_error(
                "new_name", gettext("Leave the name empty when adding to an existing dataset.")
            )
        elif name and Dataset.objects.filter(name=name).exists():
            self.add_error(
                "new_name", gettext("A dataset of that name exists; choose it above instead.")
            )
        return data


class ReviewLogFilterForm(ListFilterForm):
    staff = forms.ModelChoiceField(
        label=gettext_lazy("Staff"),
        queryset=get_user_model().objects.none(),
        required=False,
        empty_label=gettext_lazy("Any"),
    )
    action = forms.ChoiceField(
        label=gettext_lazy("Action"), choices=[ANY, *ReviewEvent.Action.choices], required=False
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["staff"]).queryset = review_staff_list()

    def selector_kwargs(self) -> dict[str, Any]:
        data = self.valid_data()
        staff = data.get("staff")
        return {"staff_id": staff.pk if staff else None, "action": data.get("action") or ""}
