"""Authentication: usernames are unique regardless of case (signup refuses
"alice" beside "Alice"), so logging in ignores case too."""

from __future__ import annotations

from typing import Any

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
