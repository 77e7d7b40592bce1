"""Answers of the dashboard's views other than pages: JSON errors, JSON
request bodies, server-sent events, and the way back after a form."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext

from chat.views.body import BodyError, json_body


def json_error(message: str, status: int = 400, **extra: Any) -> JsonResponse:
    """``{"error": message, ...extra}`` with the status."""
    return JsonResponse({"error": message, **extra}, status=status)


def json_object_body(request: HttpRequest, *, max_bytes: int) -> dict[str, Any] | JsonResponse:
    """The request's JSON object, or the error to answer: a body too
    large or not JSON, or JSON that is not an object."""
    try:
        body = json_body(request, max_bytes=max_bytes)
    except BodyError as exc:
        return json_error(exc.message, status=exc.status)
    if not isinstance(body, dict):
        return json_error(gettext("The body must be a JSON object."))
    return body


def sse_event(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as compact JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def next_url(request: HttpRequest, default: str) -> str:
    """Where a form sends the browser afterwards: its ``next`` field (or
    query parameter) when it names a page of this site, else
    ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default
