"""Request bodies no database can store, or that cannot be read as JSON,
are refused with a message saying why, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chat.models import Conversation
from chat.services.api_keys import api_key_create
from chat.services.widget_sites import widget_site_save
from chatsite.security import csp_parse
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    client = Client()
    client.force_login(UserFactory())
    return client


@pytest.mark.parametrize(
    ("text", "says"), [("a\u0000b", "NUL"), ("a\ud800b", "surrogate")], ids=["nul", "surrogate"]
)
def test_text_a_database_cannot_store_is_refused_by_name(client, text, says):
    body = json.dumps({"title": text})
    response = client.post("/api/conversations/", body, content_type="application/json")
    assert response.status_code == 400
    assert says in response.json()["error"]
    assert not Conversation.objects.exists()


def test_a_multipart_body_is_refused_as_not_json():
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory())
    client.get("/")  # the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post("/api/conversations/", {"title": "x"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]
    assert not Conversation.objects.exists()


def test_the_api_refuses_a_nul_in_a_message():
    user = UserFactory()
    _key, secret = api_key_create(user=user, name="k")
    response = Client().post(
        "/v1/chat/completions",
        json.dumps({"model": "default", "messages": [{"role": "user", "content": "a\u0000"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]


def test_the_widget_frame_may_show_the_site_s_avatar_from_its_host():
    site = widget_site_save(
        data={
            "name": "Shop",
            "allowed_origins": "https://shop.example",
            "avatar_url": "https://cdn.shop.example/face.png",
        }
    )
    response = Client().get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://shop.example"}
    )
    policy = csp_parse(response["Content-Security-Policy"])
    assert policy["img-src"] == ["'self'", "data:", "https://cdn.shop.example"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["https://shop.example"]
