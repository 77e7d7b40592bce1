"""What the web calls to dictate: is a recogniser up, start a dictation,
send its audio, end or cancel it, read its events. torch-free."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.utils.translation import gettext

from inference.connection import redis_client
from inference.speech import keys as wire
from inference.speech.keys import SpeechHeartbeat, SpeechKeys, speech_heartbeats

#: Events after which a dictation is over.
FINAL_KINDS = frozenset({"final", "error", "cancelled"})


def speech_keys() -> SpeechKeys:
    return SpeechKeys(settings.REDIS_KEY_PREFIX)


@dataclass(frozen=True)
class SpeechStatus:
    """Whether dictation works now and, when it does not, why."""

    available: bool
    reason: str = ""
    backend: str = ""
    model: str = ""
    languages: tuple[str, ...] = ()
    workers: tuple[SpeechHeartbeat, ...] = ()


def speech_status() -> SpeechStatus:
    """Read the speech workers' heartbeats (Redis errors propagate)."""
    if not settings.SPEECH_ENABLED:
        return SpeechStatus(False, gettext("Dictation is turned off on this site."))
    beats = tuple(speech_heartbeats(redis_client(), speech_keys()))
    ready = [beat for beat in beats if beat.ready]
    if ready:
        best = ready[0]
        return SpeechStatus(
            True,
            backend=best.backend,
            model=best.model,
            languages=tuple(best.languages),
            workers=beats,
        )
    if not beats:
        return SpeechStatus(
            False, gettext("No speech recogniser is running (the speech worker is down).")
        )
    failing = next((beat for beat in beats if beat.error), beats[0])
    if failing.state == "loading":
        return SpeechStatus(False, gettext("The speech recogniser is loading."), workers=beats)
    return SpeechStatus(
        False,
        gettext("The speech recogniser cannot run: %(reason)s") % {"reason": failing.error},
        workers=beats,
    )


class Dictation:
    """One dictation from the web side; one per socket at a time."""

    def __init__(self, container: str, language: str = "") -> None:
        self.id = uuid.uuid4().hex
        self.container = container
        self.language = language
        self.keys = speech_keys()
        self.client: Any = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3)
        self.bytes = 0

    async def submit(self) -> None:
        job = {
            "id": self.id,
            "container": self.container,
            "language": self.language,
            "at": time.time(),
        }
        await self.client.rpush(self.keys.jobs, json.dumps(job))

    async def _push(self, entry: bytes) -> None:
        key = self.keys.audio(self.id)
        pipe = self.client.pipeline()
        pipe.rpush(key, entry)
        pipe.expire(key, wire.SESSION_TTL_S)
        await pipe.execute()

    async def audio(self, data: bytes) -> None:
        self.bytes += len(data)
        await self._push(wire.AUDIO + data)

    async def end(self) -> None:
        await self._push(wire.END)

    async def cancel(self) -> None:
        await self._push(wire.CANCEL)

    async def events(
        self, *, idle_timeout_s: float = 60.0
    ) -> AsyncGenerator[dict[str, str], None]:
        """The dictation's events, ending with final, error or cancelled;
        TimeoutError when none arrives for idle_timeout_s."""
        key = self.keys.events(self.id)
        last = "0-0"
        while True:
            response = await asyncio.wait_for(
                self.client.xread({key: last}, block=int(idle_timeout_s * 1000), count=50),
                timeout=idle_timeout_s + 5,
            )
            if not response:
                raise TimeoutError(f"no speech event in {idle_timeout_s:.0f}s")
            for entry_id, fields in response[0][1]:
                last = entry_id
                event = {k.decode(): v.decode() for k, v in fields.items()}
                yield event
                if event.get("kind") in FINAL_KINDS:
                    return

    async def close(self) -> None:
        await self.client.aclose()
