"""The Origin check of every WebSocket: same scheme, host and port.

A page may open a socket to this site only from the site's own origin (the
``Host`` the request names, with the scheme the socket uses: ``ws`` for
``http``, ``wss`` for ``https``) or from one of ``CSRF_TRUSTED_ORIGINS``.
Channels' ``AllowedHostsOriginValidator`` compares host names only, so a
page on another port or scheme of the same host would get in with the
visitor's cookie.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

Origin = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_parse(value: str) -> Origin | None:
    """Return (scheme, host, port) of an http(s) origin, or None."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", []) if k.lower() == name]
    if len(values) != 1:
        return None
    return values[0].decode("latin-1")


def _secure(scope: dict[str, Any]) -> bool:
    if scope.get("scheme") in ("wss", "https"):
        return True
    # The same rule as Django's request.is_secure() behind a TLS proxy.
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, expected = proxy_header
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        value = _header(scope, header)
        return value is not None and value.split(",")[0].strip() == expected
    return False


def site_origin(scope: dict[str, Any]) -> Origin | None:
    """Return the origin of this site as the socket's request names it, or
    None when its Host is missing or not in ALLOWED_HOSTS."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed):
        return None
    scheme = "https" if _secure(scope) else "http"
    return origin_parse(f"{scheme}://{host}")


def _trusted_match(origin: Origin, pattern: str) -> bool:
    scheme, _, rest = pattern.partition("://")
    if rest.startswith("*."):
        # Django's subdomain wildcard: https://*.example.com
        wanted = origin_parse(f"{scheme}://{rest[2:]}")
        return (
            wanted is not None
            and origin[0] == wanted[0]
            and origin[2] == wanted[2]
            and origin[1].endswith("." + wanted[1])
        )
    return origin == origin_parse(pattern)


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the socket's Origin is this site's own or a trusted one."""
    raw = _header(scope, b"origin")
    origin = origin_parse(raw) if raw is not None else None
    if origin is None:
        return False
    if origin == site_origin(scope):
        return True
    return any(_trusted_match(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)


class SiteOriginValidator:
    """Refuse WebSockets whose Origin is not this site's (see module)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)
