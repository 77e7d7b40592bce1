from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import translation
from django.views.i18n import JavaScriptCatalog

from chat.languages import language_supported
from chat.selectors import conversation_get_for_user, thread_load, thread_serialize
from chat.views.speech import speech_config
from models_admin.selectors import model_version_get_production


def status(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/status.html", {"production": model_version_get_production()})


def landing(request: HttpRequest) -> HttpResponse:
    """What the site is, for a visitor who is not signed in, and which
    model answers."""
    production = model_version_get_production()
    return render(request, "landing.html", {"production": production.name if production else None})


def chat_page(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    """``/``: the landing page for a visitor, the chat for a signed-in user.
    A conversation's own page asks a visitor to log in."""
    if conversation_id is None and not request.user.is_authenticated:
        return landing(request)
    return _chat(request, conversation_id=conversation_id)


@login_required
def _chat(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    """The chat page, with the opened conversation's active path inlined so
    the first paint needs no second request."""
    initial = None
    if conversation_id is not None:
        conversation = conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
        initial = thread_serialize(
            thread=thread_load(conversation=conversation), user_id=int(request.user.pk or 0)
        )
    production = model_version_get_production()
    return render(
        request,
        "chat/chat.html",
        {
            "initial": initial,
            "chat_config": {
                "maxMessageChars": settings.CHAT_MAX_MESSAGE_CHARS,
                "production": production.name if production else None,
                "productName": settings.SITE_NAME,
                "temporaryHours": settings.TEMPORARY_CHAT_HOURS,
                "speech": speech_config(),
            },
        },
    )


class LanguageCatalog(JavaScriptCatalog):
    """``/jsi18n/<language>/``: the scripts' translations (``gettext`` and
    friends) of one language, named in the address so a page loads the
    catalogue of the language it was rendered in (the widget's may be its
    site's, not the browser's)."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        code = language_supported(kwargs.get("language"))
        if code is None or code != kwargs.get("language"):
            raise Http404("No such language.")
        with translation.override(code):
            return super().get(request, *args, **kwargs)
