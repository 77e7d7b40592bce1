"""The form of a new training job.

The forms parse and show input; the services decide. Hyperparameters are
checked by ``training_params_validate`` so the page and the service give
the same answer, and the bounds in ``PARAMS`` reach the browser only as
input attributes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Case, IntegerField, Value, When
from django.utils.translation import gettext, gettext_lazy

from models_admin.dashboard.forms.common import ServiceForm, VersionChoiceField
from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.services.training import PARAMS, param_default, training_params_validate

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: name: (label, help), in the order the form shows them.
PARAM_TEXT: dict[str, tuple[StrOrPromise, StrOrPromise]] = {
    "learning_rate": (
        gettext_lazy("Learning rate"),
        gettext_lazy("Peak step size after warm-up; 1e-5 to 3e-4 is usual."),
    ),
    "steps": (
        gettext_lazy("Steps"),
        gettext_lazy("Optimizer steps to run (ignored when epochs is above 0)."),
    ),
    "epochs": (
        gettext_lazy("Epochs"),
        gettext_lazy("Passes over the training split; above 0 it decides the steps."),
    ),
    "batch_size": (
        gettext_lazy("Batch size"),
        gettext_lazy("Conversations in each forward pass."),
    ),
    "grad_accum": (
        gettext_lazy("Gradient accumulation"),
        gettext_lazy("Batches summed into one optimizer step."),
    ),
    "max_length": (
        gettext_lazy("Max length"),
        gettext_lazy("Tokens kept of each conversation; the rest is cut."),
    ),
    "warmup_steps": (
        gettext_lazy("Warm-up steps"),
        gettext_lazy("Steps over which the learning rate rises from 0."),
    ),
    "weight_decay": (
        gettext_lazy("Weight decay"),
        gettext_lazy("AdamW decay of the weights; 0 turns it off."),
    ),
    "seed": (
        gettext_lazy("Seed"),
        gettext_lazy("Fixes the batch order, so a run can be repeated."),
    ),
    "checkpoint_every": (
        gettext_lazy("Checkpoint every"),
        gettext_lazy("Steps between checkpoints (candidate versions)."),
    ),
    "eval_every": (
        gettext_lazy("Evaluate every"),
        gettext_lazy("Steps between eval-loss measurements."),
    ),
    "eval_examples": (
        gettext_lazy("Eval examples"),
        gettext_lazy("Eval-split conversations each measurement reads."),
    ),
    "lora": (
        gettext_lazy("LoRA"),
        gettext_lazy("Train small adapter matrices instead of every weight."),
    ),
    "lora_r": (
        gettext_lazy("LoRA rank"),
        gettext_lazy("Rank of the adapters; higher learns more, costs more."),
    ),
    "lora_alpha": (
        gettext_lazy("LoRA alpha"),
        gettext_lazy("Scale of the adapters' update (often twice the rank)."),
    ),
    "student_layers": (
        gettext_lazy("Student layers"),
        gettext_lazy(
            "Layers the student keeps of the teacher's (unless a student version is chosen)."
        ),
    ),
    "temperature": (
        gettext_lazy("Temperature"),
        gettext_lazy("Softens both distributions; 1 to 4 is usual."),
    ),
    "alpha": (
        gettext_lazy("Alpha"),
        gettext_lazy("Share of the loss from the teacher (KL); the rest is plain CE."),
    ),
    "beta": (
        gettext_lazy("Beta"),
        gettext_lazy(
            "How far the model may move from the base: higher keeps it closer; 0.1 is usual."
        ),
    ),
}

KIND_TEXT = {
    TrainingJob.Kind.FINETUNE: (
        gettext_lazy(
            "Fine-tune: keep training the base version on the dataset's assistant answers. "
            "Each checkpoint becomes a candidate version."
        )
    ),
    TrainingJob.Kind.DISTILL: (
        gettext_lazy(
            "Distill: train a smaller student to answer like the base version (the teacher) "
            "on the dataset. The student is a copy of the teacher with fewer layers, or the "
            "student version you choose."
        )
    ),
    TrainingJob.Kind.DPO: (
        gettext_lazy(
            "Preference tuning (DPO): teach the base version to prefer the chosen answer of each "
            "pair over the rejected one, measured against the base itself. Needs a dataset of "
            "preference pairs: from feedback, an upload or the demo."
        )
    ),
}


def _number_attrs(kind_type: type, low: float, high: float) -> dict[str, Any]:
    attrs: dict[str, Any] = {"min": f"{low:g}", "max": f"{high:g}"}
    attrs["step"] = "1" if kind_type is int else "any"
    return attrs


def _default_shown(value: Any) -> str:
    if isinstance(value, bool):
        return gettext("on") if value else gettext("off")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _param_field(name: str) -> forms.Field:
    kind_type, default, low, high, kinds = PARAMS[name]
    label, help_text = PARAM_TEXT.get(name, (name.replace("_", " ").capitalize(), ""))
    common: dict[str, Any] = {
        "label": label,
        "help_text": help_text,
        "required": False,
        "initial": default,
    }
    field: forms.Field
    if kind_type is bool:
        field = forms.BooleanField(widget=forms.CheckboxInput(), **common)
    elif kind_type is int:
        field = forms.IntegerField(
            widget=forms.NumberInput(attrs=_number_attrs(int, low, high)), **common
        )
    else:
        field = forms.FloatField(
            widget=forms.NumberInput(attrs=_number_attrs(float, low, high)), **common
        )
    # The page marks each input with the kinds that use it, so its script
    # can hide the others.
    field.kinds = kinds  # type: ignore[union-attr]
    by_kind = {kind: param_default(kind, name) for kind in kinds}
    if len(set(map(str, by_kind.values()))) > 1:
        # The page's script swaps in the chosen kind's default while the
        # value is still the previous kind's.
        field.widget.attrs["data-defaults"] = json.dumps(by_kind)
    return field


class _DatasetChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        train = obj.stats.get("train") or 0
        evaluation = obj.stats.get("eval") or 0
        what = "pairs " if obj.kind == Dataset.Kind.PREFERENCES else ""
        return f"{obj.name} ({what}{train:,} train / {evaluation:,} eval)"


def _versions() -> Any:
    """Production first, then candidates, then archived; newest first."""
    rank = Case(
        When(state=ModelVersion.State.PRODUCTION, then=Value(0)),
        When(state=ModelVersion.State.CANDIDATE, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return ModelVersion.objects.annotate(rank=rank).order_by("rank", "-created_at", "-id")


class TrainingJobForm(ServiceForm):
    """Kind, data, versions and every hyperparameter of ``PARAMS``.

    A valid form has ``params``: the hyperparameters as
    ``training_params_validate`` returned them.
    """

    kind = forms.ChoiceField(
        label=gettext_lazy("Kind"),
        choices=TrainingJob.Kind.choices,
        initial=TrainingJob.Kind.FINETUNE,
        widget=forms.RadioSelect,
    )
    dataset = _DatasetChoice(
        label=gettext_lazy("Dataset"), queryset=Dataset.objects.order_by("-created_at", "-id")
    )
    base_version = VersionChoiceField(
        queryset=ModelVersion.objects.none(),
        plain_states=[ModelVersion.State.CANDIDATE],
        label=gettext_lazy("Base version"),
        help_text=gettext_lazy("The model fine-tuned, or the teacher of a distillation."),
    )
    student_version = VersionChoiceField(
        queryset=ModelVersion.objects.none(),
        plain_states=[ModelVersion.State.CANDIDATE],
        required=False,
        label=gettext_lazy("Student version"),
        empty_label=gettext_lazy("A copy of the teacher with fewer layers"),
        help_text=gettext_lazy("Distill into an existing smaller version instead."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_bound:
            # The page's script leaves out the inputs the chosen kind does
            # not use; shown again, they hold their defaults, not blanks.
            data = self.data.copy()  # type: ignore[attr-defined]  # a QueryDict
            kind = str(data.get("kind") or "")
            for name, (kind_type, default, *_rest) in PARAMS.items():
                if kind_type is not bool and name not in data:
                    used = kind in PARAMS[name][4]
                    data[name] = str(param_default(kind, name) if used else default)
            self.data = data
        for name in ("base_version", "student_version"):
            cast(forms.ModelChoiceField, self.fields[name]).queryset = _versions()
        for name in PARAMS:
            self.fields[name] = _param_field(name)
        self.params: dict[str, Any] = {}

    def param_rows(self) -> list[dict[str, Any]]:
        """Each hyperparameter's bound field, the kinds that use it, a
        label for a kind-only one and its default as shown."""
        rows = []
        for name, (_type, default, _low, _high, kinds) in PARAMS.items():
            only = ""
            if len(kinds) == 1:
                only = gettext("%(kind)s only") % {"kind": TrainingJob.Kind(kinds[0]).label}
            rows.append(
                {
                    "field": self[name],
                    "kinds": " ".join(kinds),
                    "only": only,
                    "default": _default_shown(default),
                    "defaults": json.dumps(
                        {kind: _default_shown(param_default(kind, name)) for kind in kinds}
                    ),
                }
            )
        return rows

    def kind_help(self) -> list[tuple[str, StrOrPromise]]:
        return [(str(kind), text) for kind, text in KIND_TEXT.items()]

    def _given(self, name: str, kind: str) -> bool:
        """Whether the parameter is part of the request for this kind.

        A parameter the kind does not use counts only when its value differs
        from the default: the page's script drops those inputs, and a page
        without scripts sends them untouched, which must not fail the form.
        A changed one is passed on so the validator can refuse it.
        """
        kind_type, _default, _low, _high, kinds = PARAMS[name]
        default = param_default(kind, name) if kind in kinds else PARAMS[name][1]
        value = self.cleaned_data.get(name)
        present = bool(value) if kind_type is bool else value is not None
        if not present:
            return False
        return kind in kinds or value != default

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind")
        if not kind:
            return cleaned
        unparsed = [name for name in PARAMS if name in self.errors]
        params = {
            name: cleaned[name]
            for name in PARAMS
            if name not in unparsed and self._given(name, kind)
        }
        try:
            self.params = training_params_validate(kind=kind, params=params)
        except ValidationError as exc:
            self.add_service_errors(exc)
        return cleaned

    def add_service_error(self, name: str, messages: list[str]) -> None:
        if name in PARAMS and name in self.errors:
            return  # the field's own parse error already says it
        super().add_service_error(name, messages)
