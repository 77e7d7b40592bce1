"""Receivers that tell open sockets their session or password changed, and
that put a user's language into the session they log in with."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db.models.signals import post_save
from django.http import HttpRequest

from chat.services.languages import SESSION_KEY as LANGUAGE_SESSION_KEY
from chat.services.languages import user_language_get
from chat.services.sessions import session_ended_notify, sessions_recheck_notify


def logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None or request is None:
        return
    session_ended_notify(user_id=user.pk, session_key=request.session.session_key)


def logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session"):
        return
    request.session[LANGUAGE_SESSION_KEY] = user_language_get(user_id=user.pk) or ""


def user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    # set_password() keeps the raw password in _password until save()
    # returns, so post_save sees whether this save changed it.
    if not created and getattr(instance, "_password", None) is not None:
        sessions_recheck_notify(user_id=instance.pk)


def receivers_connect() -> None:
    """Connect the receivers (from the app's ready())."""
    user_logged_out.connect(logged_out, dispatch_uid="chat.sockets.logged_out")
    user_logged_in.connect(logged_in, dispatch_uid="chat.languages.logged_in")
    post_save.connect(user_saved, sender=get_user_model(), dispatch_uid="chat.sockets.user_saved")
