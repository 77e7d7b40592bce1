"""The OpenAI-compatible API refuses every call without a usable key with
401 in OpenAI's error shape: a missing, wrong or revoked key, an
Authorization header that is not ``Bearer <key>``, bytes no key is made
of, and the key of a deactivated account. No refusal echoes a real key."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chat.models import ApiKey
from chat.services.api_keys import api_key_authenticate, api_key_create, api_key_revoke
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ASK = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


@pytest.fixture
def owner():
    return UserFactory(username="owner")


@pytest.fixture
def secret(owner) -> str:
    _key, raw = api_key_create(user=owner, name="scripts")
    return raw


def _calls(client: Client, authorization: str | None):
    """The three endpoints, called with this Authorization header."""
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    yield client.get("/v1/models", **headers)
    yield client.get("/v1/models/tiny", **headers)
    yield client.post(
        "/v1/chat/completions", data=json.dumps(ASK), content_type="application/json", **headers
    )


def _assert_refused(client: Client, authorization: str | None, secret: str) -> None:
    for response in _calls(client, authorization):
        assert response.status_code == 401, (authorization, response.status_code)
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key", authorization
        assert error["type"] == "invalid_request_error"
        assert secret not in response.content.decode()


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer {secret}x", id="one-character-too-many"),
        pytest.param("Bearer {secret} {secret}", id="two-keys"),
        pytest.param("{secret}", id="no-scheme"),
        pytest.param("Token {secret}", id="another-scheme"),
        pytest.param("Basic b3duZXI6cGFzc3dvcmQ=", id="basic-auth"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("Bearer    ", id="blank-key"),
        pytest.param("Bearer sk-", id="prefix-only"),
        pytest.param("Bearer SK-{rest}", id="upper-case-prefix"),
        pytest.param("Bearer sk-\x00{rest}", id="nul-byte"),
        pytest.param("Bearer sk-\u043a\u043b\u044e\u0447{rest}", id="non-ascii"),
        pytest.param("Bearer sk-' OR '1'='1", id="quote"),
        pytest.param("Bearer sk-" + "a" * 5000, id="very-long"),
    ],
)
def test_a_malformed_authorization_header_is_refused(client, secret, authorization):
    header = authorization.format(secret=secret, rest=secret[3:])
    _assert_refused(client, header, secret)


def test_a_missing_header_wrong_key_and_revoked_key_are_refused(client, secret):
    _assert_refused(client, None, secret)
    _assert_refused(client, f"Bearer {secret[:-4]}abcd", secret)
    api_key_revoke(key=ApiKey.objects.get())
    _assert_refused(client, f"Bearer {secret}", secret)


def test_the_key_of_a_deactivated_account_is_refused_until_it_is_active_again(
    client, owner, secret
):
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    _assert_refused(client, f"Bearer {secret}", secret)
    assert api_key_authenticate(raw=secret) is None
    owner.is_active = True
    owner.save(update_fields=["is_active"])
    assert api_key_authenticate(raw=secret) is not None


def test_a_signed_in_session_without_a_key_is_refused(client, owner, secret):
    """The API never falls back to the browser's session."""
    client.force_login(owner)
    _assert_refused(client, None, secret)


@pytest.mark.parametrize(
    "raw",
    ["", "sk-", "sk-\x00" + "a" * 40, "sk-" + "é" * 40, "sk-" + "a" * 10_000, "x" * 46],
)
def test_authenticate_refuses_what_no_key_looks_like_without_raising(secret, raw):
    assert api_key_authenticate(raw=raw) is None
