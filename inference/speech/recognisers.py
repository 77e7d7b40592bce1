"""Speech to text on 16 kHz mono 16-bit PCM.

``Pocketsphinx`` is the default: it works offline on a fresh machine (its
wheel ships an English model), decodes as the audio comes and has a
partial hypothesis at every step. ``Whisper`` serves a Whisper model
folder through transformers: far more accurate and multilingual, but not
incremental, so its partial text comes from decoding the audio so far
every ``partial_every_s`` seconds.

A recogniser is loaded once; ``session()`` starts one utterance. Sessions
of one recogniser may run on several threads at once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from inference.speech.audio import SAMPLE_BYTES, SAMPLE_RATE

#: Amplitude of the noise floor added under the audio: recorded and
#: synthesized speech often holds stretches of exact digital silence,
#: whose log energy the pocketsphinx front end cannot normalise. 20 is
#: about -64 dBFS, far below any room's own noise.
NOISE_FLOOR = 20.0


class RecogniserError(RuntimeError):
    """A recogniser that cannot be loaded; the message says why."""


class Session(ABC):
    """One utterance being recognised."""

    @abstractmethod
    def feed(self, pcm: bytes) -> str | None:
        """Take more audio; return the new partial text, or None when it
        did not change."""

    @abstractmethod
    def finish(self) -> str:
        """The final text of the utterance."""


class Recogniser(ABC):
    #: What /status/ and the heartbeat show: "pocketsphinx" or "whisper".
    backend: str
    #: The model's name (its folder's for Whisper).
    model: str
    #: The languages it transcribes (BCP 47 primary tags; empty: many).
    languages: tuple[str, ...] = ()

    @abstractmethod
    def session(self, language: str = "") -> Session: ...


class _SphinxSession(Session):
    def __init__(self, recogniser: Pocketsphinx) -> None:
        self.recogniser = recogniser
        self.decoder = recogniser._decoder_take()
        self.decoder.start_utt()
        self.text = ""
        self.rng = np.random.default_rng(0)
        self.done = False

    def feed(self, pcm: bytes) -> str | None:
        if not pcm:
            return None
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        samples += self.rng.normal(0.0, NOISE_FLOOR, samples.shape).astype(np.float32)
        self.decoder.process_raw(
            samples.clip(-32768, 32767).astype(np.int16).tobytes(), False, False
        )
        hypothesis = self.decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        if text == self.text:
            return None
        self.text = text
        return text

    def finish(self) -> str:
        if self.done:
            return self.text
        self.done = True
        try:
            self.decoder.end_utt()
            hypothesis = self.decoder.hyp()
            self.text = hypothesis.hypstr if hypothesis is not None else self.text
        finally:
            self.recogniser._decoder_give(self.decoder)
        return self.text


class Pocketsphinx(Recogniser):
    """CMU pocketsphinx with the English model its wheel ships."""

    backend = "pocketsphinx"
    languages = ("en",)

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise RecogniserError(f"pocketsphinx is not installed ({exc})") from None
        model = Path(get_model_path()) / "en-us"
        if not (model / "en-us").is_dir():
            raise RecogniserError(f"the pocketsphinx English model is missing from {model}")
        self.model = "en-us"
        self._decoder_class = Decoder
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        # Load one decoder now: a broken model fails at start, not on the
        # first dictation.
        self._idle.append(self._decoder_new())

    def _decoder_new(self) -> Any:
        try:
            return self._decoder_class(samprate=SAMPLE_RATE, loglevel="FATAL")
        except (RuntimeError, ValueError, OSError) as exc:
            raise RecogniserError(f"the pocketsphinx model could not be loaded ({exc})") from None

    def _decoder_take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._decoder_new()

    def _decoder_give(self, decoder: Any) -> None:
        with self._lock:
            self._idle.append(decoder)

    def session(self, language: str = "") -> Session:
        return _SphinxSession(self)


class _WhisperSession(Session):
    def __init__(self, recogniser: Whisper, language: str) -> None:
        self.recogniser = recogniser
        self.language = language
        self.audio = bytearray()
        self.decoded_at = 0
        self.text = ""

    def feed(self, pcm: bytes) -> str | None:
        self.audio += pcm
        step = int(self.recogniser.partial_every_s * SAMPLE_RATE) * SAMPLE_BYTES
        if len(self.audio) - self.decoded_at < step:
            return None
        self.decoded_at = len(self.audio)
        text = self.recogniser.transcribe(bytes(self.audio), self.language)
        if text == self.text:
            return None
        self.text = text
        return text

    def finish(self) -> str:
        if len(self.audio) != self.decoded_at:
            self.decoded_at = len(self.audio)
            self.text = self.recogniser.transcribe(bytes(self.audio), self.language)
        return self.text


class Whisper(Recogniser):
    """A Whisper model folder (transformers' format) on the CPU or a GPU."""

    backend = "whisper"
    #: Whisper hears 30 seconds at a time; the last 30 are decoded.
    WINDOW_S = 30

    def __init__(self, path: Path, *, partial_every_s: float = 2.0, device: str = "") -> None:
        try:
            import torch
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as exc:
            raise RecogniserError(f"transformers cannot load Whisper here ({exc})") from None
        if not (path / "config.json").is_file():
            raise RecogniserError(f"{path} is not a model folder (no config.json)")
        try:
            self.processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
            self.net = WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise RecogniserError(
                f"the Whisper model in {path} could not be loaded ({exc})"
            ) from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net.to(self.device)  # type: ignore[arg-type]
        self.net.eval()
        self.model = path.name
        self.partial_every_s = partial_every_s
        self._torch = torch
        self._lock = threading.Lock()

    def transcribe(self, pcm: bytes, language: str = "") -> str:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        samples = samples[-self.WINDOW_S * SAMPLE_RATE :]
        features = self.processor(
            samples, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device, self.net.dtype)
        # Room for the start tokens (language, task) within the decoder's length.
        room = int(getattr(self.net.config, "max_target_positions", 448)) - 8
        options: dict[str, object] = {"max_new_tokens": max(1, min(128, room))}
        if language and self._language_known(language):
            options.update(language=language, task="transcribe")
        with self._lock, self._torch.inference_mode():
            tokens = self.net.generate(features, **options)
        text = self.processor.batch_decode(tokens, skip_special_tokens=True)[0]
        return " ".join(text.split())

    def _language_known(self, language: str) -> bool:
        known = getattr(self.net.generation_config, "lang_to_id", None) or {}
        return f"<|{language}|>" in known

    def session(self, language: str = "") -> Session:
        return _WhisperSession(self, language.split("-", 1)[0].lower())


def recogniser_load(path: Path | None) -> Recogniser:
    """The registered Whisper folder's recogniser, else pocketsphinx;
    RecogniserError says why neither can run."""
    if path is not None:
        return Whisper(path)
    return Pocketsphinx()
