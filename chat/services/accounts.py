"""Account writes: creating users, bounding signups per address and lifting
login lockouts."""

from __future__ import annotations

import logging

import redis
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy

from chat.backends import username_key
from inference.connection import key, redis_client

logger = logging.getLogger(__name__)

EMAIL_TAKEN_MESSAGE = gettext_lazy("An account with this email address already exists.")
SIGNUP_WINDOW_S = 3600


def signup_key(address: str) -> str:
    return key("signups", address)


def signup_slot_take(*, address: str | None) -> bool:
    """Count one signup from address; return False, counting nothing, when
    the address made ``SIGNUPS_PER_ADDRESS_PER_HOUR`` in the hour since its
    first counted one."""
    if not address:
        return True
    counter = signup_key(address)
    client = redis_client()
    try:
        pipe = client.pipeline(transaction=True)
        # The window starts with the first signup; INCR keeps its expiry.
        pipe.set(counter, 0, ex=SIGNUP_WINDOW_S, nx=True)
        pipe.incr(counter)
        _, count = pipe.execute()
        if count > settings.SIGNUPS_PER_ADDRESS_PER_HOUR:
            client.decr(counter)
            return False
    except (redis.ConnectionError, redis.TimeoutError):
        # Signing up needs the database, not Redis: let it through.
        logger.warning("Signup count unavailable for %s", address, exc_info=True)
    return True


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create an active, unprivileged user with a usable password.

    Normalize the username (NFKC) and the domain of the email, then apply the
    model validators and ``AUTH_PASSWORD_VALIDATORS``. Refuse a username, or
    a non-empty email, that matches an existing one when case is ignored.
    Raise ``ValidationError`` keyed by ``username``, ``email`` or
    ``password``, with every problem found.
    """
    user = User(
        username=User.normalize_username(username),
        email=User.objects.normalize_email(email),
    )
    user.set_password(password)
    errors: dict[str, list[ValidationError]] = {}
    try:
        user.full_clean()
    except ValidationError as exc:
        errors.update(exc.error_dict)
    # The model only enforces exact uniqueness; "Alice" and "alice" would be
    # two accounts that people (and password resets by email) confuse.
    if "username" not in errors and User.objects.filter(username__iexact=user.username).exists():
        errors["username"] = [user.unique_error_message(User, ("username",))]
    if (
        user.email
        and "email" not in errors
        and User.objects.filter(email__iexact=user.email).exists()
    ):
        errors["email"] = [ValidationError(EMAIL_TAKEN_MESSAGE, code="email_taken")]
    try:
        password_validation.validate_password(password, user=user)
    except ValidationError as exc:
        errors["password"] = exc.error_list
    if errors:
        raise ValidationError(errors)
    user.save()
    return user


def user_login_failures_clear(*, user: User) -> None:
    """Forget the failed logins recorded for user's username from every
    address, lifting any lockout on it."""
    axes_reset(username=username_key(user.get_username()))
