"""The account page for API keys over HTTP: who sees which keys, creating
a key (its secret shown once, only its hash stored), revoking one, the
usage and limits it lists and the links between the account pages."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse

from chat.models import ApiKey, ApiRequest
from chat.selectors import api_month_start
from chat.services.api_keys import api_key_authenticate, api_key_create, api_key_revoke
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PAGE = "/accounts/api-keys/"


@pytest.fixture
def alice(client):
    user = UserFactory(username="alice")
    client.force_login(user)
    return user


def _secret_shown(content: str) -> str:
    match = re.search(r'data-testid="new-key-secret">([^<]+)<', content)
    assert match, "no secret on the page"
    return html.unescape(match.group(1))


def _row(content: str, key: ApiKey) -> str:
    match = re.search(rf'<tr data-key="{key.pk}".*?</tr>', content, re.S)
    assert match, f"no row for key {key.pk}"
    return match.group(0)


def _cells(row: str) -> list[list[str]]:
    """The words of each cell of a table row."""
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    return [re.sub(r"<[^>]+>", " ", cell).split() for cell in cells]


def _call(key: ApiKey, *, prompt: int, completion: int, at=None) -> ApiRequest:
    call = ApiRequest.objects.create(
        key=key,
        user=key.user,
        model_name="tiny",
        prompt_tokens=prompt,
        completion_tokens=completion,
    )
    if at is not None:
        ApiRequest.objects.filter(pk=call.pk).update(created_at=at)
    return call


def test_the_route_is_named_api_keys():
    assert reverse("api-keys") == PAGE


def test_anonymous_visitors_are_sent_to_log_in(client):
    owner = UserFactory(username="owner")
    key, _secret = api_key_create(user=owner, name="owned")
    for response in (
        client.get(PAGE),
        client.post(PAGE, {"name": "sneaky"}),
        client.post(reverse("api-key-revoke", args=[key.pk])),
    ):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["owned"]
    key.refresh_from_db()
    assert key.active


def test_the_page_lists_only_the_users_own_keys(client, alice):
    mine, _ = api_key_create(user=alice, name="alice laptop")
    theirs, _ = api_key_create(user=UserFactory(username="bob"), name="bob server")
    response = client.get(PAGE)
    assert response.status_code == 200
    content = response.content.decode()
    assert "alice laptop" in content and f"{mine.prefix}…" in content
    assert "bob server" not in content and theirs.prefix not in content
    assert f'data-key="{theirs.pk}"' not in content


def test_creating_a_key_shows_the_secret_once_and_stores_only_its_hash(client, alice):
    response = client.post(PAGE, {"name": "  notebook  "})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    content = response.content.decode()
    secret = _secret_shown(content)
    assert "will not be shown again" in content

    key = ApiKey.objects.get(user=alice)
    assert key.name == "notebook"
    assert secret.startswith(key.prefix) and len(secret) > len(key.prefix) + 20
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in ApiKey.objects.filter(pk=key.pk).values().get().values()]
    assert all(secret not in value for value in stored)
    assert api_key_authenticate(raw=secret) == key  # the secret shown is the real one

    # Not kept anywhere a later request could read it back.
    assert all(secret not in str(value) for value in client.session.values())
    again = client.get(PAGE).content.decode()
    assert secret not in again and 'data-testid="new-key-secret"' not in again
    assert f"{key.prefix}…" in again


def test_a_blank_name_shows_an_inline_error_and_creates_nothing(client, alice):
    response = client.post(PAGE, {"name": "   "})
    assert response.status_code == 400
    content = response.content.decode()
    field = re.search(r'<div class="field">.*?</div>\s*<button', content, re.S)
    assert field and "errorlist" in field.group(0) and "required" in field.group(0)
    assert 'data-testid="new-key"' not in content
    assert not ApiKey.objects.exists()


def test_a_user_at_the_key_limit_is_told_so_next_to_the_name(client, alice, settings):
    settings.API_KEYS_PER_USER = 1
    api_key_create(user=alice, name="first")
    response = client.post(PAGE, {"name": "second"})
    assert response.status_code == 400
    content = html.unescape(response.content.decode())
    assert "You can hold 1 keys; revoke one first." in content
    assert 'data-testid="new-key"' not in content
    assert ApiKey.objects.filter(user=alice).count() == 1


def test_the_owner_revokes_a_key(client, alice):
    key, secret = api_key_create(user=alice, name="old app")
    page = client.get(PAGE).content.decode()
    assert f'data-testid="revoke-{key.pk}"' in page and "data-confirm=" in page

    response = client.post(reverse("api-key-revoke", args=[key.pk]), follow=True)
    assert response.redirect_chain == [(PAGE, 302)]
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api_key_authenticate(raw=secret) is None
    row = _row(response.content.decode(), key)
    assert "revoked" in row and "Revoke</button>" not in row
    assert "revoked." in response.content.decode()  # the flash message


def test_revoking_needs_a_post(client, alice):
    key, _ = api_key_create(user=alice, name="app")
    assert client.get(reverse("api-key-revoke", args=[key.pk])).status_code == 405
    key.refresh_from_db()
    assert key.active


def test_another_users_key_is_not_found_like_a_missing_one(client, alice):
    key, secret = api_key_create(user=UserFactory(username="bob"), name="bob app")
    assert client.post(reverse("api-key-revoke", args=[key.pk])).status_code == 404
    assert client.post(reverse("api-key-revoke", args=[key.pk + 1000])).status_code == 404
    key.refresh_from_db()
    assert key.active and api_key_authenticate(raw=secret) == key


def test_each_key_shows_this_months_usage_limits_and_state(client, alice, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 42
    settings.API_MONTHLY_TOKEN_QUOTA = 0
    busy, _ = api_key_create(user=alice, name="busy")
    capped, _ = api_key_create(user=alice, name="capped")
    ApiKey.objects.filter(pk=capped.pk).update(
        rate_limit_per_minute=5, monthly_token_quota=1000, all_versions=True
    )
    api_key_revoke(key=capped)
    _call(busy, prompt=100, completion=20)
    _call(busy, prompt=30, completion=7)
    _call(busy, prompt=5000, completion=5000, at=api_month_start() - timedelta(days=2))
    _call(capped, prompt=400, completion=100)

    content = client.get(PAGE).content.decode()
    busy_cells = _cells(_row(content, busy))
    assert busy_cells[4] == ["2"] and busy_cells[5] == ["157"]
    assert busy_cells[6] == ["42", "requests/min", "no", "monthly", "quota"]
    assert busy_cells[7] == ["active"]
    capped_cells = _cells(_row(content, capped))
    # The quota counts all of alice's keys: 157 + 500 of 1,000 tokens.
    assert capped_cells[4] == ["1"] and capped_cells[5][:2] == ["500", "66"]
    assert capped_cells[6] == [
        "5",
        "requests/min",
        "1,000",
        "tokens/month",
        "every",
        "model",
        "version",
    ]
    assert capped_cells[7] == ["revoked"]
    assert "never" in " ".join(" ".join(cell) for cell in busy_cells)  # no last use yet


def test_the_usage_snippets_point_at_this_sites_api(client, alice, settings):
    settings.ALLOWED_HOSTS = ["chat.example.org"]
    content = html.unescape(client.get(PAGE, HTTP_HOST="chat.example.org").content.decode())
    assert "curl http://chat.example.org/v1/chat/completions" in content
    assert 'OpenAI(base_url="http://chat.example.org/v1")' in content
    assert '"model": "default"' in content and 'data-copy="snippet-python"' in content


def test_the_account_pages_link_to_each_other(client, alice):
    password_page = client.get(reverse("password_change")).content.decode()
    assert f'href="{PAGE}" data-testid="api-keys-link">API keys</a>' in password_page
    keys_page = client.get(PAGE).content.decode()
    assert (
        f'href="{reverse("password_change")}" data-testid="password-link">Password</a>'
        in keys_page
    )
    assert 'aria-current="page">API keys<' in keys_page


def test_the_new_key_box_has_a_copy_button_and_the_page_its_script(client, alice):
    content = client.post(PAGE, {"name": "copy me"}).content.decode()
    assert 'data-copy="new-key-secret"' in content and 'id="new-key-secret"' in content
    assert "js/api_keys.js" in content
