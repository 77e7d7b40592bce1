"""Who may see the dashboard and act in it.

Every dashboard view needs an active staff account; acting needs a
permission as well (promoting, training, reviewing conversations). An
anonymous visitor is sent to the login page; a signed-in user without
the right gets a 403 page that says which right is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext, gettext_lazy

#: permission codename: what it lets staff do, for the refusal page.
PERMISSIONS = {
    "models_admin.promote_modelversion": gettext_lazy("promote, roll back and run canaries"),
    "models_admin.run_trainingjob": gettext_lazy("start and cancel training jobs"),
    "chat.review_conversation": gettext_lazy("read and curate users' conversations"),
    "models_admin.add_filterrule": gettext_lazy("create or import content filter rules"),
    "models_admin.change_filterrule": gettext_lazy("change or switch content filter rules"),
    "models_admin.delete_filterrule": gettext_lazy("delete content filter rules"),
    "chat.change_apikey": gettext_lazy("change API key limits or revoke keys"),
    "chat.add_widgetsite": gettext_lazy("create widget sites"),
    "chat.change_widgetsite": gettext_lazy("change widget sites or rotate their identity secret"),
    "chat.answer_visitors": gettext_lazy("take widget conversations and answer visitors"),
    "models_admin.manage_knowledge": gettext_lazy("manage knowledge bases and their sources"),
}


def _refuse(request: HttpRequest, reason: str) -> HttpResponse:
    if request.accepts("text/html"):
        return render(request, "dashboard/refused.html", {"reason": reason}, status=403)
    from django.http import JsonResponse

    return JsonResponse({"error": reason}, status=403)


def staff_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let active staff through; send others to log in or refuse them."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (user.is_active and user.is_staff):
            return _refuse(request, gettext("The dashboard is for staff accounts."))
        return view(request, *args, **kwargs)

    return wrapper


def permission_required(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Staff with ``permission`` only (superusers have every permission)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @staff_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if not request.user.has_perm(permission):
                what = PERMISSIONS.get(permission, permission)
                return _refuse(
                    request,
                    gettext("Your account may not %(what)s (needs %(permission)s).")
                    % {"what": what, "permission": permission},
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def user_is_staff(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def staff_member(request: HttpRequest) -> AbstractBaseUser:
    """The signed-in staff member of a view behind ``staff_required`` or
    ``permission_required`` (which refused everyone else)."""
    return cast(AbstractBaseUser, request.user)
