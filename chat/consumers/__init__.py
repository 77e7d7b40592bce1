"""The WebSocket consumers: ``base`` (what every socket shares), ``chat``
(the chat page's socket) and ``widget`` (the embeddable widget's)."""

from chat.consumers.base import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
    FrameBucket,
    SocketConsumer,
)
from chat.consumers.chat import ChatConsumer
from chat.consumers.widget import CLOSE_FORBIDDEN, CLOSE_UNKNOWN, WidgetConsumer

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_MANY",
    "CLOSE_UNAUTHENTICATED",
    "CLOSE_UNKNOWN",
    "ChatConsumer",
    "FrameBucket",
    "SocketConsumer",
    "WidgetConsumer",
]
