"""CSRF protection of every HTTP endpoint.

Every pattern of the URL configuration is walked, its parameters filled
with rows the test creates, and it is sent POST, PUT, PATCH and DELETE by a
signed-in superuser without a CSRF token: each must be refused by the CSRF
check. The same POST with a token gets past the check to the view, which
shows that the refusal was the CSRF check's and that the URL is real.

Only the endpoints listed in ``EXEMPT`` skip the check, each with its
reason; a new ``csrf_exempt`` view fails these tests until it is listed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from chat.models import Conversation, DataExport, Message, WidgetVisitor
from chat.services.api_keys import api_key_create
from chat.services.conversations import conversation_create
from chat.services.messages import feedback_set
from chat.services.widget_sites import widget_site_save
from models_admin.dashboard.services.review import conversation_flag
from models_admin.filters import filter_rule_save
from models_admin.models import Dataset, ModelVersion
from models_admin.services.datasets import dataset_create
from models_admin.services.knowledge import knowledge_base_create, knowledge_file_add
from models_admin.services.training import training_job_create
from tests.factories import ModelVersionFactory, UserFactory

UNSAFE_METHODS = ("post", "put", "patch", "delete")

#: URL names that skip the CSRF check, and why that is safe.
EXEMPT = {
    "v1-models": "OpenAI-compatible API: a bearer API key, never the session cookie",
    "v1-model": "OpenAI-compatible API: a bearer API key, never the session cookie",
    "v1-chat-completions": "OpenAI-compatible API: a bearer API key, never the session cookie",
    "v1-completions": "OpenAI-compatible API: a bearer API key, never the session cookie",
    "v1-not-found": "OpenAI-compatible API: answers 404 to every method, changes nothing",
    "widget-speech-say": "the widget's visitor token in the body authenticates it, no cookie; "
    "it only reads text aloud and changes nothing",
}


@dataclass(frozen=True)
class Endpoint:
    """One URL pattern: its full name, the path with its parameters
    filled in, and its view."""

    name: str
    path: str
    callback: Callable[..., Any]


def _named_groups_fill(regex: str, values: dict[str, str]) -> str:
    """Replace each ``(?P<name>...)`` group of a regex with its value."""
    out, index = [], 0
    for match in re.finditer(r"\(\?P<(\w+)>", regex):
        if match.start() < index:
            continue  # a group nested in one already replaced
        depth, end = 1, match.end()
        while depth:
            char = regex[end]
            if char == "\\":
                end += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            end += 1
        out += [regex[index : match.start()], values[match.group(1)]]
        index = end
    out.append(regex[index:])
    return "".join(out)


def _pattern_fill(pattern: Any, values: dict[str, str]) -> str:
    text = str(pattern.pattern)
    if pattern.pattern.__class__.__name__ == "RegexPattern":
        return _named_groups_fill(text.removeprefix("^").removesuffix("$"), values)
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], text)


def _walk(patterns: list[Any], namespace: str) -> Iterator[tuple[str, list[Any], URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            for name, chain, leaf in _walk(pattern.url_patterns, inner):
                yield name, [pattern, *chain], leaf
        else:
            name = pattern.name or ""
            full = f"{namespace}:{name}" if namespace and name else name
            yield full, [pattern], pattern


def _group_names(pattern: Any) -> list[str]:
    text = str(pattern.pattern)
    if pattern.pattern.__class__.__name__ == "RegexPattern":
        return re.findall(r"\(\?P<(\w+)>", text)
    return re.findall(r"<(?:\w+:)?(\w+)>", text)


def endpoints(values_for: Callable[[str, list[str], Any], dict[str, str]]) -> list[Endpoint]:
    """Every URL pattern, with parameters from ``values_for(name, groups,
    callback)``; check that each filled path resolves to its own view."""
    found = []
    for name, chain, leaf in _walk(get_resolver().url_patterns, ""):
        groups = [group for part in chain for group in _group_names(part)]
        values = values_for(name, groups, leaf.callback) if groups else {}
        path = "/" + "".join(_pattern_fill(part, values) for part in chain)
        match = resolve(path)
        assert match.func is leaf.callback, f"{path} resolves to {match.func}, not {name}"
        found.append(Endpoint(name=name or path, path=path, callback=leaf.callback))
    return found


# --- rows behind every parameter -------------------------------------------------


@pytest.fixture
def rows() -> dict[str, Any]:
    """A row of each kind the URLs name, owned by or visible to a
    superuser."""
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    conversations = [
        [{"role": "user", "content": f"Q{n}?"}, {"role": "assistant", "content": f"A{n}."}]
        for n in range(4)
    ]
    # Before any production version: no tokenizer is loaded for statistics.
    dataset = dataset_create(
        name="shop", conversations=conversations, source=Dataset.Source.UPLOAD
    )
    version = ModelVersionFactory(name="tiny", state=ModelVersion.State.PRODUCTION)
    job = training_job_create(
        kind="finetune", dataset=dataset, params={"steps": 10}, enqueue=False
    )
    conversation = conversation_create(user=root, title="Hello")
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Hello!",
        parent=question,
        status=Message.Status.DONE,
    )
    conversation.current_leaf = answer
    conversation.save(update_fields=["current_leaf"])
    feedback_set(user=root, message=answer, rating=1)
    conversation_flag(conversation=conversation, by=root, reason="check")
    site = widget_site_save(data={"name": "Shop", "allowed_origins": "https://shop.example"})
    visitor = WidgetVisitor.objects.create(site=site, token=uuid.uuid4())
    visit = Conversation.objects.create(
        site=site, visitor=visitor, source="widget", handoff="requested"
    )
    rule = filter_rule_save(
        data={"name": "Bad", "kind": "keywords", "keywords": "badword", "action": "block"},
        by=None,
    )
    key, _secret = api_key_create(user=root, name="scripts")
    export = DataExport.objects.create(user=root, token=uuid.uuid4().hex)
    base = knowledge_base_create(name="Help")
    source = knowledge_file_add(
        base=base, filename="returns.md", data=b"# Returns\n\nWithin 30 days.\n", queue=False
    )
    return {
        "base": base,
        "source": source,
        "root": root,
        "version": version,
        "job": job,
        "dataset": dataset,
        "conversation": conversation,
        "answer": answer,
        "site": site,
        "visit": visit,
        "rule": rule,
        "key": key,
        "export": export,
    }


def url_values(rows: dict[str, Any]) -> Callable[[str, list[str], Any], dict[str, str]]:
    """Parameter values for a URL: the row it names."""
    root = rows["root"]
    by_name = {
        "dashboard:version": {"pk": rows["version"].pk},
        "dashboard:version-promote": {"pk": rows["version"].pk},
        "dashboard:version-compress": {"pk": rows["version"].pk},
        "dashboard:job": {"pk": rows["job"].pk},
        "dashboard:job-data": {"pk": rows["job"].pk},
        "dashboard:job-cancel": {"pk": rows["job"].pk},
        "dashboard:dataset": {"pk": rows["dataset"].pk},
        "dashboard:dataset-clean": {"pk": rows["dataset"].pk},
        "dashboard:conversation-review": {"pk": rows["conversation"].pk},
        "dashboard:conversation-flag": {"pk": rows["conversation"].pk},
        "dashboard:filter-edit": {"pk": rows["rule"].pk},
        "dashboard:filter-toggle": {"pk": rows["rule"].pk},
        "dashboard:filter-delete": {"pk": rows["rule"].pk},
        "dashboard:api-key-admin": {"pk": rows["key"].pk},
        "dashboard:api-key-admin-limits": {"pk": rows["key"].pk},
        "dashboard:api-key-admin-revoke": {"pk": rows["key"].pk},
        "dashboard:widget-site": {"pk": rows["site"].pk},
        "dashboard:widget-site-rotate": {"pk": rows["site"].pk},
        "dashboard:inbox-conversation": {"pk": rows["visit"].pk},
        "dashboard:inbox-take": {"pk": rows["visit"].pk},
        "dashboard:inbox-reply": {"pk": rows["visit"].pk},
        "dashboard:inbox-release": {"pk": rows["visit"].pk},
        "dashboard:inbox-close": {"pk": rows["visit"].pk},
        "dashboard:knowledge-base": {"pk": rows["base"].pk},
        "dashboard:knowledge-delete": {"pk": rows["base"].pk},
        "dashboard:knowledge-rebuild": {"pk": rows["base"].pk},
        "dashboard:knowledge-upload": {"pk": rows["base"].pk},
        "dashboard:knowledge-urls": {"pk": rows["base"].pk},
        "dashboard:knowledge-gaps": {"pk": rows["base"].pk},
        "dashboard:knowledge-ask": {"pk": rows["base"].pk},
        "dashboard:knowledge-source-fetch": {
            "pk": rows["base"].pk,
            "source_pk": rows["source"].pk,
        },
        "dashboard:knowledge-source-delete": {
            "pk": rows["base"].pk,
            "source_pk": rows["source"].pk,
        },
        "password_reset_confirm": {
            "uidb64": urlsafe_base64_encode(force_bytes(root.pk)),
            "token": default_token_generator.make_token(root),
        },
        "api-key-revoke": {"key_id": rows["key"].pk},
        "data-export-download": {"token": rows["export"].token},
        "conversation": {"conversation_id": rows["conversation"].pk},
        "api-conversation": {"conversation_id": rows["conversation"].pk},
        "api-conversation-branch": {"conversation_id": rows["conversation"].pk},
        "api-conversation-export": {"conversation_id": rows["conversation"].pk, "fmt": "md"},
        "api-feedback": {"message_id": rows["answer"].pk},
        "api-tokens": {"message_id": rows["answer"].pk},
        "v1-model": {"model_id": rows["version"].name},
        "v1-not-found": {"path": "embeddings"},
        "javascript-catalog": {"language": "en"},
        "admin:auth_user_password_change": {"id": root.pk},
        "admin:view_on_site": {
            "content_type_id": ContentType.objects.get_for_model(root).pk,
            "object_id": root.pk,
        },
    }

    def values_for(name: str, groups: list[str], callback: Any) -> dict[str, str]:
        if name in by_name:
            return {group: str(value) for group, value in by_name[name].items()}
        model_admin = getattr(callback, "model_admin", None)
        if groups == ["object_id"] and model_admin is not None:
            # The admin's own views of one object: its first row, or a
            # missing one (the view answers that itself).
            first = model_admin.model._default_manager.order_by("pk").first()
            return {"object_id": str(first.pk if first is not None else 1)}
        if groups == ["app_label"]:
            return {"app_label": "chat"}
        if groups == ["url"]:
            return {"url": "no-such-page/"}
        raise AssertionError(
            f"The URL {name or '(unnamed)'} takes {groups}: add the row it names to url_values."
        )

    return values_for


def is_csrf_refusal(response: Any) -> bool:
    return response.status_code == 403 and b"CSRF verification failed" in response.content


def _superuser_client(root: Any, *, with_token: bool) -> tuple[Client, dict[str, str]]:
    client = Client(enforce_csrf_checks=True)
    headers: dict[str, str] = {}
    if with_token:
        client.get("/accounts/login/")  # sets the CSRF cookie
        headers["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    client.force_login(root)
    return client, headers


# --- the tests ------------------------------------------------------------------


@pytest.mark.django_db
def test_every_endpoint_refuses_unsafe_methods_without_a_csrf_token(rows):
    client, _headers = _superuser_client(rows["root"], with_token=False)
    found = endpoints(url_values(rows))
    assert len(found) > 50  # the dashboard, the chat, accounts and the admin
    missed = []
    for endpoint in found:
        if endpoint.name in EXEMPT:
            continue
        for method in UNSAFE_METHODS:
            response = getattr(client, method)(endpoint.path)
            if not is_csrf_refusal(response):
                missed.append(f"{method.upper()} {endpoint.path} -> {response.status_code}")
    assert not missed, "Answered without a CSRF token:\n" + "\n".join(missed)


@pytest.mark.django_db
def test_with_a_token_the_same_post_reaches_the_view(rows):
    """The refusals above come from the CSRF check, not from the views:
    with a token each POST gets past it."""
    refused = []
    for endpoint in endpoints(url_values(rows)):
        if endpoint.name in EXEMPT:
            continue
        # A client each: some of these posts sign out or change the password.
        client, headers = _superuser_client(rows["root"], with_token=True)
        # An empty form: no view acts on it (the admin deletes only on a
        # non-empty confirmation).
        response = client.post(
            endpoint.path,
            data="",
            content_type="application/x-www-form-urlencoded",
            **headers,  # type: ignore[arg-type]
        )
        if is_csrf_refusal(response):
            refused.append(endpoint.path)
    assert not refused, "Refused even with a token:\n" + "\n".join(refused)


@pytest.mark.django_db
def test_only_the_listed_endpoints_skip_the_csrf_check(rows):
    exempt_views = {
        endpoint.name
        for endpoint in endpoints(url_values(rows))
        if getattr(endpoint.callback, "csrf_exempt", False)
    }
    assert exempt_views == set(EXEMPT), (
        "csrf_exempt views changed; list each in EXEMPT with why cookies cannot authenticate it"
    )


@pytest.mark.django_db
def test_the_exempt_api_does_not_accept_the_session_cookie(rows):
    """The API skips the CSRF check because a signed-in browser's cookie
    alone is worth nothing there: every call needs a bearer key."""
    client, _headers = _superuser_client(rows["root"], with_token=False)
    by_name = {endpoint.name: endpoint for endpoint in endpoints(url_values(rows))}
    # The widget's reading aloud takes a visitor token, not the cookie.
    spoken = client.post(
        by_name["widget-speech-say"].path, data="{}", content_type="application/json"
    )
    assert spoken.status_code == 403
    for name in [name for name in EXEMPT if name.startswith("v1-")]:
        path = by_name[name].path
        # The models endpoints take GET only, completions POST only.
        readable = client.get(path)
        assert readable.status_code in (401, 405), (name, readable.status_code)
        if readable.status_code == 401:
            assert readable.json()["error"]["code"] == "invalid_api_key"
        for method in UNSAFE_METHODS:
            response = getattr(client, method)(path, data="{}", content_type="application/json")
            assert response.status_code in (401, 405), (name, method, response.status_code)
    completion = client.post(
        by_name["v1-chat-completions"].path,
        data='{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}',
        content_type="application/json",
    )
    assert completion.status_code == 401
    assert completion.json()["error"]["code"] == "invalid_api_key"
    assert client.get(by_name["v1-models"].path).status_code == 401
