"""A cap on request bodies, applied before Django reads one.

Django reads the whole body before any middleware or view runs, so a size
check in a view comes after the upload. This ASGI middleware answers 413
as soon as the declared ``Content-Length`` or the bytes received so far
(chunked bodies declare none) pass the path's cap, before authentication
and before the body is parsed.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings


def body_limit_for(path: str) -> int:
    """Return the largest body, in bytes, that a request to path may send:
    the cap of its longest ``HTTP_BODY_LIMITS`` prefix, else
    ``HTTP_MAX_BODY_BYTES``."""
    best, limit = -1, int(settings.HTTP_MAX_BODY_BYTES)
    for prefix, cap in settings.HTTP_BODY_LIMITS.items():
        if path.startswith(prefix) and len(prefix) > best:
            best, limit = len(prefix), int(cap)
    return limit


def _declared_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large_body(limit: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Return the status, headers and body of the answer to a body past
    limit."""
    # In the OpenAI API's error shape, which the API's clients parse; a
    # page's script reads error.message alike.
    error = {
        "message": f"The request body is limited to {limit:,} bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return 413, headers, body


async def _too_large(send: Any, limit: int) -> None:
    status, headers, body = too_large_body(limit)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse HTTP requests whose body passes the path's cap with 413."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit_for(scope.get("path", ""))
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return None
        received = 0
        refused = False

        async def receive_limited() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _too_large(send, limit)
                    # Django stops reading and sends nothing on a disconnect.
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        return await self.app(scope, receive_limited, send_unless_refused)
