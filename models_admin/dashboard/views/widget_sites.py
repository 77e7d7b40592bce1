"""The widget sites area of the dashboard: every site that embeds the chat
widget with what happens on it, a site's settings (look, greeting,
assistant, business hours, handoff), the snippet that embeds it and the
identity secret that verifies signed-in visitors.

Looking is for staff; creating needs ``chat.add_widgetsite``, changing
a site and rotating its secret ``chat.change_widgetsite``. The identity
secret is shown only to staff who may change the site: with it anyone
could pass as any of the host site's users.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from chat.models import WidgetSite
from chat.services.widget_identity import identity_signature
from chat.services.widget_sites import site_online, widget_site_save, widget_site_secret_rotate
from models_admin.dashboard.forms.widget import WidgetSiteForm
from models_admin.dashboard.selectors.inbox import (
    widget_site_counts,
    widget_site_get,
    widget_sites_overview,
)
from models_admin.dashboard.views.access import permission_required, staff_required
from models_admin.dashboard.views.editing import EditPages

logger = logging.getLogger(__name__)

ADD = "chat.add_widgetsite"
CHANGE = "chat.change_widgetsite"
ANSWER = "chat.answer_visitors"
#: The user id the signing example signs, so staff can check their code.
EXAMPLE_USER_ID = "42"


def _rights(request: HttpRequest) -> dict[str, bool]:
    user = request.user
    return {
        "can_add": user.has_perm(ADD),
        "can_change": user.has_perm(CHANGE),
        "can_answer": user.has_perm(ANSWER),
    }


def embed_snippet(request: HttpRequest, *, site: WidgetSite) -> str:
    """The tag a host page adds to show the site's widget."""
    # The file's plain name, not the hashed one ``static()`` gives with a
    # manifest storage: host pages keep the tag across deploys, and the
    # plain name is served with a short cache lifetime.
    src = request.build_absolute_uri(f"{settings.STATIC_URL}widget/embed.js")
    return f'<script src="{src}" data-site="{site.public_key}" async></script>'


def _preview_url(site: WidgetSite) -> str | None:
    """The widget page as a visitor on the site's first exact origin sees
    it, or None when no origin is exact (a ``*.`` entry names no page)."""
    origin = next((o for o in site.origin_list() if "*" not in o), None)
    if origin is None or not site.enabled:
        return None
    return reverse("widget-frame") + "?" + urlencode({"key": site.public_key, "origin": origin})


def _site_page(
    request: HttpRequest, form: WidgetSiteForm, site: WidgetSite | None, status: int = 200
) -> HttpResponse:
    rights = _rights(request)
    context: dict[str, Any] = {"section": "widget", "form": form, "site": site, **rights}
    if site is not None:
        context.update(
            counts=widget_site_counts(site=site),
            online=site_online(site=site),
            snippet=embed_snippet(request, site=site),
            preview_url=_preview_url(site),
        )
        if rights["can_change"]:
            context.update(
                example_user_id=EXAMPLE_USER_ID,
                example_signature=identity_signature(site=site, user_id=EXAMPLE_USER_ID),
            )
    return render(request, "dashboard/widget/form.html", context, status=status)


def _site_saved(request: HttpRequest, site: WidgetSite, created: bool) -> HttpResponse:
    logger.info("%s saved widget site %s (%s)", request.user, site.pk, site.name)
    if created:
        messages.success(
            request,
            gettext("Site “%(name)s” created. Embed it with the snippet.") % {"name": site.name},
        )
    else:
        messages.success(request, gettext("Site “%(name)s” saved.") % {"name": site.name})
    return redirect("dashboard:widget-site", pk=site.pk)


@staff_required
@require_GET
def widget_site_list(request: HttpRequest) -> HttpResponse:
    """Every site with its key, origins and what happens on it."""
    return render(
        request,
        "dashboard/widget/list.html",
        {"section": "widget", "sites": list(widget_sites_overview()), **_rights(request)},
    )


widget_site_new, widget_site_edit = EditPages(
    form=WidgetSiteForm,
    initial=WidgetSiteForm.initial_for,
    get=lambda pk: widget_site_get(pk=pk),
    save=lambda request, form, site: widget_site_save(data=form.site_data(), site=site),
    saved=_site_saved,
    page=_site_page,
    add_permission=ADD,
    change_permission=CHANGE,
).views()


@permission_required(CHANGE)
@require_POST
def widget_site_rotate(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Give the site a new identity secret; signatures made with the old
    one stop identifying visitors at once."""
    site = widget_site_secret_rotate(site=widget_site_get(pk=pk))
    logger.info("%s rotated the identity secret of widget site %s", request.user, site.pk)
    messages.success(
        request,
        gettext(
            "New identity secret for “%(name)s”. Update the host site's server: "
            "signatures made with the old secret no longer identify anyone."
        )
        % {"name": site.name},
    )
    return redirect("dashboard:widget-site", pk=site.pk)


urlpatterns = [
    path("", widget_site_list, name="widget-sites"),
    path("new/", widget_site_new, name="widget-site-new"),
    path("<int:pk>/", widget_site_edit, name="widget-site"),
    path("<int:pk>/rotate/", widget_site_rotate, name="widget-site-rotate"),
]
