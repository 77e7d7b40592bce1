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
from tests.tiny_models import bpe_train

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


def tiny_whisper_save(dest: Path) -> Path:
    """A random Whisper of a few kilobytes with a small BPE tokenizer: it
    transcribes nonsense, through the real transformers code."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    end = "<|endoftext|>"
    specials = [end, "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer = bpe_train(["hello world", "book a table for two"], specials, 300)
    fast = WhisperTokenizerFast(
        tokenizer_object=tokenizer, bos_token=end, eos_token=end, unk_token=end, pad_token=end
    )
    ids = {token: tokenizer.token_to_id(token) for token in specials}
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=tokenizer.get_vocab_size(),
        num_mel_bins=80,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=16,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[end],
        pad_token_id=ids[end],
        bos_token_id=ids[end],
    )
    net = WhisperForConditionalGeneration(config)
    generation = net.generation_config
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.forced_decoder_ids = None
    generation.lang_to_id = {"<|en|>": ids["<|en|>"]}
    generation.task_to_id = {"transcribe": ids["<|transcribe|>"]}
    generation.is_multilingual = True
    net.save_pretrained(dest)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), fast).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_whisper_save(tmp_path_factory.mktemp("whisper-tiny"))


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
