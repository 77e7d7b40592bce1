"""Account pages that Django's auth views do not cover: signup, a reset
confirmation that also lifts a login lockout, and the choice of language."""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import SetPasswordForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django.views.i18n import set_language

from chat.forms import SignupForm
from chat.services.accounts import signup_slot_take, user_create, user_login_failures_clear
from chat.services.languages import user_language_set

SIGNUP_LIMIT_MESSAGE = _(
    "Too many accounts were created from your address in the last hour; try again later."
)

# Two backends are configured (django-axes first), so login() must be told
# which one vouched for the user; the session keeps it.
_LOGIN_BACKEND = "chat.backends.CaseInsensitiveModelBackend"


def _next_url_safe(request: HttpRequest) -> str:
    """Return the ``next`` parameter when it stays on this site, else ""."""
    url = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


@sensitive_post_parameters("password1", "password2")
@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Show the signup form; on a valid POST create the account, log it in
    and redirect to a safe ``next`` or the chat page."""
    next_url = _next_url_safe(request)
    if request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST if request.method == "POST" else None)
    if form.is_valid() and not signup_slot_take(address=request.META.get("REMOTE_ADDR")):
        form.add_error(None, SIGNUP_LIMIT_MESSAGE)
        return render(
            request, "registration/signup.html", {"form": form, "next": next_url}, status=429
        )
    if form.is_valid():
        try:
            user = user_create(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                email=form.cleaned_data["email"],
            )
        except ValidationError as exc:
            # The form has checked the same rules; only a signup racing this
            # one for the same name gets here, so a summary on top is enough.
            form.add_error(None, exc.messages)
        else:
            login(request, user, backend=_LOGIN_BACKEND)
            return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Set a new password from an emailed link, then lift any login lockout
    on the account: the locked-out page offers a reset as the way back in."""

    def form_valid(self, form: SetPasswordForm) -> HttpResponse:
        response = super().form_valid(form)
        user_login_failures_clear(user=form.user)
        return response


@require_POST
def language_set(request: HttpRequest) -> HttpResponse:
    """Switch the language (``language``, a code of ``LANGUAGES``; empty
    follows the browser) and go back to ``next``: Django's ``set_language``
    keeps it in the cookie, and a signed-in user's account keeps it too."""
    code = request.POST.get("language", "")
    response: HttpResponse
    if not code:
        # set_language ignores an empty code; following the browser again
        # means forgetting the cookie's.
        response = redirect(_next_url_safe(request) or request.META.get("HTTP_REFERER") or "/")
        response.delete_cookie(settings.LANGUAGE_COOKIE_NAME)
    else:
        response = set_language(request)
    if request.user.is_authenticated:
        # An unknown code changes nothing, as set_language does.
        with contextlib.suppress(ValidationError):
            user_language_set(user=request.user, language=code, session=request.session)
    return response
