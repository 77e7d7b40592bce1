"""The Content-Security-Policy of every HTML response.

Django's SecurityMiddleware sets the other security headers (nosniff,
Referrer-Policy, HSTS, Cross-Origin-Opener-Policy); this adds the policy.
Pages load scripts, styles, pictures and fonts from this site only and talk
to it alone (fetch and WebSockets); no inline script or style attribute
runs, no plugin loads, and no other site may frame them. Pictures in
answers are never fetched: the Markdown renderer turns them into links.

A view may send a policy of its own. The directives it names are kept as
the view wrote them and the default adds the others: the widget frame names
the sites that may frame it and still gets the rest of the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

HEADER = "Content-Security-Policy"

#: The policy of a page that sets none, directive by directive.
DEFAULT_POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    # Answers read aloud by the server play from blob: URLs.
    "media-src": ("'self'", "blob:"),
    "object-src": ("'none'",),
    "base-uri": ("'none'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}

# Documents a browser renders with scripts; JSON, scripts, styles and
# event streams need no policy.
_DOCUMENT_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")


def csp_parse(value: str) -> dict[str, list[str]]:
    """Return a policy's directives by lower-cased name, in header order.

    Keep the first of a repeated directive, as browsers do.
    """
    policy: dict[str, list[str]] = {}
    for part in value.split(";"):
        tokens = part.split()
        if tokens and tokens[0].lower() not in policy:
            policy[tokens[0].lower()] = tokens[1:]
    return policy


def csp_format(policy: dict[str, Any]) -> str:
    """Return the header value of a policy given as directive: sources."""
    return "; ".join(" ".join([name, *sources]) for name, sources in policy.items())


def csp_default(request: HttpRequest) -> dict[str, list[str]]:
    """Return the default policy for a request.

    Name this site's WebSocket origin in connect-src besides 'self':
    browsers that predate CSP level 3 do not let 'self' cover ws: and wss:.
    """
    policy = {name: list(sources) for name, sources in DEFAULT_POLICY.items()}
    try:
        host = request.get_host()
    except DisallowedHost:
        return policy
    scheme = "wss" if request.is_secure() else "ws"
    policy["connect-src"].append(f"{scheme}://{host}")
    return policy


def csp_apply(request: HttpRequest, response: HttpResponseBase) -> None:
    """Give an HTML response the policy, merged into one the view set."""
    content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type not in _DOCUMENT_TYPES:
        return
    if settings.DEBUG and response.status_code in (404, 500):
        # Django's debug error pages are made of inline scripts and styles.
        return
    policy: dict[str, list[str]] = {}
    if HEADER in response:
        policy.update(csp_parse(response[HEADER]))
    for name, sources in csp_default(request).items():
        policy.setdefault(name, sources)
    response[HEADER] = csp_format(policy)


@sync_and_async_middleware
def content_security_policy_middleware(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """Set the Content-Security-Policy of every HTML response."""
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponseBase:
            response = await get_response(request)
            csp_apply(request, response)
            return response

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        csp_apply(request, response)
        return response

    return middleware
