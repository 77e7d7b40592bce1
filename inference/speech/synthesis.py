"""Reading text aloud on the server with espeak-ng.

espeak-ng is offline, small (its library and the data of about a hundred
languages, Mandarin included, come in the ``espeakng-loader`` wheel: no
root, no download at run time) and fast: a sentence takes milliseconds on
one CPU core. Its voice is plainly synthetic; the page uses the browser's
own voices first and comes here only when the browser has none for the
language. The library keeps global state, so calls take turns.
"""

from __future__ import annotations

import ctypes
import io
import threading
import wave
from functools import lru_cache
from typing import Any

#: espeak-ng's constants (speak_lib.h).
_OUTPUT_SYNCHRONOUS = 2
_RATE = 1
_CHARS_UTF8 = 1

#: Voices by language (primary subtag); others use the tag itself.
VOICES = {"en": "en-us", "zh": "cmn", "yue": "yue"}

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SynthesisError(RuntimeError):
    pass


class Synthesizer:
    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise SynthesisError(f"espeak-ng is not installed ({exc})") from None
        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path().encode()
        except (OSError, RuntimeError) as exc:
            raise SynthesisError(f"espeak-ng cannot be loaded ({exc})") from None
        self.sample_rate = self.lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise SynthesisError("espeak-ng could not start (its data is missing)")
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._chunks: list[bytes] = []
        # Kept on self: the library holds the pointer.
        self._callback = _Callback(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _on_audio(self, samples: Any, count: int, _events: Any) -> int:
        if samples and count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0

    def voice_for(self, language: str) -> str:
        primary = (language or "en").split("-", 1)[0].lower()
        return VOICES.get(primary, primary)

    def pcm(self, text: str, language: str = "en", words_per_minute: int = 175) -> bytes:
        """16-bit mono PCM at ``sample_rate`` of text read in language
        (English when espeak-ng has no voice for it)."""
        encoded = text.encode("utf-8") + b"\0"
        with self._lock:
            if self.lib.espeak_SetVoiceByName(self.voice_for(language).encode()) != 0:
                self.lib.espeak_SetVoiceByName(b"en-us")
            self.lib.espeak_SetParameter(_RATE, max(80, min(words_per_minute, 450)), 0)
            self._chunks = []
            status = self.lib.espeak_Synth(encoded, len(encoded), 0, 0, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if status != 0:
            raise SynthesisError(f"espeak-ng failed (status {status})")
        return b"".join(chunks)

    def wav(self, text: str, language: str = "en", words_per_minute: int = 175) -> bytes:
        """The same as a WAV file."""
        pcm = self.pcm(text, language, words_per_minute)
        out = io.BytesIO()
        with wave.open(out, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(self.sample_rate)
            writer.writeframes(pcm)
        return out.getvalue()


@lru_cache(maxsize=1)
def synthesizer() -> Synthesizer:
    """The process's one synthesizer (SynthesisError when none can run)."""
    return Synthesizer()
