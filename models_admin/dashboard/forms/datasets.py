"""The forms of a dataset upload and of a dataset's cleaned copy. The
services decide whether the input makes a dataset; their errors come back
next to the fields they name (an upload's conversations next to the file,
a cleaned copy's above the form)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.formats import number_format
from django.utils.translation import gettext, gettext_lazy

from models_admin.dashboard.forms.common import ServiceForm
from models_admin.models import Dataset, FilterRule

#: The size ``jsonl_parse`` accepts; larger files are refused unread.
UPLOAD_MAX_BYTES = 50_000_000


class DatasetUploadForm(ServiceForm):
    service_fields = {"conversations": "file", "pairs": "file"}

    kind = forms.ChoiceField(
        choices=Dataset.Kind.choices,
        initial=Dataset.Kind.CONVERSATIONS,
        required=False,  # conversations when not sent
        widget=forms.RadioSelect,
        label=gettext_lazy("What the file holds"),
        help_text=(
            gettext_lazy(
                'Preference pairs: one {"prompt": [messages ending with the user\'s], '
                '"chosen": "...", "rejected": "..."} a line, for preference tuning (DPO).'
            )
        ),
    )
    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=200,
        help_text=gettext_lazy("Unique; jobs and versions show it."),
    )
    description = forms.CharField(
        label=gettext_lazy("Description"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy("Where the data comes from and what it teaches."),
    )
    eval_fraction = forms.FloatField(
        initial=0.1,
        label=gettext_lazy("Eval fraction"),
        help_text=gettext_lazy(
            "Share of the conversations held out to measure eval loss (0 to 0.9)."
        ),
        widget=forms.NumberInput(attrs={"min": "0", "max": "0.9", "step": "0.01"}),
    )
    file = forms.FileField(
        label=gettext_lazy("JSONL file"),
        help_text=(
            gettext_lazy(
                'One conversation a line: {"messages": [{"role": "user", "content": "..."}, '
                '{"role": "assistant", "content": "..."}]}. An optional system message comes '
                "first; turns alternate and end with the assistant."
            )
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.txt,application/json"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")  # labels as on the job form
        super().__init__(*args, **kwargs)

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > UPLOAD_MAX_BYTES:
            raise ValidationError(
                gettext("The file is %(size)s bytes; the limit is %(upload_max_bytes)s.")
                % {
                    "size": number_format(upload.size, force_grouping=True),
                    "upload_max_bytes": number_format(UPLOAD_MAX_BYTES, force_grouping=True),
                }
            )
        return upload


#: The surfaces whose rules can clean a dataset, as the rules name them.
CLEAN_SURFACES = [(value, label) for value, label in FilterRule.Surface.choices if value != "all"]


class DatasetCleanForm(ServiceForm):
    # No example left after cleaning is the form's error, not a field's.
    service_fields = {"conversations": NON_FIELD_ERRORS, "eval_fraction": NON_FIELD_ERRORS}

    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=200,
        help_text=gettext_lazy("Of the new dataset; the original stays as it is."),
    )
    surface = forms.ChoiceField(
        choices=CLEAN_SURFACES,
        initial="chat",
        label=gettext_lazy("Rules of"),
        help_text=gettext_lazy(
            "Questions go through the surface's input rules, answers its output rules."
        ),
    )
    drop_duplicates = forms.BooleanField(
        required=False, label=gettext_lazy("Leave out near duplicates (all but the first)")
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
