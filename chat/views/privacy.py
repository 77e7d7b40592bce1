"""The account page's data rights: the training choice, exports of all
one's data with their progress and expiring links, and deleting the
account."""

from __future__ import annotations

import logging
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat.forms import AccountDeleteForm, TrainingChoiceForm
from chat.languages import language_choices
from chat.models import DataExport
from chat.services.data_export import export_download_path, export_request
from chat.services.languages import user_language_get
from chat.services.privacy import (
    training_allowed,
    training_choice,
    training_choice_set,
    training_default,
    user_delete,
)

logger = logging.getLogger(__name__)

#: Exports listed on the account page.
EXPORTS_SHOWN = 5


def _user(request: HttpRequest) -> AbstractBaseUser:
    # login_required let only signed-in users through.
    return cast(AbstractBaseUser, request.user)


def export_json(export: DataExport) -> dict[str, Any]:
    """What the account page shows of one export, for its script too."""
    expired = export.state == DataExport.State.EXPIRED or (
        export.state == DataExport.State.READY
        and export.expires_at is not None
        and export.expires_at <= timezone.now()
    )
    return {
        "id": export.pk,
        "state": DataExport.State.EXPIRED if expired else export.state,
        "state_label": "Expired" if expired else export.get_state_display(),
        "progress": export.progress,
        "created_at": export.created_at.isoformat(),
        "created_label": date_format(
            timezone.localtime(export.created_at), "SHORT_DATETIME_FORMAT"
        ),
        "expires_at": export.expires_at.isoformat() if export.expires_at else None,
        "size_bytes": export.size_bytes,
        "counts": export.counts,
        "error": export.error,
        "url": (
            reverse("data-export-download", args=[export.token])
            if export.state == DataExport.State.READY and not expired
            else None
        ),
    }


def _exports(user: AbstractBaseUser) -> list[DataExport]:
    return list(DataExport.objects.filter(user_id=user.pk)[:EXPORTS_SHOWN])


@login_required
@never_cache
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    """The account page: the training choice, exports and the way out."""
    user = _user(request)
    context = {
        "training_form": TrainingChoiceForm(
            initial={"train_on_chats": training_allowed(user=user)}
        ),
        "training_chosen": training_choice(user=user) is not None,
        "language_choice": user_language_get(user_id=int(user.pk)) or "",
        "languages": language_choices(),
        "training_default": training_default(),
        "export_hours": settings.DATA_EXPORT_HOURS,
        "exports": [export_json(e) for e in _exports(user)],
        "export_busy": any(
            e.state in (DataExport.State.QUEUED, DataExport.State.RUNNING) for e in _exports(user)
        ),
    }
    return render(request, "registration/account.html", context)


@login_required
@require_POST
def training_choice_view(request: HttpRequest) -> HttpResponse:
    form = TrainingChoiceForm(request.POST)
    form.is_valid()  # a checkbox: absent means off
    allowed = bool(form.cleaned_data.get("train_on_chats"))
    training_choice_set(user=_user(request), allowed=allowed)
    messages.success(
        request,
        gettext("Your chats may help train models.")
        if allowed
        else gettext("Your chats will be left out of training from now on."),
    )
    return redirect(reverse("account") + "#privacy")


@login_required
@require_POST
def data_export_start(request: HttpRequest) -> HttpResponse:
    try:
        export_request(user=_user(request))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, gettext("Your archive is being built; this page shows how far it is.")
        )
    return redirect(reverse("account") + "#exports")


@login_required
@never_cache
@require_GET
def data_exports_status(request: HttpRequest) -> JsonResponse:
    """The user's latest exports, for the account page to follow."""
    return JsonResponse({"exports": [export_json(e) for e in _exports(_user(request))]})


@login_required
@never_cache
@require_GET
def data_export_download(request: HttpRequest, token: str) -> HttpResponse | FileResponse:
    """The archive, to its owner only, while the link is valid."""
    export = get_object_or_404(DataExport, token=token, user_id=_user(request).pk)
    path = export_download_path(export=export)
    if path is None:
        return render(
            request,
            "registration/export_gone.html",
            {"export": export_json(export)},
            status=410,
        )
    stamp = export.created_at.strftime("%Y-%m-%d")
    name = f"{_user(request).get_username()}-data-{stamp}.zip"
    return FileResponse(path.open("rb"), as_attachment=True, filename=name)


@login_required
@never_cache
@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def account_delete(request: HttpRequest) -> HttpResponse:
    """Delete one's own account after typing the password again."""
    user = _user(request)
    if request.method == "GET":
        return render(
            request, "registration/account_delete.html", {"form": AccountDeleteForm(user=user)}
        )
    form = AccountDeleteForm(request.POST, user=user)
    if not form.is_valid():
        return render(request, "registration/account_delete.html", {"form": form}, status=400)
    counts = user_delete(user=user, actor=user)
    logout(request)
    logger.info("An account deleted itself (%s conversations)", counts.get("conversations", 0))
    return render(request, "registration/account_deleted.html", {"counts": counts})
