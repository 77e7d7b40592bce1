"""The widget's HTTP side: the configuration ``embed.js`` reads (CORS for
allowed origins only) and the page inside the iframe (framable only by
the site's allowed origins)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext, gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET

from chat.languages import widget_language
from chat.models import WidgetSite
from chat.services.widget_sites import avatar_origin, origin_allowed, site_get_by_key, site_online
from chat.views.speech import speech_config


def _site_and_origin(key: Any, origin: Any) -> tuple[WidgetSite | None, int, str]:
    site = site_get_by_key(key=key)
    if site is None:
        return None, 404, gettext("Unknown widget key %(key)r.") % {"key": key}
    if not origin_allowed(site=site, origin=origin):
        return (
            site,
            403,
            gettext(
                "This widget may not be embedded on %(origin)s; add the origin to "
                "the site's allowed origins in the dashboard."
            )
            % {"origin": origin or gettext("this page")},
        )
    return site, 200, ""


#: The loader's words on the host page (``embed.js``), which has no
#: catalogue of its own; ``{title}`` and ``{count}`` are filled in there.
_EMBED_LABELS = {
    "open": gettext_lazy("Open chat: {title}"),
    "close": gettext_lazy("Close chat"),
    "unread": gettext_lazy("{count} unread"),
    "chat": gettext_lazy("Chat"),
}


@never_cache
@require_GET
def widget_config(request: HttpRequest) -> JsonResponse:
    key = request.GET.get("key")
    origin = request.headers.get("Origin")
    site, status, error = _site_and_origin(key, origin)
    if site is None or status != 200:
        # No CORS header: the embedding page cannot read this, and its
        # script reports the failure in the console.
        response = JsonResponse({"error": error}, status=status)
        response["Vary"] = "Origin"
        return response
    frame = request.build_absolute_uri(reverse("widget-frame")) + f"?key={site.public_key}"
    with translation.override(widget_language(site=site, browser=translation.get_language())):
        labels = {name: str(text) for name, text in _EMBED_LABELS.items()}
    response = JsonResponse(
        {
            "key": site.public_key,
            "title": site.title,
            "color": site.color,
            "position": site.position,
            "avatar_url": site.avatar_url if avatar_origin(site.avatar_url) else "",
            "frame_url": frame,
            "labels": labels,
        }
    )
    response["Access-Control-Allow-Origin"] = origin or ""
    response["Vary"] = "Origin"
    return response


@never_cache
@require_GET
@xframe_options_exempt
def widget_frame(request: HttpRequest) -> HttpResponse:
    key = request.GET.get("key")
    origin = request.GET.get("origin")
    site, status, error = _site_and_origin(key, origin)
    if site is None or status != 200:
        response = render(request, "widget/refused.html", {"error": error}, status=status)
        response["Content-Security-Policy"] = "frame-ancestors 'none'"
        return response
    # A site saved before avatar URLs were checked may hold one that is
    # unfit for the policy; it is then not shown at all.
    avatar = avatar_origin(site.avatar_url)
    config = {
        "key": site.public_key,
        "title": site.title,
        "greeting": site.greeting,
        "suggestions": site.suggestion_list(),
        "color": site.color,
        "position": site.position,
        "avatar_url": site.avatar_url if avatar else "",
        "handoff_enabled": site.handoff_enabled,
        "online": site_online(site=site),
        "offline_message": site.offline_message,
        "host_origin": origin,
        "ws_path": "/ws/widget/",
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "speech": speech_config(),
    }
    language = widget_language(site=site, browser=translation.get_language())
    with translation.override(language):
        response = render(request, "widget/frame.html", {"site": site, "config": config})
    response["Content-Language"] = language
    # Only the site's own pages may frame this one; its avatar may come
    # from its own host (the rest of the policy is the site-wide one).
    policy = "frame-ancestors " + " ".join(site.origin_list())
    if avatar:
        policy += f"; img-src 'self' data: {avatar}"
    response["Content-Security-Policy"] = policy
    return response
