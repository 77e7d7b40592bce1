"""Who the client is behind reverse proxies: X-Forwarded-For and
X-Forwarded-Proto count only from TRUSTED_PROXIES, for HTTP and WebSockets,
and django-axes sees the address the middleware resolved."""

from __future__ import annotations

import pytest

from chatsite.proxies import TrustedProxyMiddleware, client_address_resolve


async def _seen(scope: dict) -> dict:
    seen: dict = {}

    async def app(scope, receive, send):
        seen.update(scope)

    await TrustedProxyMiddleware(app)(scope, None, None)
    return seen


def _scope(kind: str, peer: str, **headers: str) -> dict:
    return {
        "type": kind,
        "scheme": "ws" if kind == "websocket" else "http",
        "client": (peer, 50000),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_forwarded_headers_count_only_from_trusted_proxies(kind, settings):
    """An untrusted peer keeps its own address and scheme whatever it sends;
    a trusted proxy's X-Forwarded-For gives the rightmost hop that is not a
    trusted proxy (hops a client wrote on the left are ignored), and its
    X-Forwarded-Proto gives the scheme."""
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.1"]
    forged = {"x_forwarded_for": "203.0.113.9", "x_forwarded_proto": "https"}

    seen = await _seen(_scope(kind, "198.51.100.4", **forged))
    assert seen["client"][0] == "198.51.100.4"
    assert seen["scheme"] in ("http", "ws")

    chain = {"x_forwarded_for": "6.6.6.6, 203.0.113.9, 10.1.2.3", "x_forwarded_proto": "https"}
    seen = await _seen(_scope(kind, "192.0.2.1", **chain))
    assert seen["client"][0] == "203.0.113.9"
    assert seen["scheme"] == ("wss" if kind == "websocket" else "https")

    settings.TRUSTED_PROXIES = []
    seen = await _seen(_scope(kind, "192.0.2.1", **chain))
    assert seen["client"][0] == "192.0.2.1"


def test_a_malformed_hop_ends_the_walk_at_the_last_good_address():
    """A hop that is not an address stops the walk; ports and brackets are
    understood."""
    trusted = ["10.0.0.0/8"]
    assert (
        client_address_resolve(
            peer="10.0.0.1", forwarded_for=["junk", "[2001:db8::1]:443"], trusted=trusted
        )
        == "2001:db8::1"
    )
    assert (
        client_address_resolve(peer="10.0.0.1", forwarded_for=["junk"], trusted=trusted)
        == "10.0.0.1"
    )
