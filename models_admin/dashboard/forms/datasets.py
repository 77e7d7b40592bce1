"""The form of a dataset upload. ``dataset_upload`` decides whether the
file is a dataset; its errors come back next to the fields they name (the
conversations' next to the file)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from models_admin.dashboard.forms.common import ServiceForm

#: The size ``jsonl_parse`` accepts; larger files are refused unread.
UPLOAD_MAX_BYTES = 50_000_000


class DatasetUploadForm(ServiceForm):
    service_fields = {"conversations": "file"}

    name = forms.CharField(max_length=200, help_text="Unique; jobs and versions show it.")
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Where the data comes from and what it teaches.",
    )
    eval_fraction = forms.FloatField(
        initial=0.1,
        label="Eval fraction",
        help_text="Share of the conversations held out to measure eval loss (0 to 0.9).",
        widget=forms.NumberInput(attrs={"min": "0", "max": "0.9", "step": "0.01"}),
    )
    file = forms.FileField(
        label="JSONL file",
        help_text=(
            'One conversation a line: {"messages": [{"role": "user", "content": "..."}, '
            '{"role": "assistant", "content": "..."}]}. An optional system message comes '
            "first; turns alternate and end with the assistant."
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
                f"The file is {upload.size:,} bytes; the limit is {UPLOAD_MAX_BYTES:,}."
            )
        return upload
