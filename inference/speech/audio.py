"""Recordings that arrive in pieces, decoded as they come.

A browser's MediaRecorder sends a WebM (or Ogg) stream in slices; only
the first slice carries the header, so the pieces are one byte stream.
``AudioStream`` feeds that stream to FFmpeg's demuxer and decoder (PyAV)
on a thread of its own and hands 16 kHz mono 16-bit PCM to a callback as
soon as it is decoded.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

#: The rate, width and layout every recogniser takes.
SAMPLE_RATE = 16_000
SAMPLE_BYTES = 2

#: Container formats accepted, by the MIME type the browser declares
#: (parameters such as ``codecs=opus`` are checked by the decoder).
CONTAINERS = {
    "audio/webm": "webm",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
}


class AudioError(Exception):
    """The audio cannot be used; ``code`` says why, ``message`` in words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def container_for(mime: object) -> str:
    """The demuxer for a declared MIME type; AudioError when it is not one
    this platform takes."""
    if not isinstance(mime, str) or len(mime) > 100:
        raise AudioError("bad_format", "The recording's format is missing.")
    base = mime.split(";", 1)[0].strip().lower()
    container = CONTAINERS.get(base)
    if container is None:
        taken = ", ".join(sorted({m for m in CONTAINERS if not m.startswith("audio/x-")}))
        raise AudioError("bad_format", f"Recordings in {base or mime!r} are not taken ({taken}).")
    return container


class _Pipe(io.RawIOBase):
    """Bytes written by one thread, read (blocking) by the decoder's."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._ended = False
        self._ready = threading.Condition()

    def readable(self) -> bool:
        return True

    def write_bytes(self, data: bytes) -> None:
        with self._ready:
            self._buffer += data
            self._ready.notify_all()

    def end(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._ready:
            while not self._buffer and not self._ended:
                self._ready.wait()
            size = len(self._buffer) if size is None or size < 0 else size
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            return chunk

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(target))
        target[: len(chunk)] = chunk
        return len(chunk)


class AudioStream:
    """One recording: ``write`` its pieces, ``end`` it, ``wait`` for the
    decoder. ``on_pcm`` gets 16 kHz mono s16 PCM, on the decoder's thread;
    a failure to decode is kept in ``error`` (an AudioError)."""

    def __init__(self, container: str, on_pcm: Callable[[bytes], None]) -> None:
        self.container = container
        self.on_pcm = on_pcm
        self.error: AudioError | None = None
        self.samples = 0
        self._pipe = _Pipe()
        self._stopped = False
        self._thread = threading.Thread(target=self._decode, name="audio-decode", daemon=True)
        self._thread.start()

    @property
    def seconds(self) -> float:
        """How much audio was decoded so far."""
        return self.samples / SAMPLE_RATE

    def write(self, data: bytes) -> None:
        self._pipe.write_bytes(data)

    def end(self) -> None:
        """No more pieces: the decoder finishes what it holds."""
        self._pipe.end()

    def stop(self) -> None:
        """Give up: the decoder stops at its next frame."""
        self._stopped = True
        self._pipe.end()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the decoder to finish; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _decode(self) -> None:
        import av

        try:
            # A small probe: the stream is live, and the header is in the
            # first piece.
            container = av.open(
                self._pipe,
                mode="r",
                format=self.container,
                options={"probesize": "4096", "analyzeduration": "0"},
            )
        except (av.FFmpegError, ValueError, OSError) as exc:
            self.error = AudioError("bad_audio", f"The recording could not be read ({exc}).")
            self._pipe.end()
            return
        try:
            if not container.streams.audio:
                raise AudioError("bad_audio", "The recording holds no audio.")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                if self._stopped:
                    return
                for out in resampler.resample(frame):
                    self._emit(out)
            for out in resampler.resample(None):
                self._emit(out)
        except AudioError as exc:
            self.error = exc
        except (av.FFmpegError, ValueError, OSError) as exc:
            self.error = AudioError("bad_audio", f"The recording could not be decoded ({exc}).")
        finally:
            container.close()

    def _emit(self, frame: object) -> None:
        samples = frame.samples  # type: ignore[attr-defined]
        pcm = bytes(frame.planes[0])[: samples * SAMPLE_BYTES]  # type: ignore[attr-defined]
        self.samples += samples
        if not self._stopped:
            self.on_pcm(pcm)
