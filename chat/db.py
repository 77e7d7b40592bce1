"""Database work on a thread of its own.

Channels and asgiref run every ``database_sync_to_async`` and default
``sync_to_async`` call of a web process on one shared thread, one call at
a time. A call that holds it for long (the content filter on a long
message) holds up every socket and request of the process. ``db_apart``
runs such a call on a pool thread instead, with a fresh connection that
is closed again afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections


def db_apart(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return an async version of fn that runs on a pool thread."""

    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            # The pool's threads come and go; their connections must not.
            connections.close_all()

    return sync_to_async(call, thread_sensitive=False)
