"""What the pages say about voice: the chat page's configuration (the
microphone shows only when dictation works) and /status/ with /readyz,
which give the reason when it does not."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _chat_config(client: Client) -> dict:
    page = client.get("/").content.decode()
    start = page.index('id="chat-config"')
    body = page[page.index(">", start) + 1 : page.index("</script>", start)]
    return json.loads(body)


@pytest.fixture
def client_in() -> Client:
    client = Client()
    client.force_login(UserFactory())
    return client


def test_without_a_speech_worker_the_page_hides_the_microphone_and_says_why(client_in):
    speech = _chat_config(client_in)["speech"]
    assert speech["dictation"] is False
    assert "No speech recogniser is running" in speech["reason"]
    assert speech["synthesis"] is True
    ready = client_in.get("/readyz").json()
    check = ready["checks"]["speech_recognition"]
    assert check["ok"] is False and "No speech recogniser" in check["error"]
    assert check["optional"] is True
    assert ready["checks"]["speech_synthesis"]["ok"] is True
    page = client_in.get("/status/").content.decode()
    assert 'data-check="speech_recognition"' in page


def test_with_a_speech_worker_the_microphone_shows(client_in, speech_worker_start):
    speech_worker_start()
    speech = _chat_config(client_in)["speech"]
    assert speech["dictation"] is True and speech["reason"] == ""
    check = client_in.get("/readyz").json()["checks"]["speech_recognition"]
    assert check["ok"] is True and check["backend"] == "pocketsphinx"


def test_dictation_turned_off_says_so(client_in, settings, speech_worker_start):
    speech_worker_start()
    settings.SPEECH_ENABLED = False
    speech = _chat_config(client_in)["speech"]
    assert speech["dictation"] is False and "turned off" in speech["reason"]
