"""Spell one Redis URL the way each client library expects it.

``REDIS_URL`` is a redis-py URL: ``redis://``, ``rediss://`` or, for the
embedded server, ``unix:///path/to/redis.sock``. Celery (broker and result
backend) names unix sockets differently.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def embedded_redis_url(socket_path: str) -> str:
    return f"unix://{socket_path}"


def celery_redis_url(redis_url: str) -> str:
    """The URL for Celery's broker and result backend: both read a unix
    socket as ``redis+socket:///path``."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return redis_url


def redis_url_display(redis_url: str) -> str:
    """Return the URL with any password replaced, for messages and logs."""
    parts = urlsplit(redis_url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return redis_url
