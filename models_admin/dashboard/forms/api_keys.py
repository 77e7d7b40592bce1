"""Forms of the dashboard's API area: the key list's filters and order,
and a key's limits.

``api_key_limits_set`` decides whether limits are acceptable; its errors
come back next to the fields they name.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.utils.formats import number_format
from django.utils.translation import gettext, gettext_lazy

from chat.models import ApiKey
from models_admin.dashboard.forms.common import ANY, ListFilterForm, ServiceForm
from models_admin.dashboard.selectors.api_usage import (
    DEFAULT_SORT,
    SORTS,
    STATES,
    api_key_user_choices,
)
from models_admin.models import KnowledgeBase

#: The largest values the columns hold.
RATE_LIMIT_MAX = 2**31 - 1
TOKEN_QUOTA_MAX = 2**63 - 1


class ApiKeyFilterForm(ListFilterForm):
    """The key list's filters and order, read from the query string."""

    user = forms.ChoiceField(label=gettext_lazy("User"), required=False)
    state = forms.ChoiceField(
        label=gettext_lazy("State"), choices=[ANY, *STATES.items()], required=False
    )
    sort = forms.ChoiceField(
        label=gettext_lazy("Sort by"),
        choices=[(value, label) for value, (label, _order) in SORTS.items()],
        required=False,
        initial=DEFAULT_SORT,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        user = cast(forms.ChoiceField, self.fields["user"])
        user.choices = [ANY, *api_key_user_choices()]

    def selector_kwargs(self) -> dict[str, Any]:
        """The filters as arguments of ``api_keys_list``; an invalid one is
        left out (and shown with its error)."""
        data = self.valid_data()
        user = data.get("user") or ""
        return {
            "user_id": int(user) if user else None,
            "state": data.get("state") or "",
            "sort": data.get("sort") or DEFAULT_SORT,
        }


class ApiKeyLimitsForm(ServiceForm):
    """A key's limits; an empty limit means the site default."""

    rate_limit_per_minute = forms.IntegerField(
        label=gettext_lazy("Requests a minute"),
        required=False,
        min_value=1,
        max_value=RATE_LIMIT_MAX,
    )
    monthly_token_quota = forms.IntegerField(
        label=gettext_lazy("Tokens a month"),
        required=False,
        min_value=0,
        max_value=TOKEN_QUOTA_MAX,
    )
    all_versions = forms.BooleanField(
        label=gettext_lazy("May call every version"),
        required=False,
        help_text=gettext_lazy("Any version that is not archived, by name; off: production only."),
    )
    knowledge_base = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.none(),
        label=gettext_lazy("Knowledge base"),
        required=False,
        empty_label=gettext_lazy("None"),
        help_text=(
            gettext_lazy(
                "Calls with the key are grounded in this base unless they name another one "
                "members may use. It stays with this key; the owner's next keys start without."
            )
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        rate = settings.API_RATE_LIMIT_PER_MINUTE
        quota = settings.API_MONTHLY_TOKEN_QUOTA
        quota_text = number_format(quota, force_grouping=True) if quota else gettext("no quota")
        bases = cast(forms.ModelChoiceField, self.fields["knowledge_base"])
        bases.queryset = KnowledgeBase.objects.order_by("name")
        self.fields["rate_limit_per_minute"].help_text = gettext(
            "Empty: the site default (%(rate)s)."
        ) % {"rate": number_format(rate, force_grouping=True)}
        self.fields["monthly_token_quota"].help_text = gettext(
            "Tokens in and out per calendar month through all the owner's keys, revoked "
            "ones included; 0: no quota; empty: the site default (%(quota)s). The "
            "owner's next keys start with the limits saved here."
        ) % {"quota": quota_text}
        for field in self.fields.values():
            field.widget.attrs.setdefault("autocomplete", "off")

    @classmethod
    def initial_for(cls, key: ApiKey) -> dict[str, Any]:
        return {
            "rate_limit_per_minute": key.rate_limit_per_minute,
            "monthly_token_quota": key.monthly_token_quota,
            "all_versions": key.all_versions,
            "knowledge_base": key.knowledge_base_id,
        }
