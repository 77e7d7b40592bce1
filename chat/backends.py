"""Authentication: usernames are unique regardless of case (signup refuses
"alice" beside "Alice"), so logging in ignores case too."""

from __future__ import annotations

import unicodedata
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest


class CaseInsensitiveModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        user_model = get_user_model()
        if username is None:
            username = kwargs.get(user_model.USERNAME_FIELD)
        if username is None or password is None:
            return None
        matches = list(
            user_model._default_manager.filter(
                **{f"{user_model.USERNAME_FIELD}__iexact": username}
            )[:2]
        )
        # An exact match wins where older accounts differ only by case.
        exact = [u for u in matches if u.get_username() == username]
        user = exact[0] if exact else (matches[0] if len(matches) == 1 else None)
        if user is None:
            # Hash anyway, so a missing user takes as long as a wrong password.
            user_model().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None


def username_key(username: str) -> str:
    """Return the form of a username that login treats as the same one:
    NFKC-normalized, as the forms store it, and lower-cased."""
    return unicodedata.normalize("NFKC", username).lower()


def login_username_key(request: HttpRequest | None, credentials: dict[str, Any] | None) -> str:
    """Return the username django-axes counts failures under
    (``AXES_USERNAME_CALLABLE``): every spelling that logs into one account
    shares one count, and one's success lifts the lock of all."""
    # django-axes fills in its defaults when it loads.
    field = getattr(settings, "AXES_USERNAME_FORM_FIELD", "username")
    if credentials:
        raw = credentials.get(field)
    elif request is not None:
        raw = getattr(request, "data", request.POST).get(field)
    else:
        raw = None
    return username_key(raw) if isinstance(raw, str) else ""
