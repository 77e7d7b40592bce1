"""Reading text aloud on the server (espeak-ng), for pages whose browser
has no voice for the language: ``POST /speech/say/`` for a signed-in user
and ``POST /widget/speech/say/`` for a widget visitor (site key and
visitor token in the body). Both answer a WAV file, or a JSON error."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat.services import widget_identity
from chat.services.widget_sites import site_get_by_key
from chat.views.body import BodyError, json_body
from inference.client import REDIS_DOWN
from inference.connection import key as redis_key
from inference.connection import redis_client
from inference.speech.client import speech_status
from inference.speech.synthesis import SynthesisError, synthesizer


def speech_config() -> dict[str, Any]:
    """What a page's voice controls need: whether dictation works (and
    why not), its length limit, whether the server reads aloud."""
    languages: list[str] = []
    try:
        status = speech_status()
        available, reason = status.available, status.reason
        languages = list(status.languages)
    except REDIS_DOWN:
        available, reason = False, gettext("Dictation is unavailable for a moment.")
    return {
        "dictation": available,
        "reason": reason,
        # What the recogniser understands (empty: many languages).
        "languages": languages,
        "maxSeconds": settings.SPEECH_MAX_SECONDS,
        "synthesis": settings.SPEECH_SYNTHESIS_ENABLED,
    }


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _within_rate(who: str) -> bool:
    """At most SPEECH_SYNTHESIS_PER_MINUTE requests a minute per reader."""
    window = int(time.time() // 60)
    counter = redis_key("speech", "say", who, str(window))
    try:
        client: Any = redis_client()
        pipe = client.pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count, _ = pipe.execute()
    except REDIS_DOWN:
        return True
    return int(count) <= settings.SPEECH_SYNTHESIS_PER_MINUTE


def _say(request: HttpRequest, data: Any, who: str) -> HttpResponse:
    text = data.get("text") if isinstance(data, dict) else None
    language = data.get("language") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _error(gettext('Send the text to read as {"text": ...}.'), 400)
    limit = settings.SPEECH_SYNTHESIS_MAX_CHARS
    if len(text) > limit:
        return _error(
            gettext("At most %(limit)s characters are read at once.") % {"limit": f"{limit:,}"},
            413,
        )
    if not isinstance(language, str) or len(language) > 16:
        language = request.LANGUAGE_CODE if hasattr(request, "LANGUAGE_CODE") else "en"
    if not _within_rate(who):
        return _error(gettext("Too many requests to read aloud; wait a minute."), 429)
    try:
        audio = synthesizer().wav(text, language)
    except SynthesisError as exc:
        return _error(gettext("Reading aloud is unavailable: %(reason)s") % {"reason": exc}, 503)
    response = HttpResponse(audio, content_type="audio/wav")
    response["Content-Length"] = str(len(audio))
    return response


def _body(request: HttpRequest) -> Any:
    return json_body(request, max_bytes=settings.SPEECH_SYNTHESIS_MAX_CHARS * 8 + 1024)


@never_cache
@require_POST
def speech_say(request: HttpRequest) -> HttpResponse:
    if not settings.SPEECH_SYNTHESIS_ENABLED:
        return _error(gettext("Reading aloud on the server is turned off."), 404)
    if not request.user.is_authenticated:
        return _error(gettext("Log in first."), 401)
    try:
        data = _body(request)
    except BodyError as exc:
        return _error(exc.message, exc.status)
    return _say(request, data, f"user:{request.user.pk}")


@never_cache
@csrf_exempt
@require_POST
def widget_speech_say(request: HttpRequest) -> HttpResponse:
    """For the widget frame: no session, so no CSRF token; the visitor's
    signed token stands for it."""
    if not settings.SPEECH_SYNTHESIS_ENABLED:
        return _error(gettext("Reading aloud on the server is turned off."), 404)
    try:
        data = _body(request)
    except BodyError as exc:
        return _error(exc.message, exc.status)
    if not isinstance(data, dict):
        return _error(gettext('Send the text to read as {"text": ...}.'), 400)
    site = site_get_by_key(key=data.get("key"))
    visitor = (
        widget_identity.visitor_token_named(site=site, token=data.get("token"))
        if site is not None
        else None
    )
    if site is None or visitor is None:
        return _error(gettext("Open the chat first."), 403)
    return _say(request, data, f"widget:{site.pk}:{visitor}")
