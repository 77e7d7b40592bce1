"""Dictation through the real ASGI application: the chat socket and the
widget's, a speech worker on the test Redis, and bad input from the page."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from inference.speech.keys import SpeechLimits
from tests.chat.test_consumer import _connect
from tests.factories import UserFactory
from tests.speech.conftest import encoded, spoken

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TIMEOUT = 30


async def _until(communicator: WebsocketCommunicator, kinds: set[str]) -> list[dict]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=TIMEOUT)
        frames.append(frame)
        if frame["type"] in kinds:
            return frames


@pytest.fixture
async def chat_socket(speech_worker_start):
    # After the workers' fixture: the socket closes (cancelling its
    # dictation) before the workers stop, as a page goes before a deploy.
    user = await sync_to_async(UserFactory)()
    communicator = await _connect(user)
    yield communicator
    await communicator.disconnect()


async def _send_audio(communicator, data: bytes, *, piece: int = 1000, pace_s: float = 0.1):
    for start in range(0, len(data), piece):
        await communicator.send_to(bytes_data=data[start : start + piece])
        await asyncio.sleep(pace_s)


async def test_dictation_streams_partial_text_and_ends_with_the_transcript(
    chat_socket, speech_worker_start
):
    speech_worker_start()
    await chat_socket.send_json_to({"type": "dictation.start", "format": "audio/webm;codecs=opus"})
    started = await chat_socket.receive_json_from(timeout=TIMEOUT)
    assert started["type"] == "dictation.started"
    await _send_audio(chat_socket, encoded(spoken("i would like to book a table for two")))
    await chat_socket.send_json_to({"type": "dictation.stop"})
    frames = await _until(chat_socket, {"dictation.final", "dictation.error"})
    assert frames[-1]["type"] == "dictation.final", frames[-1]
    assert frames[-1]["text"].startswith("i would like to")
    assert any(frame["type"] == "dictation.partial" for frame in frames)
    # The socket still chats after a dictation.
    await chat_socket.send_json_to({"type": "ping"})
    assert (await chat_socket.receive_json_from(timeout=TIMEOUT))["type"] == "pong"


async def test_without_a_recogniser_the_page_is_told_why(chat_socket):
    await chat_socket.send_json_to({"type": "dictation.start", "format": "audio/webm"})
    frame = await chat_socket.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "dictation.error" and frame["code"] == "unavailable"
    assert "No speech recogniser is running" in frame["error"]


async def test_an_unknown_format_and_audio_without_a_dictation_are_refused(
    chat_socket, speech_worker_start
):
    speech_worker_start()
    await chat_socket.send_json_to({"type": "dictation.start", "format": "audio/flac"})
    frame = await chat_socket.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "dictation.error" and frame["code"] == "bad_format"
    assert "audio/flac" in frame["error"]
    await chat_socket.send_to(bytes_data=b"\x00" * 100)
    frame = await chat_socket.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "error" and frame["code"] == "invalid"
    assert "dictation" in frame["error"]


async def test_audio_that_arrives_too_fast_ends_the_dictation_and_frees_the_recogniser(
    chat_socket, speech_worker_start, settings
):
    settings.SPEECH_MAX_BYTES_PER_SECOND = 4096
    worker = speech_worker_start(capacity=1, limits=SpeechLimits(realtime_factor=1.0))
    await chat_socket.send_json_to({"type": "dictation.start", "format": "audio/webm"})
    assert (await chat_socket.receive_json_from(timeout=TIMEOUT))["type"] == "dictation.started"
    flood = encoded(spoken("one two three four five six seven eight nine ten " * 3))
    await _send_audio(chat_socket, flood, piece=4000, pace_s=0)
    frames = await _until(chat_socket, {"dictation.error"})
    assert frames[-1]["code"] == "too_fast"
    # The worker let go of the dictation: its one slot takes the next.
    settings.SPEECH_MAX_BYTES_PER_SECOND = 128_000
    for _ in range(100):
        if not any(thread.is_alive() for thread in worker.running):
            break
        await asyncio.sleep(0.1)
    await chat_socket.send_json_to({"type": "dictation.start", "format": "audio/ogg"})
    assert (await chat_socket.receive_json_from(timeout=TIMEOUT))["type"] == "dictation.started"
    await _send_audio(chat_socket, encoded(spoken("hello world"), "ogg"), pace_s=0.2)
    await chat_socket.send_json_to({"type": "dictation.stop"})
    frames = await _until(chat_socket, {"dictation.final", "dictation.error"})
    assert frames[-1]["type"] == "dictation.final", frames[-1]


async def test_an_oversized_audio_frame_closes_the_socket(
    chat_socket, speech_worker_start, settings
):
    speech_worker_start()
    await chat_socket.send_json_to({"type": "dictation.start", "format": "audio/webm"})
    await chat_socket.receive_json_from(timeout=TIMEOUT)
    await chat_socket.send_to(bytes_data=b"\x00" * (settings.CHAT_MAX_FRAME_BYTES + 1))
    frame = await chat_socket.receive_json_from(timeout=TIMEOUT)
    assert frame["code"] == "too_big"
