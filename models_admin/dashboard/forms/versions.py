"""Forms of the dashboard's model-versions area: list filters, promotion,
rollback, canaries, and the compare page with its "ask all" box."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext, gettext_lazy

from inference.llamacpp.export import QUANTIZATIONS
from models_admin.dashboard.forms.common import VersionChoiceField
from models_admin.models import ModelVersion

#: How many versions the compare page puts side by side.
COMPARE_MIN = 2
COMPARE_MAX = 4
#: Bounds of the "ask all" box.
QUESTION_MAX_CHARS = 4000
ASK_MAX_TOKENS = 512
ASK_DEFAULT_TOKENS = 128

#: The list filter's states: the stored ones plus "canary", which is the
#: version of the running canary whatever its stored state.
STATE_FILTERS = [
    ("", gettext_lazy("Any state")),
    ("production", gettext_lazy("Production")),
    ("canary", gettext_lazy("Canary")),
    ("candidate", gettext_lazy("Candidate")),
    ("archived", gettext_lazy("Archived")),
]


class VersionFilterForm(forms.Form):
    state = forms.ChoiceField(label=gettext_lazy("State"), choices=STATE_FILTERS, required=False)
    kind = forms.ChoiceField(
        label=gettext_lazy("Kind"),
        choices=[("", gettext_lazy("Any kind")), *ModelVersion.Kind.choices],
        required=False,
    )


class PromoteForm(forms.Form):
    note = forms.CharField(
        label=gettext_lazy("Note"),
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=5000,
        help_text=gettext_lazy("Why this version goes to production; kept in the audit history."),
        error_messages={"required": "Say why this version goes to production."},
    )


class RollbackForm(forms.Form):
    note = forms.CharField(
        label=gettext_lazy("Note"),
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=5000,
        required=False,
    )


class CanaryForm(forms.Form):
    """Start a canary, or change the share of the one running when the
    same version is chosen."""

    version = VersionChoiceField(
        label=gettext_lazy("Version"),
        queryset=ModelVersion.objects.exclude(state=ModelVersion.State.PRODUCTION),
        plain_states=[ModelVersion.State.CANDIDATE, ModelVersion.State.PRODUCTION],
        empty_label=None,
        error_messages={"invalid_choice": "Choose a version that is not in production."},
    )
    percent = forms.IntegerField(
        label=gettext_lazy("Percent"),
        min_value=1,
        max_value=99,
        initial=10,
        help_text=gettext_lazy("Share of conversations sent to the canary, 1 to 99."),
    )
    note = forms.CharField(
        label=gettext_lazy("Note"),
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=5000,
        required=False,
    )


#: The quantizations' descriptions in the page's language (the export
#: module, below Django, has them in English).
QUANTIZATION_LABELS = {
    "f16": gettext_lazy("F16 (16-bit, no quantization loss to speak of)"),
    "q8_0": gettext_lazy("Q8_0 (8-bit, near-lossless)"),
    "q6_k": gettext_lazy("Q6_K (6-bit)"),
    "q5_k_m": gettext_lazy("Q5_K_M (5-bit)"),
    "q4_k_m": gettext_lazy("Q4_K_M (4-bit, the usual size/quality trade)"),
    "q4_1": gettext_lazy("Q4_1 (4-bit, as SmolLM2's GGUF ships)"),
    "q4_0": gettext_lazy("Q4_0 (4-bit, fastest on CPUs)"),
}


class CompressForm(forms.Form):
    quantization = forms.ChoiceField(
        label=gettext_lazy("Quantization"),
        choices=[
            (q.name, QUANTIZATION_LABELS.get(q.name, q.label)) for q in QUANTIZATIONS.values()
        ],
        initial="q8_0",
        help_text=gettext_lazy(
            "Smaller runs faster on a CPU and strays further from the original."
        ),
    )


class _OrderedVersionsField(forms.Field):
    """2 to 4 versions by primary key, in the order given, each once."""

    widget = forms.MultipleHiddenInput

    def clean(self, value: Any) -> list[ModelVersion]:
        if isinstance(value, str | int):
            value = [value]
        if value is not None and not isinstance(value, list | tuple):
            raise ValidationError(
                gettext("Give the versions as a list of ids."), code="invalid_list"
            )
        ids: list[int] = []
        for item in value or []:
            try:
                if isinstance(item, bool) or not isinstance(item, str | int):
                    raise ValueError
                pk = int(item)
            except ValueError:
                raise ValidationError(
                    gettext("“%(value)s” is not a model version id."),
                    code="invalid_pk",
                    params={"value": item},
                ) from None
            if pk not in ids:
                ids.append(pk)
        found = ModelVersion.objects.in_bulk(ids) if ids else {}
        missing = [pk for pk in ids if pk not in found]
        if missing:
            raise ValidationError(
                gettext("There is no model version %(value)s."),
                code="invalid_choice",
                params={"value": ", ".join(map(str, missing))},
            )
        if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
            raise ValidationError(
                gettext("Choose %(min)s to %(max)s versions to compare (%(count)s chosen)."),
                code="count",
                params={"min": COMPARE_MIN, "max": COMPARE_MAX, "count": len(ids)},
            )
        return [found[pk] for pk in ids]


class CompareForm(forms.Form):
    """The versions of the compare page (``?v=1&v=2``)."""

    v = _OrderedVersionsField(label=gettext_lazy("V"))


class CompareAskForm(forms.Form):
    """One question put to every compared version (a JSON body)."""

    versions = _OrderedVersionsField(label=gettext_lazy("Versions"))
    question = forms.CharField(
        label=gettext_lazy("Question"),
        max_length=QUESTION_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Write a question."},
    )
    system = forms.CharField(
        label=gettext_lazy("System prompt (optional)"),
        max_length=QUESTION_MAX_CHARS,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    max_tokens = forms.IntegerField(
        label=gettext_lazy("Max tokens"),
        min_value=1,
        max_value=ASK_MAX_TOKENS,
        required=False,
        initial=ASK_DEFAULT_TOKENS,
    )
    temperature = forms.FloatField(
        label=gettext_lazy("Temperature"),
        min_value=0.0,
        max_value=2.0,
        required=False,
        initial=0.0,
        help_text=gettext_lazy("0 answers greedily, the same every time."),
        widget=forms.NumberInput(attrs={"step": "0.1"}),
    )

    def clean_max_tokens(self) -> int:
        value = self.cleaned_data.get("max_tokens")
        return ASK_DEFAULT_TOKENS if value is None else value

    def clean_temperature(self) -> float:
        value = self.cleaned_data.get("temperature")
        return 0.0 if value is None else value

    def messages(self) -> list[dict[str, str]]:
        """The conversation to send: the system prompt, if any, then the
        question."""
        data = self.cleaned_data
        messages = [{"role": "user", "content": data["question"]}]
        if data.get("system"):
            messages.insert(0, {"role": "system", "content": data["system"]})
        return messages
