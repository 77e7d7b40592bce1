"""Account forms: Django's auth forms with the attributes the pages need.

The forms validate input only; ``chat.services.accounts`` writes.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils.translation import gettext, gettext_lazy

from chat.services.accounts import EMAIL_TAKEN_MESSAGE


def _test_ids_set(form: forms.BaseForm, prefix: str) -> None:
    """Give every input a ``data-testid`` of ``<prefix>-<field-name>``.

    Browser tests find inputs by these ids, which stay put when labels or
    layout change.
    """
    for name, field in form.fields.items():
        field.widget.attrs["data-testid"] = f"{prefix}-{name.replace('_', '-')}"


class LoginForm(auth_forms.AuthenticationForm):
    """Log in with username and password."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _test_ids_set(self, "login")


class SignupForm(auth_forms.UserCreationForm):
    """Check a new account: username, optional email, password twice.

    Refuse a username or an email that an existing account already has when
    case is ignored; apply the password validators.
    """

    class Meta(auth_forms.UserCreationForm.Meta):
        fields = ("username", "email")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        email = self.fields["email"]
        email.label = gettext("Email (optional)")
        email.help_text = gettext("Only used to reset a forgotten password.")
        email.widget.attrs["autocomplete"] = "email"
        _test_ids_set(self, "signup")

    def clean_email(self) -> str:
        email: str = self.cleaned_data.get("email") or ""
        if email and User.objects.filter(email__iexact=email).exists():
            raise ValidationError(EMAIL_TAKEN_MESSAGE, code="email_taken")
        return email


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """Change the password of a logged-in user, who types the old one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _test_ids_set(self, "password-change")


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Ask for a password reset link by email."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].widget.attrs["autofocus"] = True
        _test_ids_set(self, "password-reset")


class SetPasswordForm(auth_forms.SetPasswordForm):
    """Choose a new password from a reset link."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["new_password1"].widget.attrs["autofocus"] = True
        _test_ids_set(self, "password-reset-confirm")


class ApiKeyCreateForm(forms.Form):
    """Name a new API key; ``api_key_create`` makes it."""

    name = forms.CharField(
        max_length=100,
        label=gettext_lazy("Name"),
        help_text=gettext_lazy("What uses the key, e.g. “laptop script” or “staging app”."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "my-app"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _test_ids_set(self, "api-key")


class TrainingChoiceForm(forms.Form):
    """Whether the user's chats may be used to train models."""

    train_on_chats = forms.BooleanField(
        required=False,
        label=gettext_lazy("Let my chats help train models"),
        help_text=(
            gettext_lazy(
                "Off: your conversations, ratings and answers you regenerate are left out of "
                "every training dataset made from now on."
            )
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _test_ids_set(self, "privacy")


class AccountDeleteForm(forms.Form):
    """Delete one's own account: the password again, and a tick."""

    password = forms.CharField(
        label=gettext_lazy("Your password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    confirm = forms.BooleanField(
        label=gettext_lazy(
            "I understand that my account and all my conversations are deleted for good."
        ),
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        _test_ids_set(self, "delete")

    def clean_password(self) -> str:
        password: str = self.cleaned_data.get("password") or ""
        if not self.user.check_password(password):
            raise ValidationError(gettext("That is not your password."), code="password_incorrect")
        return password
