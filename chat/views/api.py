"""JSON endpoints of the chat page. Writes need the CSRF token (header
``X-CSRFToken``); every id goes through an access selector."""

from __future__ import annotations

from functools import wraps
from typing import Any, cast

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods

from chat.selectors import (
    chat_version_serialize,
    chat_versions_for_user,
    conversation_export,
    conversation_export_markdown,
    conversation_get_for_user,
    conversation_list_for_user,
    conversation_serialize,
    message_get_for_user,
    message_tokens,
    thread_load,
    thread_serialize,
)
from chat.services.conversations import (
    conversation_branch_select,
    conversation_create,
    conversation_delete,
    conversation_update,
)
from chat.services.messages import ChatError, feedback_set
from chat.views.body import BodyError, json_body
from models_admin.selectors.knowledge import knowledge_bases_for_chat

MAX_BODY_BYTES = 64_000
SETTINGS_FIELDS = (
    "title",
    "system_prompt",
    "temperature",
    "top_p",
    "max_tokens",
    "pinned",
    "model_version",
    "strategy",
    "beams",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "knowledge_base",
)


def _error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"code": code, "error": message, **extra}, status=status)


def json_endpoint(view: Any) -> Any:
    """Answer JSON: 401 when logged out, 404 for ids the user can't see,
    400 naming the field for invalid input."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return _error(401, "auth", gettext("Log in first."))
        try:
            return view(request, *args, **kwargs)
        except Http404 as exc:
            return _error(404, "not_found", str(exc) or "Not found.")
        except ChatError as exc:
            return JsonResponse(exc.as_dict(), status=429 if exc.code == "rate_limited" else 400)
        except ValidationError as exc:
            fields = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
            first = next(iter(fields.items()))
            return _error(400, "invalid", f"{first[0]}: {first[1][0]}".lstrip(": "), fields=fields)

    return wrapper


def _me(request: HttpRequest) -> AbstractBaseUser:
    """The logged-in user (``json_endpoint`` has refused anyone else)."""
    return cast(AbstractBaseUser, request.user)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json_body(request, max_bytes=MAX_BODY_BYTES)
    except BodyError as exc:
        code = {413: "too_big", 415: "bad_json"}.get(exc.status, "bad_json")
        raise ChatError(code, exc.message) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChatError("bad_json", gettext("The body is a JSON object."))
    return data


def _settings_from(data: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in SETTINGS_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if name in ("title", "system_prompt", "strategy"):
            if not isinstance(value, str):
                raise ValidationError({name: [gettext("Must be text.")]})
        elif name == "pinned":
            if not isinstance(value, bool):
                raise ValidationError({name: [gettext("Must be true or false.")]})
        elif name == "model_version":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValidationError(
                    {name: [gettext("Must be a version id, or null for production.")]}
                )
        elif name == "knowledge_base":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValidationError(
                    {name: [gettext("Must be a knowledge base id, or null for none.")]}
                )
        elif name in ("max_tokens", "beams", "top_k"):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value != int(value)
            ):
                raise ValidationError({name: [gettext("Must be a whole number.")]})
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValidationError({name: [gettext("Must be a number.")]})
            value = float(value)
        values[name] = value
    return values


@json_endpoint
@require_http_methods(["GET", "POST"])
def conversations(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        body = _body(request)
        temporary = body.get("temporary", False)
        if not isinstance(temporary, bool):
            raise ValidationError({"temporary": [gettext("Must be true or false.")]})
        conversation = conversation_create(
            user=_me(request), temporary=temporary, **_settings_from(body)
        )
        return JsonResponse(conversation_serialize(conversation), status=201)
    page = conversation_list_for_user(
        user=request.user, query=request.GET.get("q", "")[:200], page=request.GET.get("page", 1)
    )
    return JsonResponse(
        {
            "results": [conversation_serialize(c) for c in page.object_list],
            "page": page.number,
            "pages": page.paginator.num_pages,
            "has_next": page.has_next(),
        }
    )


@json_endpoint
@require_http_methods(["GET"])
def chat_versions(request: HttpRequest) -> HttpResponse:
    """The model versions the person may pick in the chat."""
    versions = chat_versions_for_user(user=request.user)
    bases = knowledge_bases_for_chat()
    return JsonResponse(
        {
            "versions": [chat_version_serialize(v) for v in versions],
            # The knowledge bases answers may be grounded in.
            "knowledge_bases": [
                {"id": base.pk, "name": base.name, "description": base.description}
                for base in bases
            ],
        }
    )


@json_endpoint
@require_http_methods(["GET", "PATCH", "DELETE"])
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    found = conversation_get_for_user(user=request.user, conversation_id=conversation_id)
    if request.method == "DELETE":
        conversation_delete(conversation=found)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        conversation_update(conversation=found, **_settings_from(_body(request)))
    thread = thread_load(conversation=found)
    return JsonResponse(thread_serialize(thread=thread, user_id=int(_me(request).pk)))


@json_endpoint
@require_http_methods(["POST"])
def conversation_branch(request: HttpRequest, conversation_id: int) -> HttpResponse:
    found = conversation_get_for_user(user=request.user, conversation_id=conversation_id)
    message = message_get_for_user(user=request.user, message_id=_body(request).get("message"))
    if message.conversation_id != found.pk:
        raise Http404(gettext("No such message."))
    conversation_branch_select(conversation=found, message=message)
    thread = thread_load(conversation=found)
    return JsonResponse(thread_serialize(thread=thread, user_id=int(_me(request).pk)))


@json_endpoint
@require_http_methods(["POST"])
def message_feedback(request: HttpRequest, message_id: int) -> HttpResponse:
    message = message_get_for_user(user=request.user, message_id=message_id)
    data = _body(request)
    feedback = feedback_set(
        user=_me(request), message=message, rating=data.get("rating"), reason=data.get("reason")
    )
    return JsonResponse(
        {
            "message": message.pk,
            "rating": feedback.rating if feedback else None,
            "reason": feedback.reason if feedback else "",
        }
    )


@json_endpoint
@require_http_methods(["GET"])
def message_tokens_view(request: HttpRequest, message_id: int) -> HttpResponse:
    """An answer's tokens with their probabilities and alternatives."""
    message = message_get_for_user(user=request.user, message_id=message_id)
    return JsonResponse({"message": message.pk, "tokens": message_tokens(message)})


@json_endpoint
@require_http_methods(["GET"])
def conversation_export_view(request: HttpRequest, conversation_id: int, fmt: str) -> HttpResponse:
    if fmt not in ("md", "json"):
        raise Http404(gettext("Exports are .md or .json."))
    found = conversation_get_for_user(user=request.user, conversation_id=conversation_id)
    thread = thread_load(conversation=found)
    filename = f"conversation-{found.pk}.{fmt}"
    if fmt == "json":
        response: HttpResponse = JsonResponse(
            conversation_export(thread=thread),
            json_dumps_params={"ensure_ascii": False, "indent": 2},
        )
    else:
        response = HttpResponse(
            conversation_export_markdown(thread=thread),
            content_type="text/markdown; charset=utf-8",
        )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
