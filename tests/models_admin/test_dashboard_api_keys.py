"""The dashboard's API area over HTTP: who may look and who may change a
key, the usage figures of the key list and a key's page (this month, in
all, per day) against the calls stored, sorting and filtering, limits and
revoking."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat.models import ApiKey, ApiRequest
from chat.selectors import api_month_start
from chat.services.api_keys import api_key_authenticate, api_key_create, api_key_revoke
from models_admin.services import model_version_create, model_version_promote
from tests.factories import UserFactory
from tests.models_admin.conftest import grant

pytestmark = pytest.mark.django_db

LIST = "/dashboard/api/"


@pytest.fixture
def manager(client):
    user = UserFactory(username="manager", is_staff=True)
    grant(user, "change_apikey")
    client.force_login(user)
    return user


@pytest.fixture
def key():
    key, _secret = api_key_create(user=UserFactory(username="carol"), name="carol app")
    return key


def _call(key, *, prompt=0, completion=0, at=None, **fields) -> ApiRequest:
    call = ApiRequest.objects.create(
        key=key,
        user_id=key.user_id,
        model_name="tiny",
        prompt_tokens=prompt,
        completion_tokens=completion,
        **fields,
    )
    if at is not None:
        ApiRequest.objects.filter(pk=call.pk).update(created_at=at)
    return call


def _words(fragment: str) -> list[str]:
    return re.sub(r"<[^>]+>", " ", fragment).split()


def _row(content: str, key: ApiKey) -> str:
    match = re.search(rf'<tr data-key="{key.pk}".*?</tr>', content, re.S)
    assert match, f"no row for key {key.pk}"
    return match.group(0)


def _cell(row: str, name: str) -> list[str]:
    match = re.search(rf'data-cell="{name}"[^>]*>(.*?)</td>', row, re.S)
    assert match, f"no cell {name}"
    return _words(match.group(1))


def _stats(content: str, period: str) -> dict[str, str]:
    """The stat tiles of one period ("month" or "total") of a key's page."""
    block = re.search(rf'data-testid="usage-{period}">(.*?)(?:<h3|</section>)', content, re.S)
    assert block, f"no {period} figures"
    return dict(re.findall(r'data-stat="(\w+)">([^<]*)<', block.group(1)))


def _seed_month_and_earlier(key):
    """Three calls this month (two of them errors) and two before it."""
    now = timezone.now()
    _call(key, prompt=100, completion=50, finish_reason="stop")
    _call(key, prompt=10, status_code=500, error="worker gone")
    _call(key, prompt=20, completion=5, finish_reason="error")
    _call(key, prompt=1000, completion=500, at=api_month_start() - timedelta(days=3))
    _call(key, prompt=7, completion=3, at=now - timedelta(days=70))


# --- access -------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client, key):
    detail = reverse("dashboard:api-key-admin", args=[key.pk])
    for response in (
        client.get(LIST),
        client.get(detail),
        client.post(reverse("dashboard:api-key-admin-limits", args=[key.pk]), {}),
        client.post(reverse("dashboard:api-key-admin-revoke", args=[key.pk])),
    ):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    key.refresh_from_db()
    assert key.active


def test_accounts_that_are_not_staff_are_refused(client, key):
    member = UserFactory(username="member")
    grant(member, "change_apikey")  # a permission alone does not open the dashboard
    client.force_login(member)
    for url in (LIST, reverse("dashboard:api-key-admin", args=[key.pk])):
        assert client.get(url).status_code == 403, url
    limits = reverse("dashboard:api-key-admin-limits", args=[key.pk])
    assert client.post(limits, {"rate_limit_per_minute": "1"}).status_code == 403
    revoke = reverse("dashboard:api-key-admin-revoke", args=[key.pk])
    assert client.post(revoke).status_code == 403
    key.refresh_from_db()
    assert key.active and key.rate_limit_per_minute is None


def test_the_dashboard_links_to_the_area(client, viewer):
    content = client.get(reverse("dashboard:home")).content.decode()
    assert f'<a href="{LIST}" >API</a>' in content
    page = client.get(LIST).content.decode()
    assert f'<a href="{LIST}" aria-current="page">API</a>' in page


def test_a_missing_key_is_not_found(client, viewer):
    assert client.get(reverse("dashboard:api-key-admin", args=[999])).status_code == 404


# --- figures --------------------------------------------------------------------


