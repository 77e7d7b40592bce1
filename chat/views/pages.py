from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat.selectors import conversation_get_for_user, thread_load, thread_serialize
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
            },
        },
    )
