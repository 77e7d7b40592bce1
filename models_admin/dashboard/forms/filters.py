"""Forms of the content-filter area: a rule, its on/off switch, the test
panel's request, a rules file to import and the filters of the hit list.

The forms parse and show input; ``filter_rule_save`` and
``filter_rules_import`` decide whether a rule is acceptable, and their
errors come back next to the fields they name.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.utils.formats import number_format
from django.utils.text import format_lazy
from django.utils.translation import gettext, gettext_lazy

from chat.models import WidgetSite
from inference.content_filter import PRESETS
from models_admin.dashboard.forms.common import (
    ANY,
    DateRangeForm,
    ListFilterForm,
    ServiceForm,
    date_field,
    text_with,
)
from models_admin.dashboard.selectors.filter_audit import GONE_PREFIX, filter_hit_rule_choices
from models_admin.filters import RULE_FIELDS
from models_admin.models import FilterRule

#: Longest sample text the test panel runs rules on.
TEST_TEXT_MAX_CHARS = 20_000
#: Largest rules file the import reads.
IMPORT_MAX_BYTES = 1_000_000
#: The range of the priority column.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1

#: Which kind uses which field; the page's script shows only those.
KIND_FIELDS = {
    "keywords": FilterRule.Kind.KEYWORDS,
    "whole_word": FilterRule.Kind.KEYWORDS,
    "pattern": FilterRule.Kind.REGEX,
    "preset": FilterRule.Kind.PRESET,
}
#: Which action uses which field.
ACTION_FIELDS = {"mask_with": FilterRule.Action.MASK, "notice": FilterRule.Action.BLOCK}

PRESET_HELP = format_lazy(
    gettext_lazy(
        "Email: name@domain.tld. Phone: 7 to 15 digits with a leading + or separators "
        "(or 10 digits or more). Card: 13 to 19 digits that pass the Luhn check. "
        "URL: http(s):// or www. addresses. Masks write {labels} unless told otherwise."
    ),
    labels=", ".join(preset.label for preset in PRESETS.values()),
)

#: The sample scopes and surfaces a text can be tried on (a rule's
#: "both" and "all" are not places a text can be).
TEST_SCOPES = [
    (FilterRule.Scope.INPUT.value, gettext_lazy("Input (a message sent)")),
    (FilterRule.Scope.OUTPUT.value, gettext_lazy("Output (an answer)")),
]
TEST_SURFACES = [
    (value, label)
    for value, label in FilterRule.Surface.choices
    if value != FilterRule.Surface.ALL
]


class FilterRuleForm(ServiceForm):
    """Every field of a rule. A valid form's ``rule_data()`` is what
    ``filter_rule_save`` takes.

    ``draft=True`` parses an unsaved rule for a trial run (its name may be
    empty); ``read_only=True`` shows a rule to staff who may not change
    it.
    """

    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=200,
        help_text=gettext_lazy("Shown in the rule list, the audit of hits and the logs."),
    )
    kind = forms.ChoiceField(
        label=gettext_lazy("Kind"),
        choices=FilterRule.Kind.choices,
        initial=FilterRule.Kind.KEYWORDS,
        widget=forms.RadioSelect,
        help_text=gettext_lazy("What the rule looks for."),
    )
    keywords = forms.CharField(
        label=gettext_lazy("Keywords"),
        required=False,
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text=(
            gettext_lazy(
                "One word or phrase a line. Case, accents, look-alike letters, leetspeak "
                "(b4dw0rd) and letters written apart (b a d w o r d) match as well."
            )
        ),
    )
    whole_word = forms.BooleanField(
        required=False,
        initial=True,
        label=gettext_lazy("Whole words only"),
        help_text=gettext_lazy("Off: also match inside longer words (“bad” in “badge”)."),
    )
    pattern = forms.CharField(
        label=gettext_lazy("Pattern"),
        required=False,
        max_length=2000,
        strip=False,  # spaces at either end are part of a pattern
        widget=forms.TextInput(
            attrs={"spellcheck": "false", "autocomplete": "off", "class": "mono"}
        ),
        help_text=(
            gettext_lazy(
                "A regular expression (Python syntax), matched on the text as written; "
                "(?i) ignores case. Patterns that can take long on some texts are refused."
            )
        ),
    )
    preset = forms.ChoiceField(
        label=gettext_lazy("Preset"),
        required=False,
        choices=[("", gettext_lazy("Choose a preset")), *FilterRule.Preset.choices],
        help_text=PRESET_HELP,
    )
    scope = forms.ChoiceField(
        label=gettext_lazy("Scope"),
        choices=FilterRule.Scope.choices,
        initial=FilterRule.Scope.BOTH,
        help_text=gettext_lazy(
            "Messages people send, answers the model writes (checked as they stream), or both."
        ),
    )
    action = forms.ChoiceField(
        label=gettext_lazy("Action"),
        choices=FilterRule.Action.choices,
        initial=FilterRule.Action.BLOCK,
        help_text=(
            gettext_lazy(
                "Block: the whole message or answer is replaced by the notice. Mask: the match "
                "is replaced. Flag: nothing changes; the conversation is flagged for review."
            )
        ),
    )
    mask_with = forms.CharField(
        required=False,
        max_length=100,
        strip=False,
        label=gettext_lazy("Mask with"),
        help_text=gettext_lazy(
            "What a mask writes; empty: the preset's label, or one * per character."
        ),
    )
    notice = forms.CharField(
        label=gettext_lazy("Notice"),
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=gettext_lazy(
            "What people see instead of a blocked message; empty: the site default."
        ),
    )
    surface = forms.ChoiceField(
        label=gettext_lazy("Surface"),
        choices=FilterRule.Surface.choices,
        initial=FilterRule.Surface.ALL,
        help_text=gettext_lazy(
            "Where the rule applies: the main chat, the embeddable widget, the API."
        ),
    )
    site = forms.ModelChoiceField(
        queryset=WidgetSite.objects.order_by("name"),
        required=False,
        empty_label=gettext_lazy("Every site"),
        label=gettext_lazy("Widget site"),
        help_text=gettext_lazy("For the widget: only this site's conversations."),
    )
    priority = forms.IntegerField(
        label=gettext_lazy("Priority"),
        initial=100,
        min_value=PRIORITY_MIN,
        max_value=PRIORITY_MAX,
        help_text=(
            gettext_lazy(
                "Lower runs first. Where matches overlap, blocks win, then the lower priority."
            )
        ),
    )
    enabled = forms.BooleanField(
        label=gettext_lazy("Enabled"),
        required=False,
        initial=True,
        help_text=gettext_lazy("Off: the rule is kept but does not run."),
    )

    def __init__(
        self, *args: Any, draft: bool = False, read_only: bool = False, **kwargs: Any
    ) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.draft = draft
        if draft:
            self.fields["name"].required = False
        for name, field in self.fields.items():
            field.kind = KIND_FIELDS.get(name, "")  # type: ignore[attr-defined]
            field.action = ACTION_FIELDS.get(name, "")  # type: ignore[attr-defined]
            if read_only:
                field.disabled = True

    @classmethod
    def initial_for(cls, rule: FilterRule) -> dict[str, Any]:
        return {name: getattr(rule, name) for name in RULE_FIELDS}

    def rule_data(self) -> dict[str, Any]:
        """The cleaned rule as ``filter_rule_save`` takes it. Fields the
        chosen kind does not use are emptied, so a rule does not carry a
        pattern it never runs (they stay on the page until it is saved)."""
        data = {name: self.cleaned_data[name] for name in RULE_FIELDS}
        for name, kind in KIND_FIELDS.items():
            if data["kind"] != kind and name != "whole_word":
                data[name] = ""
        if self.draft and not data["name"].strip():
            data["name"] = "Draft rule"
        return data

    def draft_spec(self) -> dict[str, Any]:
        """The unsaved rule as the matcher takes it (``id`` None)."""
        spec = FilterRule(**self.rule_data()).spec()
        spec["id"] = None
        return spec


class FilterToggleForm(forms.Form):
    """Switch a rule on or off; the state is explicit, so a second click
    on a stale page does not undo the first."""

    enabled = forms.TypedChoiceField(
        label=gettext_lazy("Enabled"),
        choices=[("1", "On"), ("0", "Off")],
        coerce=lambda value: value == "1",
    )


class FilterTestForm(forms.Form):
    """The test panel's request: a sample text, where it is tried, and
    which rules run (none given: every enabled rule)."""

    text = forms.CharField(
        max_length=TEST_TEXT_MAX_CHARS,
        strip=False,
        label=gettext_lazy("Sample text"),
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text=text_with(
            gettext_lazy("Up to %(test_text_max_chars)s characters. Nothing is stored."),
            test_text_max_chars=f"{TEST_TEXT_MAX_CHARS:,}",
        ),
    )
    scope = forms.ChoiceField(
        choices=TEST_SCOPES, initial=FilterRule.Scope.INPUT, label=gettext_lazy("Tried as")
    )
    surface = forms.ChoiceField(
        choices=TEST_SURFACES, initial=FilterRule.Surface.CHAT, label=gettext_lazy("Surface")
    )
    rules = forms.ModelMultipleChoiceField(
        queryset=FilterRule.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label=gettext_lazy("Rules"),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        rules = cast(forms.ModelMultipleChoiceField, self.fields["rules"])
        rules.queryset = FilterRule.objects.order_by("priority", "id")
        if not self.is_bound:
            rules.initial = list(rules.queryset.filter(enabled=True).values_list("pk", flat=True))


class FilterImportForm(forms.Form):
    """A rules file as the export writes it. A valid form has ``rules``
    in its cleaned data: the parsed JSON, for ``filter_rules_import``."""

    file = forms.FileField(
        label=gettext_lazy("Rules file (JSON)"),
        help_text=(
            text_with(
                gettext_lazy(
                    "A file that the export wrote, or the same shape: a "
                    "list of rules. At most %(megabytes)s MB."
                ),
                megabytes=IMPORT_MAX_BYTES // 1_000_000,
            )
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".json,application/json"}),
    )
    replace = forms.BooleanField(
        required=False,
        label=gettext_lazy("Replace the current rules"),
        help_text=gettext_lazy("Off: the file's rules are added to the current ones."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > IMPORT_MAX_BYTES:
            raise ValidationError(
                gettext("The file is %(size)s bytes; the limit is %(import_max_bytes)s.")
                % {
                    "size": number_format(upload.size, force_grouping=True),
                    "import_max_bytes": number_format(IMPORT_MAX_BYTES, force_grouping=True),
                }
            )
        try:
            self.cleaned_data["rules"] = json.loads(upload.read().decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationError(gettext("The file is not UTF-8 text.")) from None
        except json.JSONDecodeError as exc:
            raise ValidationError(
                gettext("The file is not valid JSON: %(msg)s (line %(lineno)s, column %(colno)s).")
                % {"msg": exc.msg, "lineno": exc.lineno, "colno": exc.colno}
            ) from None
        except RecursionError:
            raise ValidationError(
                gettext("The file nests too deeply to be a rules file.")
            ) from None
        return upload


class FilterHitFilterForm(ListFilterForm, DateRangeForm):
    """The hit list's filters, read from the query string; every field may
    be left empty.

    ``excerpts=False`` (staff without the review right) leaves out the
    search in the excerpts: its answers would tell what users wrote.
    """

    rule = forms.ChoiceField(label=gettext_lazy("Rule"), required=False)
    action = forms.ChoiceField(
        label=gettext_lazy("Action"), choices=[ANY, *FilterRule.Action.choices], required=False
    )
    scope = forms.ChoiceField(
        label=gettext_lazy("Scope"), choices=[ANY, *TEST_SCOPES], required=False
    )
    surface = forms.ChoiceField(
        label=gettext_lazy("Surface"), choices=[ANY, *TEST_SURFACES], required=False
    )
    date_from = date_field(gettext_lazy("From"))
    date_to = date_field(gettext_lazy("To"))
    q = forms.CharField(
        label=gettext_lazy("Text"),
        required=False,
        max_length=200,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": gettext_lazy("in the excerpt")}
        ),
    )

    def __init__(self, *args: Any, excerpts: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        rule = cast(forms.ChoiceField, self.fields["rule"])
        rule.choices = [ANY, *filter_hit_rule_choices()]
        if not excerpts:
            del self.fields["q"]

    def selector_kwargs(self) -> dict[str, Any]:
        """The filters as arguments of ``filter_hits_list``; an invalid one
        is left out (and shown with its error)."""
        data = self.valid_data()
        rule = data.get("rule") or ""
        kwargs: dict[str, Any] = {
            "action": data.get("action") or "",
            "scope": data.get("scope") or "",
            "surface": data.get("surface") or "",
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
            "query": data.get("q") or "",
        }
        if rule.startswith(GONE_PREFIX):
            kwargs["rule_name"] = rule[len(GONE_PREFIX) :]
        elif rule:
            kwargs["rule_id"] = int(rule)
        return kwargs
