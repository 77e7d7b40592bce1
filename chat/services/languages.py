"""A user's own language: stored with the account, kept in the session so
pages need no query, and checked against ``LANGUAGES``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils.translation import gettext

from chat.languages import language_supported
from chat.models import LanguageChoice

#: The session's copy of the user's choice ("" for none), set at login.
SESSION_KEY = "_language"


def user_language_get(*, user_id: int) -> str | None:
    """Return the user's stored language, or None where they chose none."""
    code = (
        LanguageChoice.objects.filter(user_id=user_id).values_list("language", flat=True).first()
    )
    return language_supported(code)


def user_language_set(*, user: AbstractBaseUser, language: str, session: Any = None) -> str:
    """Store the user's language (a code of ``LANGUAGES``, or "" to follow
    the browser) and the session's copy; return the stored code."""
    code = language_supported(language) if language else ""
    if code is None:
        raise ValidationError(gettext("Unknown language."), code="language")
    if code:
        LanguageChoice.objects.update_or_create(user_id=user.pk, defaults={"language": code})
    else:
        LanguageChoice.objects.filter(user_id=user.pk).delete()
    if session is not None:
        session[SESSION_KEY] = code
    return code


def session_language(*, user_id: int, session: Any) -> str | None:
    """Return the signed-in user's language from the session, reading it
    from the database into the session on the session's first request."""
    code = session.get(SESSION_KEY)
    if code is None:
        code = user_language_get(user_id=user_id) or ""
        session[SESSION_KEY] = code
    return language_supported(code) if code else None
