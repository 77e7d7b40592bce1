"""The create and edit pages of a kind of object that a form edits and a
service saves (content filter rules, widget sites). The flow is the same
for every kind; the page group gives its parts.

Creating needs the add permission. Every staff member may look at an
object; without the change permission its form is read-only, and saving
it is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods

from models_admin.dashboard.forms.common import ServiceForm
from models_admin.dashboard.views.access import permission_required, staff_required

Obj = TypeVar("Obj", bound=Model)
Form = TypeVar("Form", bound=ServiceForm)
View = Callable[..., HttpResponse]


@dataclass(frozen=True)
class EditPages(Generic[Obj, Form]):
    #: The form, bound to posted data or given ``initial`` and ``read_only``.
    form: Callable[..., Form]
    #: The form's initial values for a stored object.
    initial: Callable[[Obj], dict[str, Any]]
    #: The object by primary key, or Http404.
    get: Callable[[int], Obj]
    #: Save a valid form through the service: a new object when given
    #: None. Raise ValidationError to refuse it.
    save: Callable[[HttpRequest, Form, Obj | None], Obj]
    #: The answer once saved (a message and a redirect); the flag says
    #: whether the object is new.
    saved: Callable[[HttpRequest, Obj, bool], HttpResponse]
    #: The page: the form, the stored object (None when new), the status.
    page: Callable[[HttpRequest, Form, Obj | None, int], HttpResponse]
    add_permission: str
    change_permission: str

    def _save(self, request: HttpRequest, stored: Obj | None) -> HttpResponse:
        """Save the posted form, or show it again with every error next to
        its field and every value as typed."""
        form = self.form(request.POST)
        if form.is_valid():
            try:
                saved = self.save(request, form, stored)
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                return self.saved(request, saved, stored is None)
        # The service may have set the typed values on the object before
        # refusing them; the page shows the stored object beside them.
        if stored is not None:
            stored.refresh_from_db()
        return self.page(request, form, stored, 400)

    def views(self) -> tuple[View, View]:
        """The create view and the edit view (with a ``pk``)."""

        @permission_required(self.add_permission)
        @require_http_methods(["GET", "POST"])
        def create(request: HttpRequest) -> HttpResponse:
            """An empty form (GET) or a new object (POST)."""
            if request.method == "POST":
                return self._save(request, None)
            return self.page(request, self.form(), None, 200)

        @permission_required(self.change_permission)
        def change(request: HttpRequest, pk: int) -> HttpResponse:
            return self._save(request, self.get(pk))

        @staff_required
        @require_http_methods(["GET", "POST"])
        def edit(request: HttpRequest, pk: int) -> HttpResponse:
            """Show an object (GET; read-only without the change
            permission) or save it (POST)."""
            if request.method == "POST":
                return change(request, pk)
            stored = self.get(pk)
            read_only = not request.user.has_perm(self.change_permission)
            form = self.form(initial=self.initial(stored), read_only=read_only)
            return self.page(request, form, stored, 200)

        return create, edit
