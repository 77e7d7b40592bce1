"""Reading aloud on the server: espeak-ng through the two endpoints, with
their refusals, and a round trip through the recogniser."""

from __future__ import annotations

import io
import json
import wave

import pytest
from django.test import Client

from chat.services.widget_identity import visitor_start, visitor_token
from inference.connection import key, redis_client
from inference.speech.audio import AudioStream
from inference.speech.recognisers import Pocketsphinx
from tests.chat.test_widget import _site
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _post(client: Client, url: str, body: dict) -> object:
    return client.post(url, json.dumps(body), content_type="application/json")


@pytest.fixture(autouse=True)
def _counts_cleared():
    """Rate counters are per user id, and ids come back between tests."""
    client = redis_client()
    for found in client.scan_iter(match=key("speech", "say", "*")):
        client.delete(found)


@pytest.fixture
def reader() -> Client:
    client = Client()
    client.force_login(UserFactory())
    return client


def _seconds(wav_bytes: bytes) -> float:
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2
        return reader.getnframes() / reader.getframerate()


def test_a_signed_in_user_gets_the_text_read_as_wav_in_english_and_chinese(reader):
    english = _post(
        reader, "/speech/say/", {"text": "Your order ships tomorrow.", "language": "en"}
    )
    assert english.status_code == 200 and english["Content-Type"] == "audio/wav"
    assert 1.0 < _seconds(english.content) < 5.0
    chinese = _post(reader, "/speech/say/", {"text": "您的订单明天发货。", "language": "zh-hans"})
    assert chinese.status_code == 200
    assert _seconds(chinese.content) > 1.0


def test_what_is_read_aloud_is_what_the_recogniser_hears(reader):
    said = _post(reader, "/speech/say/", {"text": "one two three four five", "language": "en"})
    session = Pocketsphinx().session()
    stream = AudioStream("wav", session.feed)
    stream.write(said.content)
    stream.end()
    assert stream.wait(30) and stream.error is None
    assert "two three four five" in session.finish()


def test_refusals_say_why(reader, settings):
    assert _post(Client(), "/speech/say/", {"text": "hi"}).status_code == 401
    empty = _post(reader, "/speech/say/", {"text": "  "})
    assert empty.status_code == 400 and "text" in empty.json()["error"]
    settings.SPEECH_SYNTHESIS_MAX_CHARS = 50
    long = _post(reader, "/speech/say/", {"text": "word " * 20})
    assert long.status_code == 413 and "50" in long.json()["error"]
    broken = reader.post("/speech/say/", b"{not json", content_type="application/json")
    assert broken.status_code == 400
    assert reader.get("/speech/say/").status_code == 405


def test_reading_aloud_is_rate_limited_per_reader(reader, settings):
    settings.SPEECH_SYNTHESIS_PER_MINUTE = 2
    codes = [_post(reader, "/speech/say/", {"text": "hello"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_a_widget_visitor_reads_aloud_with_a_valid_token_only():
    site = _site()
    token = visitor_token(visitor=visitor_start(site=site, token=None))
    client = Client(enforce_csrf_checks=True)
    ok = _post(
        client, "/widget/speech/say/", {"key": site.public_key, "token": token, "text": "Hello"}
    )
    assert ok.status_code == 200 and ok["Content-Type"] == "audio/wav"
    forged = _post(
        client,
        "/widget/speech/say/",
        {"key": site.public_key, "token": token[:-3] + "abc", "text": "x"},
    )
    assert forged.status_code == 403
    unknown = _post(client, "/widget/speech/say/", {"key": "nope", "token": token, "text": "x"})
    assert unknown.status_code == 403


def test_turned_off_it_is_not_found(reader, settings):
    settings.SPEECH_SYNTHESIS_ENABLED = False
    assert _post(reader, "/speech/say/", {"text": "hello"}).status_code == 404
