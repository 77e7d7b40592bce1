"""Two fixes to Daphne, applied when the ASGI application is imported.

Close codes: Daphne closes a WebSocket through autobahn's ``sendClose``,
which accepts only 1000 and 3000-4999. A consumer's ``close(1008)``
(policy) or ``close(1009)`` (too big) raised inside Daphne instead, the
client saw 1011, and the consumer never got its disconnect, so it stayed in
its channel-layer groups. The codes of ``PROTOCOL_CLOSE_CODES`` are valid
for an endpoint to send (RFC 6455 section 7.4.1); they go out through the
lower ``sendCloseFrame``, which ``sendClose`` itself calls once it has
checked the code.

Body sizes: Daphne (through Twisted) stores a whole request body before it
calls the application, so the ASGI cap of ``chatsite.bodies`` alone would
let a client upload any amount first. The request is answered with 413 and
the connection closed as soon as the declared length, or the bytes
received, pass the path's cap.
"""

from __future__ import annotations

from typing import Any

from chatsite.bodies import body_limit_for, too_large_body

#: Codes RFC 6455 lets an endpoint send that autobahn's public API refuses.
PROTOCOL_CLOSE_CODES = frozenset({1001, 1003, 1007, 1008, 1009, 1010, 1011})


def _close_codes_allow() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose

    def server_close(self: Any, code: int | None = None) -> None:
        if code in PROTOCOL_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
            return
        original(self, code)

    WebSocketProtocol.serverClose = server_close


def _request_path(request: Any) -> str:
    raw = getattr(request.channel, "_path", b"") or b""
    return raw.decode("latin-1").partition("?")[0]


def _body_limit_enforce() -> None:
    from daphne.http_protocol import WebRequest

    got_length = WebRequest.gotLength
    handle_chunk = WebRequest.handleContentChunk
    process = WebRequest.process

    def refuse(self: Any) -> None:
        self.body_refused = True
        status, headers, body = too_large_body(self.body_limit)
        head = [f"HTTP/1.1 {status} Payload Too Large".encode()]
        head += [name + b": " + value for name, value in headers]
        self.channel.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.channel.transport.loseConnection()

    def limited_got_length(self: Any, length: int | None) -> None:
        self.body_limit = body_limit_for(_request_path(self))
        self.body_received = 0
        self.body_refused = False
        got_length(self, length)
        if length is not None and length > self.body_limit:
            refuse(self)

    def limited_handle_chunk(self: Any, data: bytes) -> None:
        if getattr(self, "body_refused", False):
            return
        self.body_received = getattr(self, "body_received", 0) + len(data)
        if self.body_received > getattr(self, "body_limit", self.body_received):
            refuse(self)
            return
        handle_chunk(self, data)

    def limited_process(self: Any) -> Any:
        if getattr(self, "body_refused", False):
            return None
        return process(self)

    WebRequest.gotLength = limited_got_length
    WebRequest.handleContentChunk = limited_handle_chunk
    WebRequest.process = limited_process


_applied = False


def daphne_patches_apply() -> None:
    """Patch Daphne's close codes and body handling (once; a no-op when
    Daphne is not installed)."""
    global _applied
    if _applied:
        return
    try:
        import daphne.http_protocol
        import daphne.ws_protocol  # noqa: F401
    except ImportError:  # served by another ASGI server
        return
    _close_codes_allow()
    _body_limit_enforce()
    _applied = True
