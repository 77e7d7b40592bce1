"""Account writes: creating users and lifting login lockouts."""

from __future__ import annotations

from axes.utils import reset as axes_reset
from django.contrib.auth import password_validation
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from chat.backends import username_key

EMAIL_TAKEN_MESSAGE = "An account with this email address already exists."


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
