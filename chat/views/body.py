"""Reading a JSON request body, for every view that takes one.

A body that is too big, not JSON, multipart (already consumed by the
CSRF check, so unreadable as raw bytes), or holds text no database can
store (NUL characters, lone surrogates) is refused with a message saying
which, never a server error.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from django.http.request import RawPostDataException
from django.utils.formats import number_format
from django.utils.translation import gettext


class BodyError(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _text_check(data: Any) -> None:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BodyError(gettext("Text may not contain NUL characters."))
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BodyError(
                    gettext("Text must be valid Unicode (no lone surrogates).")
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def json_body(request: HttpRequest, *, max_bytes: int) -> Any:
    """Return the parsed JSON body (None when empty) or raise BodyError."""
    try:
        raw = request.body
    except RawPostDataException:
        raise BodyError(
            gettext("Send the body as JSON (Content-Type: application/json)."), status=415
        ) from None
    if len(raw) > max_bytes:
        raise BodyError(
            gettext("The request body is limited to %(bytes)s bytes.")
            % {"bytes": number_format(max_bytes, force_grouping=True)},
            status=413,
        )
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BodyError(gettext("The body is not valid JSON.")) from None
    _text_check(data)
    return data
