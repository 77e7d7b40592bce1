"""Speech fixtures: recordings made here with espeak-ng (encoded as a
browser would send them) and a speech worker on the test Redis."""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from django.conf import settings

from inference.speech.keys import SpeechKeys, SpeechLimits
from inference.speech.synthesis import synthesizer
from inference.speech.worker import SpeechWorker

RATE = 16_000


def _resample(pcm: bytes, rate: int) -> np.ndarray:
    import av

    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(pcm, np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out)


def spoken(text: str, *, seed: int = 0, pad_s: float = 0.5) -> np.ndarray:
    """text read by espeak-ng as 16 kHz int16 samples, with a quiet room's
    noise around and under it, as a microphone would hear it."""
    voice = synthesizer()
    speech = _resample(voice.pcm(text, "en", 160), voice.sample_rate).astype(np.float32)
    rng = np.random.default_rng(seed)
    pad = np.zeros(int(pad_s * RATE), np.float32)
    signal = np.concatenate([pad, speech, pad])
    signal += rng.normal(0.0, 30.0, signal.shape).astype(np.float32)
    return signal.clip(-32768, 32767).astype(np.int16)


def encoded(samples: np.ndarray, container: str = "webm") -> bytes:
    """samples as a browser's recording: WebM or Ogg Opus at 48 kHz, or WAV."""
    import av

    out = io.BytesIO()
    if container == "wav":
        with wave.open(out, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(RATE)
            writer.writeframes(samples.tobytes())
        return out.getvalue()
    muxer = av.open(out, "w", format=container)
    stream = muxer.add_stream("libopus", rate=48_000, layout="mono")
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    for piece in resampler.resample(frame) + resampler.resample(None):
        for packet in stream.encode(piece):
            muxer.mux(packet)
    for packet in stream.encode(None):
        muxer.mux(packet)
    muxer.close()
    return out.getvalue()


def wav_file(samples: np.ndarray, path: Path) -> Path:
    path.write_bytes(encoded(samples, "wav"))
    return path


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference's length."""
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1] / max(len(ref), 1)


@pytest.fixture
def speech_worker_start(redis_url: str) -> Iterator[Callable[..., SpeechWorker]]:
    """Start speech workers on the test Redis (threads of this process);
    each is stopped at the end."""
    started: list[tuple[SpeechWorker, threading.Thread]] = []

    def start(**options) -> SpeechWorker:
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        worker = SpeechWorker(
            client,
            SpeechKeys(settings.REDIS_KEY_PREFIX),
            capacity=options.pop("capacity", 2),
            limits=options.pop("limits", SpeechLimits()),
            **options,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        worker_ready(worker)
        return worker

    yield start
    for worker, _thread in started:
        worker.stopping.set()
    for _worker, thread in started:
        thread.join(timeout=30)


def worker_ready(worker: SpeechWorker, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.state in ("ready", "error") and worker.redis.exists(
            worker.keys.heartbeat(worker.id)
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"speech worker still {worker.state}")
