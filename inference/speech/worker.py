"""The speech worker: takes dictations off Redis and recognises them.

It holds one recogniser and serves up to ``capacity`` dictations at once,
each on a thread of its own: it reads the dictation's audio as the page
sends it, decodes it (``audio.AudioStream``), feeds the recogniser and
writes partial text, then the final text or an error, to the
dictation's event stream. Every failure frees the recogniser's slot.

``model_path`` is asked again every few seconds: registering a Whisper
folder (or going back to pocketsphinx) swaps the recogniser; dictations
under way finish on the old one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from inference.speech import keys as wire
from inference.speech.audio import AudioError, AudioStream
from inference.speech.keys import SpeechHeartbeat, SpeechKeys, SpeechLimits
from inference.speech.recognisers import Recogniser, RecogniserError, recogniser_load
from inference.worker.heartbeat import HeartbeatSender

logger = logging.getLogger(__name__)

#: Partial text goes out at most this often per dictation.
PARTIAL_EVERY_S = 0.2
#: How often the registered model is looked up.
MODEL_CHECK_EVERY_S = 5.0


class _Dictation:
    """One dictation on its worker thread."""

    def __init__(
        self,
        worker: SpeechWorker,
        recogniser: Recogniser,
        dictation_id: str,
        container: str,
        language: str,
    ) -> None:
        self.worker = worker
        self.id = dictation_id
        self.container = container
        self.session = recogniser.session(language)
        self.text = ""
        self.sent_text = ""
        self.sent_at = 0.0
        self.lock = threading.Lock()
        self.stream: AudioStream | None = None

    def _event(self, kind: str, **fields: str) -> None:
        self.worker._event(self.id, kind, **fields)

    def _on_pcm(self, pcm: bytes) -> None:
        with self.lock:
            partial = self.session.feed(pcm)
            if partial is not None:
                self.text = partial
            now = time.monotonic()
            if self.text != self.sent_text and now - self.sent_at >= PARTIAL_EVERY_S:
                self.sent_text, self.sent_at = self.text, now
                self._event("partial", text=self.text)

    def _fail(self, code: str, message: str) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.wait(5)
        with self.lock:
            text = self.session.finish()
        self._event("error", code=code, error=message, text=text)

    def run(self) -> None:
        limits = self.worker.limits
        client = self.worker.redis
        audio_key = self.worker.keys.audio(self.id)
        started = time.monotonic()
        last_audio = started
        self.stream = AudioStream(self.container, self._on_pcm)
        self._event("started", backend=self.worker.recogniser_name)
        while True:
            popped = client.blpop([audio_key], timeout=1)
            now = time.monotonic()
            if self.stream.error is not None:
                self._fail(self.stream.error.code, self.stream.error.message)
                return
            if popped is None:
                if now - last_audio > limits.idle_s:
                    self._fail("silent", f"No audio arrived for {limits.idle_s:.0f} seconds.")
                    return
                continue
            entry: bytes = popped[1]
            tag, data = entry[:1], entry[1:]
            if tag == wire.CANCEL:
                self.stream.stop()
                self.stream.wait(5)
                with self.lock:
                    self.session.finish()
                self._event("cancelled")
                return
            if tag == wire.END:
                self._end()
                return
            last_audio = now
            self.stream.write(data)
            heard = self.stream.seconds
            if heard > limits.max_seconds:
                self._fail(
                    "too_long",
                    f"Dictation stops after {limits.max_seconds:.0f} seconds; "
                    "the text so far is kept.",
                )
                return
            if heard > (now - started) * limits.realtime_factor + limits.ahead_s:
                self._fail("too_fast", "The audio arrives faster than anyone speaks.")
                return

    def _end(self) -> None:
        assert self.stream is not None
        self.stream.end()
        if not self.stream.wait(30):
            self._fail("slow", "The recording took too long to decode.")
            return
        if self.stream.error is not None:
            self._fail(self.stream.error.code, self.stream.error.message)
            return
        if self.stream.seconds > self.worker.limits.max_seconds:
            self._fail("too_long", "The recording is too long.")
            return
        with self.lock:
            text = self.session.finish()
        self._event("final", text=text, seconds=f"{self.stream.seconds:.2f}")


class SpeechWorker:
    def __init__(
        self,
        client: redis.Redis,
        keys: SpeechKeys,
        *,
        model_path: Callable[[], Path | None] = lambda: None,
        capacity: int = 4,
        limits: SpeechLimits | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.redis: Any = client
        self.keys = keys
        self.model_path = model_path
        self.capacity = max(1, capacity)
        self.limits = limits or SpeechLimits()
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.recogniser: Recogniser | None = None
        self.loaded_path: Path | None = None
        self.state = "loading"
        self.error = ""
        self.running: set[threading.Thread] = set()
        self.started_at = time.time()
        self.stopping = threading.Event()
        self.heartbeats = HeartbeatSender(
            self.redis,
            self.keys.heartbeat(self.id),
            build=self.heartbeat_build,
            interval=wire.HEARTBEAT_EVERY_S,
            ttl=wire.HEARTBEAT_TTL_S,
        )

    @property
    def recogniser_name(self) -> str:
        r = self.recogniser
        return f"{r.backend}:{r.model}" if r is not None else ""

    # --- Redis -------------------------------------------------------------

    def _event(self, dictation_id: str, kind: str, **fields: str) -> None:
        key = self.keys.events(dictation_id)
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"kind": kind, **fields}, maxlen=2000, approximate=True)
        pipe.expire(key, wire.SESSION_TTL_S)
        pipe.execute()

    def heartbeat_build(self) -> SpeechHeartbeat:
        state, error, r = self.state, self.error, self.recogniser
        return SpeechHeartbeat(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=state,
            error=error,
            backend=r.backend if r else "",
            model=r.model if r else "",
            languages=list(r.languages) if r else [],
            capacity=self.capacity,
            running=sum(thread.is_alive() for thread in list(self.running)),
            at=time.time(),
        )

    # --- the recogniser ----------------------------------------------------

    def load(self) -> None:
        """Load the registered recogniser (pocketsphinx when none is);
        a failure leaves the worker in "error" with the reason."""
        try:
            path = self.model_path()
        except Exception as exc:
            logger.warning("The registered speech model could not be read: %s", exc)
            path = self.loaded_path
        if self.recogniser is not None and path == self.loaded_path:
            return
        # A folder that failed is tried again (it may have been mended)
        # without saying "loading" every time.
        if not (self.recogniser is None and path == self.loaded_path):
            self._state_set("loading", "")
        try:
            recogniser = recogniser_load(path)
        except RecogniserError as exc:
            logger.error("No speech recogniser: %s", exc)
            self.loaded_path = path
            if self.recogniser is None:
                self._state_set("error", str(exc))
            else:
                self._state_set("ready", f"kept {self.recogniser_name}: {exc}")
            return
        self.recogniser, self.loaded_path = recogniser, path
        logger.info("Speech recogniser ready: %s", self.recogniser_name)
        self._state_set("ready", "")

    def _state_set(self, state: str, error: str) -> None:
        """Take a state and say so in the heartbeat at once."""
        self.state, self.error = state, error
        self.heartbeats.beat()

    # --- the loop ----------------------------------------------------------

    def _job_take(self) -> dict[str, Any] | None:
        popped = self.redis.blpop([self.keys.jobs], timeout=1)
        if popped is None:
            return None
        try:
            job = json.loads(popped[1])
            if not isinstance(job, dict) or not isinstance(job.get("id"), str):
                raise ValueError("not a job")
            return job
        except ValueError:
            logger.warning("Dropped a malformed speech job")
            return None

    def _serve(self, job: dict[str, Any]) -> None:
        dictation_id = job["id"]
        try:
            if time.time() - float(job.get("at") or 0) > self.limits.queue_wait_s:
                self._event(
                    dictation_id,
                    "error",
                    code="busy",
                    error="Every recogniser is busy; try again in a moment.",
                    text="",
                )
                return
            recogniser = self.recogniser
            if recogniser is None:
                self._event(dictation_id, "error", code="unavailable", error=self.error, text="")
                return
            _Dictation(
                self,
                recogniser,
                dictation_id,
                str(job.get("container") or ""),
                str(job.get("language") or ""),
            ).run()
        except AudioError as exc:
            with _suppress_redis():
                self._event(dictation_id, "error", code=exc.code, error=exc.message, text="")
        except Exception:
            logger.exception("Dictation %s failed", dictation_id)
            with _suppress_redis():
                self._event(
                    dictation_id,
                    "error",
                    code="internal",
                    error="Recognition failed; try again.",
                    text="",
                )
        finally:
            with _suppress_redis():
                self.redis.delete(self.keys.audio(dictation_id))

    def run(self) -> None:
        """Serve until ``stopping`` is set; dictations under way finish."""
        self.load()
        self.heartbeats.start()
        checked = time.monotonic()
        while not self.stopping.is_set():
            self.running = {t for t in self.running if t.is_alive()}
            if time.monotonic() - checked > MODEL_CHECK_EVERY_S:
                checked = time.monotonic()
                self.load()
            if self.state != "ready" or len(self.running) >= self.capacity:
                self.stopping.wait(0.2)
                continue
            try:
                job = self._job_take()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning("Redis unreachable: %s", exc)
                self.stopping.wait(1)
                continue
            if job is None:
                continue
            thread = threading.Thread(
                target=self._serve, args=(job,), name=f"dictation-{job['id'][:8]}", daemon=True
            )
            self.running.add(thread)
            thread.start()
        for thread in list(self.running):
            thread.join(timeout=30)
        self.heartbeats.stop()
        self.heartbeats.clear()


class _suppress_redis:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if exc is not None and isinstance(exc, redis.RedisError | OSError):
            logger.warning("Redis unreachable: %s", exc)
            return True
        return False