def test_the_list_shows_each_keys_usage_this_month_and_in_all(client, viewer, key, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 42
    settings.API_MONTHLY_TOKEN_QUOTA = 0
    _seed_month_and_earlier(key)
    idle, _ = api_key_create(user=UserFactory(username="dave"), name="dave idle")
    ApiKey.objects.filter(pk=idle.pk).update(rate_limit_per_minute=7, monthly_token_quota=1000)

    content = client.get(LIST).content.decode()
    row = _row(content, key)
    assert "carol app" in row and "carol" in row and f"{key.prefix}…" in row and "active" in row
    assert _cell(row, "requests-month") == ["3"]
    assert _cell(row, "tokens-month") == ["130", "/", "55"]
    assert _cell(row, "errors-month") == ["2"]
    assert _cell(row, "requests-total") == ["5"]
    assert _cell(row, "tokens-total") == ["1,137", "/", "558"]
    assert _cell(row, "errors-total") == ["2"]
    assert "42/min default" in " ".join(_words(row))
    assert "no quota default" in " ".join(_words(row))

    idle_row = _row(content, idle)
    assert _cell(idle_row, "requests-month") == ["0"] and _cell(idle_row, "tokens-total") == [
        "0",
        "/",
        "0",
    ]
    assert "7/min" in idle_row and "1,000 tokens/month" in idle_row and "default" not in idle_row

    totals = re.search(r'data-testid="api-totals">(.*?)</section>', content, re.S).group(1)
    figures = dict(re.findall(r'data-testid="total-([\w-]+)">([^<]*)<', totals))
    assert figures == {
        "keys": "2",
        "requests": "3",
        "tokens-in": "130",
        "tokens-out": "55",
        "errors": "2",
    }


def test_a_keys_page_shows_this_month_and_in_all(client, viewer, key):
    _seed_month_and_earlier(key)
    content = client.get(reverse("dashboard:api-key-admin", args=[key.pk])).content.decode()
    assert _stats(content, "month") == {
        "requests": "3",
        "tokens_in": "130",
        "tokens_out": "55",
        "errors": "2",
    }
    assert _stats(content, "total") == {
        "requests": "5",
        "tokens_in": "1,137",
        "tokens_out": "558",
        "errors": "2",
    }


def test_a_keys_page_counts_calls_per_day_with_empty_days_as_zero(client, viewer, key):
    now = timezone.now()
    _call(key, prompt=10, completion=1)
    _call(key, prompt=200, completion=20, at=now - timedelta(days=2))
    _call(key, prompt=300, completion=30, at=now - timedelta(days=2), status_code=429)
    _call(key, prompt=9999, completion=9999, at=now - timedelta(days=40))  # outside the window
    other, _ = api_key_create(user=key.user, name="other key")
    _call(other, prompt=555, completion=55)  # another key's calls do not count

    response = client.get(reverse("dashboard:api-key-admin", args=[key.pk]))
    content = response.content.decode()
    rows = re.findall(r'<tr data-day="([\d-]+)"[^>]*>(.*?)</tr>', content, re.S)
    today = timezone.localdate()
    assert [day for day, _ in rows] == [
        (today - timedelta(days=n)).isoformat() for n in range(30)
    ]  # newest first
    by_day = {day: [cell for cell in _words(cells)[3:]] for day, cells in rows}
    assert by_day[today.isoformat()] == ["1", "10", "1", "0"]
    assert by_day[(today - timedelta(days=2)).isoformat()] == ["2", "500", "50", "1"]
    empty = [day for day, figures in by_day.items() if figures == ["0", "0", "0", "0"]]
    assert len(empty) == 28

    chart = json.loads(
        re.search(
            r'<script id="key-usage-chart" type="application/json">(.*?)</script>', content
        ).group(1)
    )
    assert chart["days"][0] == (today - timedelta(days=29)).isoformat()
    assert chart["days"][-1] == today.isoformat()
    assert chart["tokens_in"][-1] == 10 and chart["tokens_in"][-3] == 500
    assert chart["tokens_out"][-3] == 50 and sum(chart["tokens_in"]) == 510
    assert "js/dashboard/api_keys.js" in content and 'id="chart-key-tokens"' in content


def test_a_keys_page_lists_its_recent_requests_newest_first_by_page(client, viewer, key):
    now = timezone.now()
    calls = [
        _call(key, prompt=n, completion=1, at=now - timedelta(minutes=n), end_user=f"user-{n}")
        for n in range(30)
    ]
    calls[0].stream = True
    calls[0].ttft_s = 0.25
    calls[0].save(update_fields=["stream", "ttft_s"])
    url = reverse("dashboard:api-key-admin", args=[key.pk])

    first = client.get(url).content.decode()
    shown = [int(pk) for pk in re.findall(r'<tr data-request="(\d+)"', first)]
    assert shown == [call.pk for call in calls[:25]]
    newest = re.search(rf'<tr data-request="{calls[0].pk}">(.*?)</tr>', first, re.S).group(1)
    assert _words(newest)[2:] == ["tiny", "yes", "200", "—", "0", "1", "0.25", "s", "—", "user-0"]
    assert "Page 1 of 2" in first

    second = client.get(url, {"page": 2}).content.decode()
    shown = [int(pk) for pk in re.findall(r'<tr data-request="(\d+)"', second)]
    assert shown == [call.pk for call in calls[25:]]


def test_the_list_sorts_by_usage(client, viewer):
    heavy, _ = api_key_create(user=UserFactory(username="heavy"), name="heavy")
    chatty, _ = api_key_create(user=UserFactory(username="chatty"), name="chatty")
    old, _ = api_key_create(user=UserFactory(username="old"), name="old")
    _call(heavy, prompt=5000, completion=5000)
    for _ in range(3):
        _call(chatty, prompt=1, completion=1)
    for _ in range(5):
        _call(old, prompt=1, completion=1, at=api_month_start() - timedelta(days=1))

    def order(sort: str | None) -> list[int]:
        params = {"sort": sort} if sort else {}
        content = client.get(LIST, params).content.decode()
        return [int(pk) for pk in re.findall(r'<tr data-key="(\d+)"', content)]

    assert order(None) == [heavy.pk, chatty.pk, old.pk]  # tokens this month
    assert order("requests_month") == [chatty.pk, heavy.pk, old.pk]
    assert order("requests_total") == [old.pk, chatty.pk, heavy.pk]
    assert order("created") == [old.pk, chatty.pk, heavy.pk]


def test_the_list_filters_by_user_and_state(client, viewer):
    erin = UserFactory(username="erin")
    erin_live, _ = api_key_create(user=erin, name="erin live")
    erin_gone, _ = api_key_create(user=erin, name="erin gone")
    ApiKey.objects.filter(pk=erin_gone.pk).update(revoked_at=timezone.now())
    frank, _ = api_key_create(user=UserFactory(username="frank"), name="frank")

    def listed(**params) -> set[int]:
        content = client.get(LIST, params).content.decode()
        return {int(pk) for pk in re.findall(r'<tr data-key="(\d+)"', content)}

    assert listed() == {erin_live.pk, erin_gone.pk, frank.pk}
    assert listed(user=erin.pk) == {erin_live.pk, erin_gone.pk}
    assert listed(state="revoked") == {erin_gone.pk}
    assert listed(user=erin.pk, state="active") == {erin_live.pk}
    content = client.get(LIST, {"state": "revoked"}).content.decode()
    assert re.search(r'data-testid="total-keys">1<', content)


# --- changing a key ---------------------------------------------------------------


def test_staff_without_the_permission_see_no_form_and_cannot_change(client, viewer, key):
    content = client.get(reverse("dashboard:api-key-admin", args=[key.pk])).content.decode()
    assert 'data-testid="limits-form"' not in content
    assert 'data-testid="revoke-key"' not in content
    assert 'data-testid="read-only"' in content

    limits = reverse("dashboard:api-key-admin-limits", args=[key.pk])
    response = client.post(limits, {"rate_limit_per_minute": "1", "all_versions": "on"})
    assert response.status_code == 403
    assert client.post(reverse("dashboard:api-key-admin-revoke", args=[key.pk])).status_code == 403
    key.refresh_from_db()
    assert key.active and key.rate_limit_per_minute is None and not key.all_versions


def test_staff_with_the_permission_set_limits(client, manager, key, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 60
    url = reverse("dashboard:api-key-admin", args=[key.pk])
    assert 'data-testid="limits-form"' in client.get(url).content.decode()

    limits = reverse("dashboard:api-key-admin-limits", args=[key.pk])
    response = client.post(
        limits,
        {"rate_limit_per_minute": "5", "monthly_token_quota": "250000", "all_versions": "on"},
        follow=True,
    )
    assert response.redirect_chain == [(url, 302)]
    key.refresh_from_db()
    assert (key.rate_limit_per_minute, key.monthly_token_quota, key.all_versions) == (
        5,
        250_000,
        True,
    )
    content = response.content.decode()
    assert "saved" in content
    assert _words(re.search(r'data-testid="limit-rate">(.*?)</dd>', content).group(1)) == [
        "5",
        "requests",
        "a",
        "minute",
    ]

    # Empty fields go back to the site defaults; 0 tokens means no quota.
    client.post(limits, {"rate_limit_per_minute": "", "monthly_token_quota": "0"})
    key.refresh_from_db()
    assert (key.rate_limit_per_minute, key.monthly_token_quota, key.all_versions) == (
        None,
        0,
        False,
    )


def test_invalid_limits_are_refused_next_to_their_field(client, manager, key):
    limits = reverse("dashboard:api-key-admin-limits", args=[key.pk])
    response = client.post(limits, {"rate_limit_per_minute": "0", "monthly_token_quota": "-1"})
    assert response.status_code == 400
    content = response.content.decode()
    for name in ("rate_limit_per_minute", "monthly_token_quota"):
        field = re.search(
            rf'<div class="field invalid" data-field="{name}">(.*?)</div>\n', content, re.S
        )
        assert field and "errorlist" in field.group(1), name
    key.refresh_from_db()
    assert key.rate_limit_per_minute is None and key.monthly_token_quota is None


def test_staff_with_the_permission_revoke_a_key(client, manager):
    key, secret = api_key_create(user=UserFactory(username="gina"), name="gina app")
    url = reverse("dashboard:api-key-admin", args=[key.pk])
    assert "data-confirm=" in client.get(url).content.decode()

    revoke = reverse("dashboard:api-key-admin-revoke", args=[key.pk])
    response = client.post(revoke, follow=True)
    assert response.redirect_chain == [(url, 302)]
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api_key_authenticate(raw=secret) is None
    content = response.content.decode()
    assert "revoked." in content and 'data-testid="revoke-key"' not in content

    again = client.post(revoke, follow=True).content.decode()
    assert "already revoked" in again
    assert client.get(revoke).status_code == 405


def _ask(client, secret):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )


@pytest.fixture
def tiny(tiny_model_dir):
    version = model_version_create(name="tiny", folder=tiny_model_dir)
    model_version_promote(version=version)
    return version


def test_limits_staff_set_survive_revoking_the_key_and_minting_another(client, manager, key, tiny):
    limits = reverse("dashboard:api-key-admin-limits", args=[key.pk])
    client.post(limits, {"rate_limit_per_minute": "3", "monthly_token_quota": "1000"})
    _call(key, prompt=600, completion=400)
    api_key_revoke(key=key)
    fresh, secret = api_key_create(user=key.user, name="carol's new app")
    assert (fresh.rate_limit_per_minute, fresh.monthly_token_quota) == (3, 1000)
    response = _ask(Client(), secret)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    # The dashboard shows where the limits came from and what counts.
    page = client.get(reverse("dashboard:api-key-admin", args=[fresh.pk])).content.decode()
    assert 'data-testid="limits-carried"' in page
    owner = re.search(r'data-testid="owner-tokens-month">(.*?)<', page).group(1)
    assert _words(owner) == ["1,000"]
    # Staff loosen the new key: the owner's next key starts with that.
    client.post(
        reverse("dashboard:api-key-admin-limits", args=[fresh.pk]),
        {"rate_limit_per_minute": "30", "monthly_token_quota": "0"},
    )
    api_key_revoke(key=fresh)
    third, _secret = api_key_create(user=key.user, name="third")
    assert (third.rate_limit_per_minute, third.monthly_token_quota) == (30, 0)


def test_the_monthly_quota_counts_every_key_of_the_user(client, key, tiny, settings):
    settings.API_MONTHLY_TOKEN_QUOTA = 100
    _call(key, prompt=70, completion=30)
    api_key_revoke(key=key)
    _fresh, secret = api_key_create(user=key.user, name="again")
    response = _ask(client, secret)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    # Another user's keys are not affected.
    _other, other_secret = api_key_create(user=UserFactory(), name="other")
    assert _ask(client, other_secret).json()["error"]["code"] == "service_unavailable"
