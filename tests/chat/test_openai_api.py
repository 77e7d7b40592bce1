"""The OpenAI-compatible API: the official ``openai`` client (sync and
async, streaming and not) against a live Daphne server and a real worker;
raw HTTP for keys, errors, limits and filters; a client that disconnects
mid-stream frees the engine slot."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import httpx
import openai
import pytest
from django.test import Client

from chat.models import ApiKey, ApiRequest, Conversation, Message
from chat.services.api_keys import api_key_create, api_key_revoke
from inference.worker.wiring import (
    extra_versions_list,
    generation_store,
    output_filter,
    production_version_get,
    version_get,
)
from models_admin.filters import filter_rule_save
from models_admin.models import FilterHit
from models_admin.services import model_version_create, model_version_promote
from tests.conftest import REPO_ROOT, child_env, database_url_for_children, free_port, wait_for
from tests.conftest import worker_make as _worker_make
from tests.factories import UserFactory


def _post(client: Client, body, *, key: str | None = None, raw: bytes | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.post(
        "/v1/chat/completions",
        data=raw if raw is not None else json.dumps(body),
        content_type="application/json",
        **headers,
    )


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


# --- raw HTTP: keys, validation, limits --------------------------------------


@pytest.mark.django_db
def test_a_missing_wrong_or_revoked_key_gets_401_in_openai_s_error_shape(client, secret):
    for key in (None, "sk-wrong-key-0000000000000000", secret[:-2] + "xx"):
        response = _post(client, ASK, key=key)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert secret not in error["message"]
    api_key_revoke(key=ApiKey.objects.get())
    assert _post(client, ASK, key=secret).status_code == 401
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401


@pytest.mark.django_db
def test_the_key_is_stored_hashed_and_listed_by_prefix(secret):
    key = ApiKey.objects.get()
    assert secret.startswith("sk-") and secret.startswith(key.prefix)
    assert secret not in (key.key_hash, key.prefix) and len(key.key_hash) == 64


@pytest.mark.django_db
def test_models_lists_what_the_key_may_use_production_first(client, secret, tiny_model_dir):
    model_version_create(name="candidate", folder=tiny_model_dir)
    listing = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    assert [m["id"] for m in listing["data"]] == ["tiny"]
    ApiKey.objects.update(all_versions=True)
    listing = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    assert [m["id"] for m in listing["data"]] == ["tiny", "candidate"]
    one = client.get("/v1/models/candidate", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert one.json()["object"] == "model"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"model": "gpt-9"}, 404, "model"),
        ({"model": None}, 400, "model"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "messages[0].content[0]"),
        ({"temperature": 3}, 400, "temperature"),
        ({"temperature": "hot"}, 400, "temperature"),
        ({"top_p": 0}, 400, "top_p"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"max_completion_tokens": 10**9}, 400, "max_completion_tokens"),
        ({"n": 0}, 400, "n"),
        ({"n": 17}, 400, "n"),
        ({"best_of": 3}, 400, "best_of"),
        ({"length_penalty": 2}, 400, "length_penalty"),
        ({"use_beam_search": "yes"}, 400, "use_beam_search"),
        ({"use_beam_search": True, "n": 4, "best_of": 2}, 400, "n"),
        ({"use_beam_search": True, "best_of": 17}, 400, "best_of"),
        ({"use_beam_search": True, "early_stopping": "soon"}, 400, "early_stopping"),
        ({"use_beam_search": True, "logprobs": True}, 400, "logprobs"),
        ({"response_format": {"type": "yaml"}}, 400, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "frob"}}}},
         400, "response_format"),
        ({"response_format": {"type": "json_object"}, "use_beam_search": True}, 400,
         "response_format"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"seed": 1.5}, 400, "seed"),
        ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"tools": [{"type": "function"}]}, 400, "tools"),
        ({"frequency_penalty": 2.5}, 400, "frequency_penalty"),
        ({"presence_penalty": -2.1}, 400, "presence_penalty"),
        ({"min_p": 1.5}, 400, "min_p"),
        ({"top_k": -2}, 400, "top_k"),
        ({"top_k": 1.5}, 400, "top_k"),
        ({"repetition_penalty": 0}, 400, "repetition_penalty"),
        ({"logprobs": "yes"}, 400, "logprobs"),
        ({"top_logprobs": 3}, 400, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
        ({"unheard_of": 1}, 400, "unheard_of"),
    ],
)  # fmt: skip
def test_bad_requests_get_400_or_404_naming_the_parameter(client, secret, change, status, param):
    response = _post(client, {**ASK, **change}, key=secret)
    assert response.status_code == status, response.json()
    assert response.json()["error"]["param"] == param
    assert not ApiRequest.objects.exists()


@pytest.mark.django_db
def test_a_body_that_is_not_json_gets_400(client, secret):
    response = _post(client, None, key=secret, raw=b"{not json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_the_rate_limit_answers_429_with_retry_after(client, secret):
    ApiKey.objects.update(rate_limit_per_minute=1)
    # The first call counts (and finds no worker); the second is over the limit.
    assert _post(client, ASK, key=secret).status_code == 503
    response = _post(client, ASK, key=secret)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response["Retry-After"]) <= 60


@pytest.mark.django_db
def test_a_spent_monthly_quota_answers_429_insufficient_quota(client, secret):
    key = ApiKey.objects.get()
    key.monthly_token_quota = 100
    key.save()
    ApiRequest.objects.create(key=key, user=key.user, prompt_tokens=60, completion_tokens=40)
    response = _post(client, ASK, key=secret)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.django_db
def test_without_a_worker_the_call_fails_fast_with_503(client, secret):
    response = _post(client, ASK, key=secret)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"


# --- a live server and a real worker -------------------------------------------


@pytest.fixture
def live(transactional_db, version, redis_conn, tmp_path):
    """Daphne serving the project on the test database, and an inference
    worker thread on the tiny model."""
    worker = _worker_make(
        redis_conn,
        production_version_get,
        version_lookup=version_get,
        extra_versions=extra_versions_list,
        on_finished=generation_store,
        output_filter_factory=output_filter,
        # Room for long answers, so that one still runs when a test
        # disconnects from it.
        max_context=2048,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    port = free_port()
    log = (tmp_path / "daphne.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port),
         "chatsite.asgi:application"],
        cwd=REPO_ROOT,
        env=child_env(DATABASE_URL=database_url_for_children(), DEBUG="false",
                      SECRET_KEY="tests-only-secret-key-0123456789abcdef",
                      ALLOWED_HOSTS="127.0.0.1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    try:
        wait_for(up, timeout=60)
        wait_for(lambda: worker.state == "ready", timeout=60)
        _key, raw = api_key_create(user=UserFactory(), name="live")
        yield {"base": base, "key": raw, "worker": worker}
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        worker.stop()
        thread.join(timeout=30)


def _client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live["base"] + "/v1", api_key=live["key"], max_retries=0)


@pytest.mark.slow
def test_the_official_client_sync_and_async_streaming_and_not(live):
    client = _client(live)
    assert [m.id for m in client.models.list()] == ["tiny"]

    hello = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    completion = client.chat.completions.create(
        model="tiny",
        messages=hello,
        max_tokens=12,
        temperature=0,
        seed=3,
        user="customer-42",
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens >= 1
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )

    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=hello,
            max_completion_tokens=12,
            temperature=0,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content  # greedy: the same answer
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1

    async def both_async() -> tuple[str, str]:
        aclient = openai.AsyncOpenAI(
            base_url=live["base"] + "/v1", api_key=live["key"], max_retries=0
        )
        plain = await aclient.chat.completions.create(
            model="default", messages=hello, max_tokens=12,
            temperature=0, seed=3,
        )  # fmt: skip
        stream = await aclient.chat.completions.create(
            model="tiny", messages=hello, max_tokens=12,
            temperature=0, seed=3, stream=True,
        )  # fmt: skip
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await aclient.close()
        return plain.choices[0].message.content, "".join(parts)

    plain, streamed_async = asyncio.run(both_async())  # no loop runs in this thread
    assert plain == streamed_async == choice.message.content

    # Every call is recorded with its usage and stored as an API conversation.
    records = list(ApiRequest.objects.order_by("pk"))
    assert len(records) == 4 and all(r.completion_tokens >= 1 for r in records)
    assert records[0].end_user == "customer-42" and records[1].stream
    stored = Conversation.objects.filter(source=Conversation.Source.API)
    assert stored.count() == 4
    answers = Message.objects.filter(conversation__in=stored, role="assistant")
    wait_for(lambda: not answers.filter(status="pending").exists())
    assert set(answers.values_list("content", flat=True)) == {choice.message.content}


@pytest.mark.slow
def test_errors_come_back_as_the_client_s_exceptions(live):
    client = _client(live)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert caught.value.body["param"] == "temperature"
    bad = openai.OpenAI(base_url=live["base"] + "/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


@pytest.mark.slow
def test_filters_apply_to_the_api_and_content_filter_is_the_finish_reason(live):
    filter_rule_save(
        data={"name": "secret", "kind": "keywords", "keywords": "zylophin", "scope": "input"},
        by=None,
    )
    client = _client(live)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "say z y l o p h i n"}]
        )
    assert caught.value.body["code"] == "content_filter"
    hit = FilterHit.objects.get()
    assert (hit.surface, hit.scope) == ("api", "input")


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_frees_the_engine_slot(live):
    worker = live["worker"]
    body = {**ASK, "max_tokens": 2000, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            live["base"] + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {live['key']}"},
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(6)]
        assert any('"content"' in line for line in seen)
        assert sum(e.running for e in worker.engines.values()) == 1
    # The connection is closed: the worker stops the answer at once.
    wait_for(lambda: sum(e.running for e in worker.engines.values()) == 0, timeout=30)
    record = ApiRequest.objects.get()
    wait_for(lambda: ApiRequest.objects.get().finish_reason != "", timeout=30)
    record.refresh_from_db()
    assert record.finish_reason == "cancelled"
    answer = Message.objects.get(generation_id=record.generation_id)
    wait_for(lambda: Message.objects.get(pk=answer.pk).status == "cancelled", timeout=30)
    assert Message.objects.get(pk=answer.pk).completion_tokens < 2000
    # What was generated before the client left counts against the quota.
    wait_for(lambda: ApiRequest.objects.get().completion_tokens > 0, timeout=30)
    record.refresh_from_db()
    assert record.prompt_tokens > 0
    assert record.completion_tokens == Message.objects.get(pk=answer.pk).completion_tokens


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_is_a_400_before_any_byte(live):
    """As vLLM answers it: 400 ``context_length_exceeded``, streaming or
    not, and the official client does not retry it."""
    long = [{"role": "user", "content": "hello " * 3000}]  # the context holds 2048
    with pytest.raises(openai.BadRequestError) as caught:
        _client(live).chat.completions.create(model="tiny", messages=long, max_tokens=4)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["param"] == "messages"
    with httpx.Client(timeout=60) as http:
        response = http.post(
            live["base"] + "/v1/chat/completions",
            json={"model": "tiny", "messages": long, "stream": True},
            headers={"Authorization": f"Bearer {live['key']}"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert [r.status_code for r in ApiRequest.objects.all()] == [400, 400]
    assert not any(e.running for e in live["worker"].engines.values())


@pytest.mark.slow
def test_penalties_min_p_and_top_k_reach_the_engine_through_the_official_client(live):
    """The penalties reach the engine (negative ones make a greedy answer
    repeat what it said); top_k, min_p and repetition_penalty (vLLM's
    extras, sent as extra_body) are taken."""
    client = _client(live)
    ask = [{"role": "user", "content": "Say something long"}]
    plain = client.chat.completions.create(
        model="tiny", messages=ask, max_tokens=24, temperature=0
    )
    penalized = client.chat.completions.create(
        model="tiny",
        messages=ask,
        max_tokens=24,
        temperature=0,
        frequency_penalty=-2.0,
        presence_penalty=-2.0,
    )
    assert penalized.choices[0].message.content != plain.choices[0].message.content
    sampled = client.chat.completions.create(
        model="tiny",
        messages=ask,
        max_tokens=8,
        temperature=1.0,
        seed=5,
        extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2},
    )
    assert sampled.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=ask, max_tokens=8, extra_body={"min_p": 2}
        )
    assert caught.value.body["param"] == "min_p"


@pytest.mark.slow
def test_logprobs_come_with_the_answer_streamed_or_not(live):
    """Each token's text, bytes and log-probability with its top
    alternatives; the tokens spell the answer; streamed chunks carry the
    same entries as the whole answer (greedy)."""
    client = _client(live)
    ask = [{"role": "user", "content": "Write a few words"}]
    whole = client.chat.completions.create(
        model="tiny", messages=ask, max_tokens=10, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = whole.choices[0]
    content = choice.logprobs.content
    assert len(content) == whole.usage.completion_tokens
    # (A lone byte of a broken character is in the bytes but not the text;
    # an end-of-turn token is in the bytes too.)
    spelled = b"".join(bytes(entry.bytes) for entry in content).decode("utf-8", "replace")
    assert spelled.replace("\ufffd", "").startswith(choice.message.content.replace("\ufffd", ""))
    for entry in content:
        assert entry.logprob <= 0.0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        # Greedy: the chosen token is the most likely one.
        assert entry.token == entry.top_logprobs[0].token
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=ask,
            max_tokens=10,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
            stream=True,
        )
    )
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [
        (e.token, round(e.logprob, 5)) for e in content
    ]
    plain = client.chat.completions.create(model="tiny", messages=ask, max_tokens=4)
    assert plain.choices[0].logprobs is None


@pytest.mark.slow
def test_n_answers_and_beam_search_through_the_official_client(live):
    """n answers, streamed or not, each with its own index and finish
    reason; usage counts every answer's tokens; beam search as vLLM's
    server takes it (use_beam_search, best_of) returns its best beams."""
    client = _client(live)
    ask = [{"role": "user", "content": "Name a colour"}]
    three = client.chat.completions.create(
        model="tiny", messages=ask, max_tokens=6, temperature=1.0, seed=3, n=3
    )
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert all(c.message.content and c.finish_reason for c in three.choices)
    assert len({c.message.content for c in three.choices}) > 1
    assert three.usage.completion_tokens > 6  # every answer counted, not the first
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=ask, max_tokens=6, temperature=1.0, seed=3, n=3, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    streamed = {0: "", 1: "", 2: ""}
    ends = {}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                ends[choice.index] = choice.finish_reason
    assert streamed == {c.index: c.message.content for c in three.choices}
    assert sorted(ends) == [0, 1, 2]
    assert chunks[-1].usage.completion_tokens == three.usage.completion_tokens
    beams, again = (
        client.chat.completions.create(
            model="tiny",
            messages=ask,
            max_tokens=8,
            n=2,
            extra_body={"use_beam_search": True, "best_of": 4, "length_penalty": 1.0},
        )
        for _ in range(2)
    )
    assert [c.index for c in beams.choices] == [0, 1]
    assert beams.choices[0].message.content != beams.choices[1].message.content
    # A search, not a draw: the same beams every time.
    assert [c.message.content for c in again.choices] == [c.message.content for c in beams.choices]


@pytest.mark.slow
def test_response_format_holds_the_answer_to_json_through_the_official_client(live):
    client = _client(live)
    ask = [{"role": "user", "content": "Describe a customer"}]
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "plan": {"enum": ["free", "pro"]},
        },
        "required": ["name", "age", "plan"],
        "additionalProperties": False,
    }
    shaped = client.chat.completions.create(
        model="tiny",
        messages=ask,
        max_tokens=200,
        temperature=0.8,
        seed=1,
        n=2,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "customer", "schema": schema, "strict": True},
        },
    )
    for choice in shaped.choices:
        assert choice.finish_reason == "stop"
        data = json.loads(choice.message.content)
        assert set(data) == {"name", "age", "plan"} and data["plan"] in ("free", "pro")
        assert isinstance(data["age"], int) and len(data["name"]) <= 10
    anything = client.chat.completions.create(
        model="tiny",
        messages=ask,
        max_tokens=300,
        temperature=0,
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in anything if c.choices)
    # A random model may run out of tokens inside the object; what it wrote
    # is a JSON object's start either way.
    assert text.startswith("{")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny",
            messages=ask,
            response_format={"type": "json_schema", "json_schema": {"schema": {"type": "frob"}}},
        )
    assert caught.value.body["param"] == "response_format"


@pytest.mark.slow
def test_text_completions_with_echo_and_logprobs_through_the_official_client(live):
    """/v1/completions continues plain text (no chat template): echo
    repeats the prompt, logprobs lists every token (the prompt's too with
    echo, the first without a value) with its alternatives and offsets;
    streamed or not, n answers, usage counting them all."""
    client = _client(live)
    prompt = "The shop opens at"
    plain = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0)
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    choice = plain.choices[0]
    assert choice.text and not choice.text.startswith(prompt) and choice.logprobs is None
    echoed = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=6, temperature=0, echo=True, logprobs=3
    )
    choice = echoed.choices[0]
    assert choice.text == prompt + plain.choices[0].text
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert all(len(top) <= 3 for top in logprobs.top_logprobs[1:])
    assert logprobs.text_offset == [
        sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))
    ]
    prompt_tokens = echoed.usage.prompt_tokens
    assert len(logprobs.tokens) == prompt_tokens + echoed.usage.completion_tokens
    streamed = list(
        client.completions.create(
            model="tiny", prompt=prompt, max_tokens=6, temperature=0, echo=True, logprobs=3,
            stream=True, n=2,
        )
    )  # fmt: skip
    texts = {0: "", 1: ""}
    tokens: dict[int, list[str]] = {0: [], 1: []}
    for chunk in streamed:
        for part in chunk.choices:
            texts[part.index] += part.text
            if part.logprobs:
                tokens[part.index] += part.logprobs.tokens
    assert texts == {0: choice.text, 1: choice.text}
    assert tokens[0] == logprobs.tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt=["one", "two"], max_tokens=4)
    assert caught.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="x", logprobs=21)
    assert caught.value.body["param"] == "logprobs"
