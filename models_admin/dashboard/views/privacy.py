"""The privacy page: the retention policy with the last and next runs, the
training default, and for superusers the privacy log (who exported or
deleted whose data) and deleting an account on a person's request."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from chat.models import Conversation, PrivacyEvent
from chat.services.privacy import user_delete
from chat.services.retention import retention_last_run, retention_next_run, retention_policies
from models_admin.dashboard.paging import page_get
from models_admin.dashboard.views.access import staff_member, staff_required

#: Privacy log rows per page.
LOG_PAGE = 50


def _policy_rows() -> list[dict[str, Any]]:
    rows = []
    for policy in retention_policies():
        conversations = Conversation.objects.filter(source=policy.source)
        rows.append(
            {
                "policy": policy,
                "conversations": conversations.filter(anonymised_at__isnull=True).count(),
                "anonymised": conversations.filter(anonymised_at__isnull=False).count(),
            }
        )
    return rows


@staff_required
@require_GET
def privacy(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {
        "section": "privacy",
        "policies": _policy_rows(),
        "next_run": retention_next_run(),
        "last_run": retention_last_run(),
        "settings": {
            "training_default": settings.TRAINING_OPT_IN_DEFAULT,
            "export_hours": settings.DATA_EXPORT_HOURS,
            "audit_days": settings.RETENTION_AUDIT_DAYS,
            "filter_hit_days": settings.RETENTION_FILTER_HITS_DAYS,
            "temporary_hours": settings.TEMPORARY_CHAT_HOURS,
            "pii_at_rest": settings.PII_MASK_AT_REST,
            "hour": settings.RETENTION_HOUR,
            "time_zone": settings.TIME_ZONE,
        },
    }
    if request.user.is_superuser:
        context["page"] = page_get(
            PrivacyEvent.objects.all(), per_page=LOG_PAGE, number=request.GET.get("page")
        )
    return render(request, "dashboard/privacy.html", context)


@staff_required
@require_POST
def privacy_user_delete(request: HttpRequest) -> HttpResponse:
    """A superuser deletes an account on its person's request, with a reason."""
    if not request.user.is_superuser:
        messages.error(request, gettext("Only superusers may delete accounts."))
        return redirect("dashboard:privacy")
    username = request.POST.get("username", "").strip()
    reason = request.POST.get("reason", "").strip()[:400]
    confirm = request.POST.get("confirm", "").strip()
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        messages.error(
            request, gettext("No account is named “%(username)s”.") % {"username": username}
        )
    elif confirm != username:
        messages.error(
            request, gettext("Type the account's name again to confirm; nothing was deleted.")
        )
    elif not reason:
        messages.error(request, gettext("Say why (the request's reference); nothing was deleted."))
    elif user.pk == request.user.pk:
        messages.error(request, gettext("Delete your own account from your account page."))
    else:
        counts = user_delete(user=user, actor=staff_member(request), reason=reason)
        messages.success(
            request,
            gettext(
                "Deleted “%(username)s” with %(conversations)s "
                "conversation(s); the privacy log records it."
            )
            % {"username": username, "conversations": counts["conversations"]},
        )
    return redirect("dashboard:privacy")


urlpatterns = [
    path("", privacy, name="privacy"),
    path("delete-account/", privacy_user_delete, name="privacy-user-delete"),
]
