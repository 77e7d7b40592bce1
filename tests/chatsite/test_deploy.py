"""Deployment settings and security headers.

``manage.py check --deploy`` passes with the documented production
environment and names what is missing otherwise; a production process
redirects plain HTTP, sends HSTS and secure cookies; every HTML page
carries the Content-Security-Policy, nosniff and Referrer-Policy; the
widget frame keeps the frame-ancestors it sets itself.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.http import HttpResponse, JsonResponse
from django.test import Client, RequestFactory

from chat.services.widget_sites import widget_site_save
from chatsite.security import DEFAULT_POLICY, csp_apply, csp_parse
from tests.chatsite import test_csrf
from tests.conftest import REPO_ROOT

#: Variables of the developer's environment that would change the outcome.
_CLEARED = (
    "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "VAR_DIR", "BEHIND_TLS_PROXY",
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "SECURE_COOKIES",
    # The browser tests set it for the test process; no deployment does.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)  # fmt: skip

#: A row of each kind the URLs name (the CSRF tests' fixture).
rows = test_csrf.rows


def _production(**env: str) -> dict[str, str]:
    """The documented production environment, with changes."""
    values = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "chat.example.com",
        "BEHIND_TLS_PROXY": "true",
    }
    values.update(env)
    return {name: value for name, value in values.items() if value is not None}


def _run(tmp_path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    clean.update(VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="chatsite.settings")
    clean.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _check_deploy(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run(tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)


# --- check --deploy ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({}, id="documented"),
        # A copied .env.example leaves these empty: the defaults hold.
        pytest.param(
            {"SECURE_SSL_REDIRECT": "", "SECURE_HSTS_SECONDS": "", "SECURE_COOKIES": ""},
            id="empty-values",
        ),
    ],
)
def test_check_deploy_passes_with_the_production_environment(tmp_path, change):
    result = _check_deploy(tmp_path, _production(**change))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "complaints"),
    [
        ({"SECRET_KEY": None}, ["SECRET_KEY must be set when DEBUG is off"]),
        ({"SECRET_KEY": "short-and-guessable"}, ["security.W009"]),
        ({"DEBUG": "true"}, ["security.W018"]),
        ({"BEHIND_TLS_PROXY": None}, ["security.W004", "security.W008"]),
        ({"SECURE_HSTS_SECONDS": "0"}, ["security.W004"]),
        ({"SECURE_HSTS_INCLUDE_SUBDOMAINS": "false"}, ["security.W005"]),
        ({"SECURE_COOKIES": "false"}, ["security.W012", "security.W016"]),
    ],
)
def test_check_deploy_fails_naming_what_production_lacks(tmp_path, change, complaints):
    result = _check_deploy(tmp_path, _production(**change))
    assert result.returncode != 0
    for complaint in complaints:
        assert complaint in result.stdout + result.stderr


# --- a production process ---------------------------------------------------------

_REQUESTS = """
import json
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

call_command("migrate", verbosity=0)
get_user_model().objects.create_user("ops", password="a long passphrase")
client = Client(HTTP_HOST="chat.example.com")
proxied = {"HTTP_X_FORWARDED_PROTO": "https"}
plain = client.get("/accounts/login/")
health = client.get("/healthz")
page = client.get("/no-such-page/", **proxied)
login = client.post(
    "/accounts/login/", {"username": "ops", "password": "a long passphrase"}, **proxied
)
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "plain_hsts": plain.get("Strict-Transport-Security"),
    "health": health.status_code,
    "page": [page.status_code, dict(page.headers)],
    "login": login.status_code,
    "cookies": {
        name: {
            "secure": bool(morsel["secure"]),
            "httponly": bool(morsel["httponly"]),
            "samesite": morsel["samesite"],
        }
        for name, morsel in login.cookies.items()
    },
}))
"""


def test_a_production_process_redirects_to_https_and_sends_hsts_and_secure_cookies(tmp_path):
    result = _run(tmp_path, ["-c", _REQUESTS], _production(DATABASE_URL="sqlite://:memory:"))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://chat.example.com/accounts/login/"]
    assert seen["plain_hsts"] is None
    # Load balancers probe over plain HTTP from inside.
    assert seen["health"] == 200
    status, headers = seen["page"]
    assert status == 404
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = csp_parse(headers["Content-Security-Policy"])
    assert policy["connect-src"] == ["'self'", "wss://chat.example.com"]
    assert seen["login"] == 302
    session, csrf = seen["cookies"]["sessionid"], seen["cookies"]["csrftoken"]
    assert session == {"secure": True, "httponly": True, "samesite": "Lax"}
    # Pages' scripts read the CSRF token from its cookie.
    assert csrf == {"secure": True, "httponly": False, "samesite": "Lax"}


_DEVELOPMENT = """
import json
import django
django.setup()
from django.conf import settings
from django.test import Client

