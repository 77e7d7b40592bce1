"""What the OpenAI-compatible API checks at the door, before any work is
queued: every parameter (NaN, Infinity, huge numbers, wrong types), the
neutral values client wrappers send, unknown paths, request ids, and
which refusals tell the official client not to retry."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client

from chat.models import ApiKey, ApiRequest
from chat.services.api_keys import api_key_create
from models_admin.services import model_version_create, model_version_promote
from tests.factories import UserFactory


@pytest.fixture
def version(tiny_model_dir):
    version = model_version_create(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    return version


@pytest.fixture
def secret(version):
    _key, raw = api_key_create(user=UserFactory(), name="tests")
    return raw


ASK = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


def _post_raw(client: Client, raw: str, key: str):
    return client.post(
        "/v1/chat/completions",
        data=raw,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def _with(change: str) -> str:
    """ASK as JSON text with one more member written verbatim, so that
    NaN and Infinity literals reach the server as Python's json reads them."""
    return json.dumps(ASK)[:-1] + ", " + change + "}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("member", "param"),
    [
        ('"temperature": NaN', "temperature"),
        ('"temperature": Infinity', "temperature"),
        ('"top_p": NaN', "top_p"),
        ('"top_p": -Infinity', "top_p"),
        ('"max_tokens": NaN', "max_tokens"),
        ('"max_tokens": 1e308', "max_tokens"),
        ('"max_completion_tokens": 100000000000000000000000000000', "max_completion_tokens"),
        ('"seed": NaN', "seed"),
        ('"seed": 1e400', "seed"),
        ('"n": Infinity', "n"),
        ('"presence_penalty": NaN', "presence_penalty"),
        ('"frequency_penalty": Infinity', "frequency_penalty"),
        ('"stop": "' + "x" * 65 + '"', "stop"),
        ('"stop": ["ok", "' + "y" * 200 + '"]', "stop"),
        ('"stop": 7', "stop"),
        ('"stream": "yes"', "stream"),
        ('"user": 12', "user"),
        ('"metadata": {"a": NaN}', "metadata"),
        ('"metadata": {"a": 1}', "metadata"),
        ('"store": "no"', "store"),
        ('"parallel_tool_calls": 3', "parallel_tool_calls"),
        ('"logprobs": 1', "logprobs"),
        ('"top_logprobs": NaN', "top_logprobs"),
        (
            '"response_format": {"type": "json_schema", "json_schema": {"schema": NaN}}',
            "response_format",
        ),
        (
            '"response_format": {"type": "json_schema", "json_schema": {"schema": '
            '{"type": "object", "properties": {"a": {"type": "string", "minLength": 5, '
            '"maxLength": 2}}, "required": ["a"]}}}',
            "response_format",
        ),
        ('"best_of": 1e9', "best_of"),
        ('"use_beam_search": true, "best_of": 2, "n": 3', "n"),
        ('"tool_choice": "auto"', "tool_choice"),
        ('"messages": [{"role": "user", "content": "   \\n\\t "}]', "messages[0].content"),
    ],
)
def test_every_parameter_is_checked_at_the_door_with_a_400_naming_it(
    client, secret, member, param
):
    """NaN, Infinity, huge or mistyped values and 65-character stop strings
    are a 400 naming the parameter, never a 500 or a 503."""
    response = _post_raw(client, _with(member), secret)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert response["x-should-retry"] == "false"
    assert not ApiRequest.objects.exists()


@pytest.mark.django_db
def test_neutral_values_that_client_wrappers_send_are_accepted(client, secret):
    """The call goes past validation (no worker runs here: 503)."""
    neutral = {
        "logprobs": False,
        "response_format": {"type": "text"},
        "tool_choice": "none",
        "parallel_tool_calls": True,
        "store": False,
        "metadata": {"app": "crm"},
        "presence_penalty": 0.0,
        "frequency_penalty": 0,
        "stop": "s" * 64,
    }
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps({**ASK, **neutral}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "service_unavailable"


@pytest.mark.django_db
def test_unknown_v1_paths_answer_json_404_and_every_response_has_a_request_id(client, secret):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    for method, path in [
        ("get", "/v1/embeddings"),
        ("post", "/v1/embeddings"),
        ("get", "/v1/models/"),
        ("delete", "/v1/files/abc"),
    ]:
        response = getattr(client, method)(path, **auth)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert response["X-Request-Id"].startswith("req_")
    ids = set()
    for response in (
        client.get("/v1/models", **auth),
        client.get("/v1/models/nope", **auth),
        client.get("/v1/models"),
        client.post("/v1/chat/completions", data="{", content_type="application/json", **auth),
    ):
        ids.add(response["X-Request-Id"])
    assert len(ids) == 4


@pytest.mark.django_db
def test_models_default_names_the_version_behind_the_alias(client, secret):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    default = client.get("/v1/models/default", **auth)
    assert default.status_code == 200
    assert default.json()["id"] == "default" and default.json()["root"] == "tiny"
    assert client.get("/v1/models/tiny", **auth).json()["id"] == "tiny"


class _Counting:
    """The project's WSGI application, counting the requests it serves.
    Like Django's test client, it keeps the test's database connection
    open between requests."""

    def __init__(self) -> None:
        self.app = get_wsgi_application()
        self.paths: list[str] = []
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)

    def close(self) -> None:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        return self.app(environ, start_response)


@pytest.mark.django_db
def test_refusals_that_cannot_succeed_are_not_retried_by_the_official_client(request, secret):
    """The client retries 429 and 5xx twice by default; a spent quota and
    a bad parameter reach the server once each."""
    key = ApiKey.objects.get()
    key.monthly_token_quota = 10
    key.save()
    ApiRequest.objects.create(key=key, user=key.user, prompt_tokens=10)
    app = _Counting()
    request.addfinalizer(app.close)
    client = openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=secret,
        max_retries=2,
        http_client=httpx.Client(transport=httpx.WSGITransport(app=app)),
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="tiny", messages=ASK["messages"])
    assert caught.value.body["code"] == "insufficient_quota"
    assert app.paths == ["/v1/chat/completions"]
    app.paths.clear()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=ASK["messages"], stop="z" * 65)
    assert app.paths == ["/v1/chat/completions"]
