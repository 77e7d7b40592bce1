"""The recogniser on speech made here with espeak-ng and encoded as a
browser records it, and the speech worker over the test Redis: partial and
final text, and every kind of bad input ending with a clear error that
frees the recogniser."""

from __future__ import annotations

import asyncio

import pytest

from inference.speech.audio import AudioError, AudioStream, container_for
from inference.speech.client import Dictation, speech_status
from inference.speech.keys import SpeechLimits
from inference.speech.recognisers import Pocketsphinx
from tests.speech.conftest import encoded, spoken, word_error_rate

#: Sentences of everyday requests; the recogniser's word error rate on
#: them is printed and must stay well below chance (1.0).
CORPUS = [
    "hello world",
    "open the door please",
    "one two three four five six seven eight nine ten",
    "what is the weather today",
    "tell me a story about a cat",
    "please call me back tomorrow morning",
    "i would like to book a table for two",
    "turn off the lights in the kitchen",
]


def _recognise(recogniser: Pocketsphinx, data: bytes, container: str) -> str:
    session = recogniser.session()
    stream = AudioStream(container, session.feed)
    for start in range(0, len(data), 2000):
        stream.write(data[start : start + 2000])
    stream.end()
    assert stream.wait(30)
    assert stream.error is None
    return session.finish()


def test_pocketsphinx_transcribes_recorded_speech_with_a_reported_word_error_rate(
    record_property,
):
    recogniser = Pocketsphinx()
    rates = []
    for seed, sentence in enumerate(CORPUS):
        heard = _recognise(recogniser, encoded(spoken(sentence, seed=seed), "webm"), "webm")
        rates.append(word_error_rate(sentence, heard))
        print(f"{rates[-1]:.2f}  {sentence!r} -> {heard!r}")
    wer = sum(rates) / len(rates)
    record_property("word_error_rate", round(wer, 3))
    print(f"word error rate on {len(CORPUS)} sentences: {wer:.2f}")
    assert wer < 0.6


@pytest.mark.parametrize("container", ["webm", "ogg", "wav"])
def test_webm_ogg_and_wav_recordings_decode_whole_and_are_recognised(container):
    samples = spoken(CORPUS[6])
    session = Pocketsphinx().session()
    stream = AudioStream(container, session.feed)
    data = encoded(samples, container)
    for start in range(0, len(data), 1000):
        stream.write(data[start : start + 1000])
    stream.end()
    assert stream.wait(30) and stream.error is None
    # Every sample arrives (Opus pads a few milliseconds at the start).
    assert abs(stream.seconds - len(samples) / 16_000) < 0.05
    assert session.finish().startswith("i would like to")


def test_unknown_formats_are_refused_by_name():
    assert container_for("audio/webm;codecs=opus") == "webm"
    for bad in ["video/mp4", "audio/flac", "", None, 7, "x" * 500]:
        with pytest.raises(AudioError) as caught:
            container_for(bad)
        assert caught.value.code == "bad_format"


def test_bytes_that_are_not_the_declared_format_fail_clearly():
    stream = AudioStream("webm", lambda pcm: None)
    stream.write(b"RIFF not really a recording " * 100)
    stream.end()
    assert stream.wait(30)
    assert stream.error is not None and stream.error.code == "bad_audio"


async def _dictate(
    data: bytes,
    container: str = "webm",
    *,
    piece: int = 2000,
    pace_s: float = 0.0,
    end: bool = True,
) -> list[dict[str, str]]:
    dictation = Dictation(container)
    await dictation.submit()
    for start in range(0, len(data), piece):
        await dictation.audio(data[start : start + piece])
        if pace_s:
            await asyncio.sleep(pace_s)
    if end:
        await dictation.end()
    events = [event async for event in dictation.events(idle_timeout_s=60)]
    await dictation.close()
    return events


@pytest.mark.asyncio
async def test_the_worker_sends_partial_text_then_the_final_text(speech_worker_start):
    worker = speech_worker_start()
    assert speech_status().available
    events = await _dictate(encoded(spoken(CORPUS[6]), "webm"), pace_s=0.05)
    kinds = [event["kind"] for event in events]
    assert kinds[0] == "started" and kinds[-1] == "final"
    assert "partial" in kinds
    assert events[-1]["text"].startswith("i would like to")
    assert not worker.redis.exists(worker.keys.audio("x"))


@pytest.mark.asyncio
async def test_bad_audio_too_long_too_fast_and_silence_end_with_errors_that_free_the_slot(
    speech_worker_start,
):
    speech_worker_start(
        capacity=1,
        limits=SpeechLimits(max_seconds=2.0, realtime_factor=1.0, ahead_s=2.0, idle_s=1.0),
    )
    long_speech = encoded(spoken(" ".join(CORPUS[:3])), "webm")

    garbage = await _dictate(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    assert garbage[-1]["kind"] == "error" and garbage[-1]["code"] == "bad_audio"

    # Sent at once: faster than speech.
    fast = await _dictate(long_speech, piece=len(long_speech))
    assert fast[-1]["code"] in {"too_fast", "too_long"}

    # Sent at its pace but longer than allowed: the text so far is kept.
    slow = await _dictate(long_speech, piece=1500, pace_s=0.2)
    assert slow[-1]["code"] == "too_long"
    assert slow[-1]["text"]

    silent = await _dictate(b"", end=False)
    assert silent[-1]["code"] == "silent"

    # The one slot is free again after all of that.
    fine = await _dictate(encoded(spoken("hello world"), "webm"), piece=1000, pace_s=0.2)
    assert fine[-1]["kind"] == "final"


@pytest.mark.asyncio
async def test_a_cancelled_dictation_frees_the_recogniser_at_once(speech_worker_start):
    worker = speech_worker_start(capacity=1)
    dictation = Dictation("webm")
    await dictation.submit()
    await dictation.audio(encoded(spoken("hello"), "webm")[:3000])
    await dictation.cancel()
    events = [event async for event in dictation.events(idle_timeout_s=30)]
    await dictation.close()
    assert events[-1]["kind"] == "cancelled"
    fine = await _dictate(encoded(spoken("hello world"), "webm"), pace_s=0.05)
    assert fine[-1]["kind"] == "final"
    assert worker.state == "ready"


def test_without_a_worker_dictation_is_unavailable_with_the_reason():
    status = speech_status()
    assert not status.available
    assert "No speech recogniser is running" in status.reason


def test_a_worker_whose_recogniser_cannot_load_says_why(speech_worker_start, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    worker = speech_worker_start(model_path=lambda: tmp_path / "missing")
    assert worker.state == "error"
    status = speech_status()
    assert not status.available
    assert "cannot run" in status.reason and "missing" in status.reason