page = Client(HTTP_HOST="127.0.0.1:8000").get("/accounts/login/")
print(json.dumps({
    "status": page.status_code,
    "hsts": page.get("Strict-Transport-Security"),
    "csp": page.get("Content-Security-Policy"),
    "csrf_cookie_secure": bool(page.cookies["csrftoken"]["secure"]),
    "redirect": settings.SECURE_SSL_REDIRECT,
}))
"""


def test_the_development_default_serves_plain_http_on_localhost(tmp_path):
    result = _run(tmp_path, ["-c", _DEVELOPMENT], {})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["status"] == 200 and seen["redirect"] is False
    assert seen["hsts"] is None and seen["csrf_cookie_secure"] is False
    assert "ws://127.0.0.1:8000" in csp_parse(seen["csp"])["connect-src"]


# --- headers of every page --------------------------------------------------------


def _assert_policy(response, *, where: str) -> dict[str, list[str]]:
    assert response.get("X-Content-Type-Options") == "nosniff", where
    assert response.get("Referrer-Policy") == "same-origin", where
    assert "Content-Security-Policy" in response, where
    policy = csp_parse(response["Content-Security-Policy"])
    for name in DEFAULT_POLICY:
        assert name in policy, (where, name)
    for name in ("script-src", "style-src"):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*"} & set(policy[name]), where
    return policy


@pytest.mark.django_db
def test_every_html_page_carries_the_policy_nosniff_and_referrer_policy(rows):
    client = Client()
    client.force_login(rows["root"])
    anonymous = Client()
    html = 0
    for endpoint in test_csrf.endpoints(test_csrf.url_values(rows)):
        for who in (client, anonymous):
            response = who.get(endpoint.path)
            assert response.get("X-Content-Type-Options") == "nosniff", endpoint.path
            if response.get("Content-Type", "").startswith("text/html"):
                html += 1
                policy = _assert_policy(response, where=endpoint.path)
                if endpoint.name != "widget-frame":
                    assert policy["frame-ancestors"] == ["'none'"], endpoint.path
    assert html > 50


@pytest.mark.django_db
def test_the_default_policy_allows_no_remote_or_inline_content(client):
    policy = _assert_policy(client.get("/accounts/login/"), where="login")
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    # Pictures in answers become links; nothing is fetched from elsewhere.
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["connect-src"] == ["'self'", "ws://testserver"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_the_widget_frame_keeps_its_frame_ancestors_and_gets_the_rest(client):
    site = widget_site_save(
        data={"name": "Shop", "allowed_origins": "https://shop.example\nhttps://*.brand.example"}
    )
    frame = client.get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://shop.example"}
    )
    assert frame.status_code == 200
    assert "X-Frame-Options" not in frame
    policy = _assert_policy(frame, where="frame")
    assert policy["frame-ancestors"] == ["https://shop.example", "https://*.brand.example"]
    assert policy["script-src"] == ["'self'"]
    refused = client.get(
        "/widget/frame/", {"key": site.public_key, "origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert _assert_policy(refused, where="refused")["frame-ancestors"] == ["'none'"]
    assert client.get("/accounts/login/")["X-Frame-Options"] == "DENY"


def test_a_views_own_directives_are_kept_and_the_others_added():
    request = RequestFactory().get("/", secure=True)
    response = HttpResponse("<p>hi</p>")
    response["Content-Security-Policy"] = (
        "frame-ancestors https://a.example; IMG-SRC 'self' https://cdn.example"
    )
    csp_apply(request, response)
    policy = csp_parse(response["Content-Security-Policy"])
    assert policy["frame-ancestors"] == ["https://a.example"]
    assert policy["img-src"] == ["'self'", "https://cdn.example"]
    assert policy["connect-src"] == ["'self'", "wss://testserver"]
    assert set(policy) == set(DEFAULT_POLICY)


def test_responses_that_are_not_documents_get_no_policy():
    request = RequestFactory().get("/")
    response = JsonResponse({"ok": True})
    csp_apply(request, response)
    assert "Content-Security-Policy" not in response


@pytest.mark.django_db
def test_hsts_is_sent_on_https_requests_only(settings):
    settings.SECURE_HSTS_SECONDS = 300
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = False
    client = Client()
    assert client.get("/accounts/login/", secure=True)["Strict-Transport-Security"] == (
        "max-age=300"
    )
    assert "Strict-Transport-Security" not in client.get("/accounts/login/")


@pytest.mark.django_db
def test_debug_error_pages_are_left_without_a_policy(settings):
    """Django's debug pages are built of inline scripts and styles; they
    exist only with DEBUG on."""
    settings.DEBUG = True
    response = Client(raise_request_exception=False).get("/no-such-page/")
    assert response.status_code == 404
    assert "Content-Security-Policy" not in response
