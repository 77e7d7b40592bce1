"""Dictation over the chat and widget sockets.

Client frames: ``dictation.start {format, language?}`` (the recording's
MIME type, as MediaRecorder names it), then the recording itself as binary
frames, then ``dictation.stop`` (recognise what was sent) or
``dictation.cancel``. Server frames: ``dictation.started {dictation}``,
``dictation.partial {text}``, ``dictation.final {text}`` and
``dictation.error {code, error, text}``: every error ends the dictation
and frees the recogniser, keeping the text recognised so far.

Audio that arrives faster than ``SPEECH_MAX_BYTES_PER_SECOND`` (with a
burst of a few seconds) ends the dictation here; the worker checks the
decoded audio against the clock and its length too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.translation import gettext

from chat.consumers.base import FrameBucket
from inference.client import REDIS_DOWN
from inference.speech.audio import AudioError, container_for
from inference.speech.client import Dictation, speech_status

logger = logging.getLogger(__name__)

_status = sync_to_async(speech_status, thread_sensitive=False)


def _unavailable() -> str:
    return gettext("Dictation is unavailable for a moment.")


def _error_text(code: str, worker_text: str) -> str:
    """The page's words for an error the worker (or this socket) reports,
    in the socket's language; the worker's own text for the rest."""
    texts = {
        "too_long": lambda: (
            gettext("Dictation stops after %(seconds)s seconds; the text so far is kept.")
            % {"seconds": settings.SPEECH_MAX_SECONDS}
        ),
        "too_fast": lambda: gettext(
            "The audio arrives faster than anyone speaks; dictation stopped."
        ),
        "silent": lambda: (
            gettext("No audio arrived for %(seconds)s seconds.")
            % {"seconds": settings.SPEECH_IDLE_SECONDS}
        ),
        "bad_audio": lambda: gettext("The recording could not be decoded."),
        "busy": lambda: gettext("Every recogniser is busy; try again in a moment."),
        "slow": lambda: gettext("The recording took too long to decode."),
        "internal": lambda: gettext("Dictation failed; try again."),
    }
    text = texts.get(code)
    return text() if text is not None else worker_text


class DictationMixin:
    """Adds dictation to a socket consumer (``ChatConsumer`` and the
    widget's). ``send_json`` and ``_error`` come from the consumer."""

    dictation: Dictation | None = None
    dictation_reader: asyncio.Task[None] | None = None
    #: Audio bytes (a FrameBucket whose tokens are bytes).
    audio_bytes: FrameBucket | None = None
    #: Audio frames, counted apart from JSON frames: a recorder sends a
    #: few a second, a flood of tiny ones is refused.
    audio_frames: FrameBucket | None = None
    audio_refused = False

    send_json: Any
    _error: Any

    def _dictation_handlers(self) -> dict[str, Any]:
        return {
            "dictation.start": self._on_dictation_start,
            "dictation.stop": self._on_dictation_stop,
            "dictation.cancel": self._on_dictation_cancel,
        }

    async def _dictation_error(self, code: str, message: str, text: str = "") -> None:
        await self.send_json(
            {"type": "dictation.error", "code": code, "error": message, "text": text}
        )

    async def _on_dictation_start(self, content: dict[str, Any]) -> None:
        if self.dictation is not None:
            await self._dictation_cancel()
        try:
            container = container_for(content.get("format"))
        except AudioError:
            declared = content.get("format")
            named = declared[:100] if isinstance(declared, str) and declared else "?"
            await self._dictation_error(
                "bad_format",
                gettext("Recordings in %(format)s are not taken; send WebM, Ogg or WAV.")
                % {"format": named},
            )
            return
        try:
            status = await _status()
        except REDIS_DOWN:
            await self._dictation_error("unavailable", _unavailable())
            return
        if not status.available:
            await self._dictation_error("unavailable", status.reason)
            return
        language = content.get("language")
        language = language[:16] if isinstance(language, str) else ""
        dictation = Dictation(container, language)
        try:
            await dictation.submit()
        except REDIS_DOWN:
            await dictation.close()
            await self._dictation_error("unavailable", _unavailable())
            return
        rate = float(settings.SPEECH_MAX_BYTES_PER_SECOND)
        self.audio_bytes = FrameBucket(rate=rate, burst=rate * 4)
        self.audio_frames = FrameBucket(rate=50.0, burst=100.0)
        self.dictation, self.audio_refused = dictation, False
        self.dictation_reader = asyncio.ensure_future(self._dictation_follow(dictation))
        await self.send_json({"type": "dictation.started", "dictation": dictation.id})

    async def _on_audio(self, data: bytes) -> None:
        dictation = self.dictation
        if dictation is None:
            return
        assert self.audio_bytes is not None and self.audio_frames is not None
        if not (self.audio_frames.take() and self.audio_bytes.take(len(data))):
            await self._dictation_cancel()
            self.audio_refused = True
            await self._dictation_error("too_fast", _error_text("too_fast", ""))
            return
        try:
            await dictation.audio(data)
        except REDIS_DOWN:
            await self._dictation_cancel()
            await self._dictation_error("unavailable", _unavailable())

    async def _on_dictation_stop(self, content: dict[str, Any]) -> None:
        if self.dictation is None:
            return
        try:
            await self.dictation.end()
        except REDIS_DOWN:
            await self._dictation_cancel()
            await self._dictation_error("unavailable", _unavailable())

    async def _on_dictation_cancel(self, content: dict[str, Any]) -> None:
        await self._dictation_cancel()

    async def _dictation_cancel(self) -> None:
        """End the running dictation here and tell the worker to let go."""
        dictation, self.dictation = self.dictation, None
        reader, self.dictation_reader = self.dictation_reader, None
        if reader is not None:
            reader.cancel()
        if dictation is not None:
            with contextlib.suppress(*REDIS_DOWN):
                await dictation.cancel()
            await dictation.close()

    async def _dictation_follow(self, dictation: Dictation) -> None:
        """Forward the worker's events to the page until the last."""
        try:
            async for event in dictation.events(idle_timeout_s=settings.SPEECH_IDLE_SECONDS + 30):
                kind = event.get("kind")
                if kind == "partial":
                    await self.send_json(
                        {"type": "dictation.partial", "text": event.get("text", "")}
                    )
                elif kind == "final":
                    await self.send_json(
                        {"type": "dictation.final", "text": event.get("text", "")}
                    )
                elif kind == "error":
                    code = event.get("code", "error")
                    await self._dictation_error(
                        code, _error_text(code, event.get("error", "")), event.get("text", "")
                    )
        except asyncio.CancelledError:
            raise
        except (TimeoutError, *REDIS_DOWN):
            await self._dictation_error("silent", gettext("The recogniser stopped answering."))
        except Exception:
            logger.exception("Following dictation %s failed", dictation.id)
            await self._dictation_error("internal", _error_text("internal", ""))
        if self.dictation is dictation:
            self.dictation, self.dictation_reader = None, None
            # Audio the recorder sent after the end is dropped unanswered.
            self.audio_refused = True
            await dictation.close()

    async def _dictation_disconnect(self) -> None:
        if self.dictation is not None:
            await self._dictation_cancel()
