"""A registered Whisper folder: the command checks it, running speech
workers swap to it (and back to pocketsphinx) without a restart, and
dictations go through transformers."""

from __future__ import annotations

import time

import pytest
from django.core.management import CommandError, call_command
from django.db import close_old_connections

from inference.speech.client import Dictation, speech_status
from models_admin.models import SpeechModel
from models_admin.services.speech import speech_model_path
from tests.speech.conftest import encoded, spoken

pytestmark = pytest.mark.django_db(transaction=True)


def _registered_path():
    close_old_connections()
    return speech_model_path()


def _backend_becomes(name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = speech_status()
        if status.available and status.backend == name:
            return
        time.sleep(0.2)
    raise AssertionError(f"the speech worker did not switch to {name}: {speech_status()}")


async def _dictate(data: bytes) -> list[dict[str, str]]:
    import asyncio

    dictation = Dictation("webm")
    await dictation.submit()
    for start in range(0, len(data), 2000):
        await dictation.audio(data[start : start + 2000])
        await asyncio.sleep(0.05)
    await dictation.end()
    events = [event async for event in dictation.events(idle_timeout_s=60)]
    await dictation.close()
    return events


def test_registering_a_whisper_folder_swaps_the_workers_and_back(
    speech_worker_start, tiny_whisper_dir
):
    import asyncio

    speech_worker_start(model_path=_registered_path)
    _backend_becomes("pocketsphinx")
    call_command("speech_model", str(tiny_whisper_dir), "--name", "whisper-tiny")
    assert SpeechModel.objects.get(active=True).name == "whisper-tiny"
    _backend_becomes("whisper")
    assert speech_status().model == tiny_whisper_dir.name

    events = asyncio.run(_dictate(encoded(spoken("hello world"), "webm")))
    assert events[0]["kind"] == "started" and "whisper" in events[0]["backend"]
    assert events[-1]["kind"] == "final"
    assert isinstance(events[-1]["text"], str)

    call_command("speech_model", "--default")
    assert not SpeechModel.objects.filter(active=True).exists()
    _backend_becomes("pocketsphinx")


def test_a_folder_that_is_not_whisper_is_refused_with_the_reason(tmp_path, tiny_model_dir):
    with pytest.raises(CommandError, match="not a model folder"):
        call_command("speech_model", str(tmp_path))
    with pytest.raises(CommandError, match="not a Whisper one"):
        call_command("speech_model", str(tiny_model_dir))
    with pytest.raises(CommandError, match="--default"):
        call_command("speech_model")
    assert not SpeechModel.objects.exists()
