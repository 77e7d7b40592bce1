"""The client's address and scheme when a reverse proxy stands in front.

Only a connection from one of ``TRUSTED_PROXIES`` may name the client
(``X-Forwarded-For``) or the scheme (``X-Forwarded-Proto``); anyone else is
taken at its socket address, whatever headers it sends. The middleware
rewrites ``scope["client"]`` (and ``scope["scheme"]``) for HTTP and
WebSockets alike, so Django's ``REMOTE_ADDR``, django-axes and the
consumers all see the same address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def networks_parse(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """Return the networks that addresses or CIDR entries name.

    Raise ValueError naming an entry that is neither.
    """
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def address_parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the IP address of a header item ("1.2.3.4", "1.2.3.4:80",
    "[::1]:80", "::1"), or None when it names none."""
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def address_in(address: str | None, entries: Iterable[str]) -> bool:
    """Whether address lies in one of the addresses or networks listed."""
    parsed = address_parse(address or "")
    if parsed is None:
        return False
    return any(parsed in network for network in networks_parse(tuple(entries)))


def client_address_resolve(*, peer: str, forwarded_for: list[str], trusted: Iterable[str]) -> str:
    """Return the client's address: the peer's own unless it is a trusted
    proxy, else the rightmost X-Forwarded-For hop that is not one.

    Hops left of the first untrusted one were written by the client and are
    ignored; so is a header whose next hop is not an address.
    """
    trusted = tuple(trusted)
    if not trusted or not address_in(peer, trusted):
        return peer
    address = peer
    for hop in reversed(forwarded_for):
        parsed = address_parse(hop)
        if parsed is None:
            break
        address = str(parsed)
        if not address_in(address, trusted):
            break
    return address


def _header_items(scope: dict[str, Any], name: bytes) -> list[str]:
    items: list[str] = []
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            items.extend(value.decode("latin-1").split(","))
    return items


class TrustedProxyMiddleware:
    """Resolve the client's address and scheme of HTTP and WebSocket
    connections from the forwarded headers of trusted proxies."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        client = scope.get("client")
        trusted = tuple(settings.TRUSTED_PROXIES)
        if scope["type"] in ("http", "websocket") and client and address_in(client[0], trusted):
            scope = dict(scope)
            forwarded = _header_items(scope, b"x-forwarded-for")
            if forwarded:
                address = client_address_resolve(
                    peer=client[0], forwarded_for=forwarded, trusted=trusted
                )
                scope["client"] = (address, 0)
            proto = [p.strip().lower() for p in _header_items(scope, b"x-forwarded-proto")]
            if proto and proto[-1] in ("http", "https"):
                secure = proto[-1] == "https"
                if scope["type"] == "websocket":
                    scope["scheme"] = "wss" if secure else "ws"
                else:
                    scope["scheme"] = proto[-1]
        return await self.app(scope, receive, send)


def request_client_address(request: HttpRequest) -> str | None:
    """Return the client address of a request (django-axes'
    ``AXES_CLIENT_IP_CALLABLE``): ``REMOTE_ADDR`` as the middleware set it."""
    return request.META.get("REMOTE_ADDR") or None
