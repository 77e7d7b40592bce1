"""The language of a signed-in user's requests: their own choice, applied
after ``LocaleMiddleware`` picked the cookie's or the browser's."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils import translation

from chat.services.languages import session_language


def user_language_middleware(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """Activate the signed-in user's language for the request, if they
    chose one (a sync middleware: it may read the session's store)."""

    def middleware(request: HttpRequest) -> HttpResponseBase:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            code = session_language(user_id=user.pk, session=request.session)
            if code:
                translation.activate(code)
                request.LANGUAGE_CODE = code
        return get_response(request)

    return middleware
