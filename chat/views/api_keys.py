"""The account page for API keys: the user's keys with this month's usage
and the limits in effect, a form to create one and a button to revoke
one.

A new key's secret exists in clear only in the response to the POST that
made it: the page renders it there, uncached, and never puts it in a
URL, the session or the database.
"""

from __future__ import annotations

import logging
from typing import cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from chat.forms import ApiKeyCreateForm
from chat.models import ApiKey
from chat.selectors import api_key_get_for_user, api_keys_for_user
from chat.services.api_keys import api_key_create, api_key_revoke
from chat.services.completions import DEFAULT_ALIAS

logger = logging.getLogger(__name__)


def _api_base_url(request: HttpRequest) -> str:
    """The absolute URL of the API's root, e.g. ``https://host/v1``."""
    models_url = reverse("v1-models")
    return request.build_absolute_uri(models_url.rsplit("/", 1)[0])


def _page(
    request: HttpRequest,
    *,
    form: ApiKeyCreateForm,
    created: ApiKey | None = None,
    secret: str = "",
    status: int = 200,
) -> HttpResponse:
    rows = api_keys_for_user(user=request.user)
    active = sum(1 for row in rows if row["key"].active)
    context = {
        "form": form,
        "rows": rows,
        "created": created,
        "secret": secret,
        "active_count": active,
        "max_keys": settings.API_KEYS_PER_USER,
        "api_base_url": _api_base_url(request),
        "model_alias": DEFAULT_ALIAS,
    }
    return render(request, "registration/api_keys.html", context, status=status)


@login_required
@never_cache  # no-store: the response to a creation holds the secret
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """List the user's keys (GET); create one (POST) and show its secret
    in this response only."""
    if request.method == "GET":
        return _page(request, form=ApiKeyCreateForm())
    form = ApiKeyCreateForm(request.POST)
    if form.is_valid():
        try:
            # login_required let only signed-in users through.
            user = cast(AbstractBaseUser, request.user)
            key, secret = api_key_create(user=user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            form.add_error("name" if hasattr(exc, "error_dict") else None, exc.messages)
        else:
            logger.info("%s created API key %s (%s)", request.user, key.pk, key.prefix)
            return _page(request, form=ApiKeyCreateForm(), created=key, secret=secret)
    return _page(request, form=form, status=400)


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    """Revoke one of the user's keys; another user's key is a 404."""
    key = api_key_get_for_user(user=request.user, key_id=key_id)
    if key.active:
        api_key_revoke(key=key)
        logger.info("%s revoked API key %s (%s)", request.user, key.pk, key.prefix)
        messages.success(
            request,
            gettext("Key “%(name)s” (%(prefix)s…) revoked.")
            % {"name": key.name, "prefix": key.prefix},
        )
    else:
        messages.info(request, gettext("Key “%(name)s” was already revoked.") % {"name": key.name})
    return redirect("api-keys")
