"""The ASGI body cap on its own, as any ASGI server would drive it: a
chunked body is refused once the bytes received pass the path's cap, and
the application, which reads a disconnect, sends nothing of its own."""

from __future__ import annotations

import json

import pytest

from chatsite.bodies import BodyLimitMiddleware, body_limit_for


@pytest.mark.asyncio
async def test_a_body_without_a_length_is_cut_off_at_the_cap_with_413(settings):
    settings.HTTP_MAX_BODY_BYTES = 10_000
    settings.HTTP_BODY_LIMITS = {"/dashboard/training/": 50_000}
    chunks = [{"type": "http.request", "body": b"x" * 4000, "more_body": True}] * 10
    sent: list[dict] = []
    seen: list[dict] = []

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect":
                return
        await send({"type": "http.response.start", "status": 200, "headers": []})

    scope = {"type": "http", "path": "/v1/chat/completions", "headers": []}
    await BodyLimitMiddleware(app)(scope, receive, send)

    assert sent[0]["status"] == 413
    error = json.loads(sent[1]["body"])["error"]
    assert error["message"] == "The request body is limited to 10,000 bytes."
    assert error["code"] == "request_too_large"
    assert len(sent) == 2
    assert seen[-1]["type"] == "http.disconnect"
    assert sum(len(m.get("body", b"")) for m in seen) <= 10_000
    assert body_limit_for("/dashboard/training/datasets/upload/") == 50_000
    assert body_limit_for("/dashboard/") == 10_000
