"""The site's identity and front door: the landing page at ``/`` for
visitors and the chat for signed-in users, the product's name and logo from
SITE_NAME and SITE_LOGO, and the theme switch every page carries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse

from chat.models import Conversation
from chatsite.context_processors import site_identity, site_logo_url
from models_admin.models import ModelVersion
from tests.conftest import REPO_ROOT
from tests.factories import ModelVersionFactory, UserFactory

STATIC = REPO_ROOT / "static"


def _title(response) -> str:
    match = re.search(r"<title>(.*?)</title>", response.content.decode(), re.S)
    assert match, "no <title>"
    return match.group(1).strip()


def _brand(response) -> str:
    match = re.search(r'<a class="brand"[^>]*>(.*?)</a>', response.content.decode(), re.S)
    assert match, "no brand link"
    return match.group(1)


# --- The landing page --------------------------------------------------------


@pytest.mark.django_db
def test_a_visitor_gets_the_landing_page_at_the_root():
    """``/`` answers a visitor with what the site is and where to sign up
    or log in, not with a redirect to the login page."""
    response = Client().get(reverse("chat"))

    assert response.status_code == 200
    assert "landing.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert 'data-testid="landing"' in page
    assert f'href="{reverse("signup")}" data-testid="landing-signup"' in page
    assert f'href="{reverse("login")}" data-testid="landing-login"' in page
    for offer in ("stream", "searchable", "Markdown or JSON", "Fine-tuning", "widget"):
        assert offer in page
    assert 'data-testid="chat-app"' not in page


@pytest.mark.django_db
def test_the_landing_page_names_the_model_in_production():
    """The landing page says which version answers, and says so when none
    does."""
    assert "No model is answering yet" in Client().get("/").content.decode()

    ModelVersionFactory(name="candidate-x")
    ModelVersionFactory(name="helpful-7", state=ModelVersion.State.PRODUCTION)

    page = Client().get("/").content.decode()
    assert "Answering now: <strong>helpful-7</strong>" in page
    assert "candidate-x" not in page


@pytest.mark.django_db
def test_a_signed_in_user_gets_the_chat_at_the_root(client):
    """The same URL is the chat for someone signed in."""
    client.force_login(UserFactory())

    response = client.get("/")

    assert response.status_code == 200
    assert "chat/chat.html" in [t.name for t in response.templates]
    assert 'data-testid="chat-app"' in response.content.decode()
    assert "landing.html" not in [t.name for t in response.templates]


@pytest.mark.django_db
def test_a_conversation_page_still_asks_a_visitor_to_log_in():
    """``/c/<id>/`` is not a landing page: a visitor goes to the login page
    and comes back after it."""
    conversation = Conversation.objects.create(user=UserFactory())
    path = reverse("conversation", args=[conversation.pk])

    response = Client().get(path)

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={path}"


# --- Name and logo -----------------------------------------------------------


@pytest.mark.django_db
def test_the_default_name_and_logo_are_chat_and_the_favicon():
    response = Client().get(reverse("login"))

    assert _title(response) == "Log in · Chat"
    brand = _brand(response)
    assert brand.endswith("Chat")
    assert 'src="/static/favicon.svg"' in brand


@pytest.mark.django_db
@override_settings(SITE_NAME="Fernhollow Help", SITE_LOGO="img/fern.svg")
def test_site_name_and_logo_appear_in_the_brand_titles_and_account_pages():
    """SITE_NAME and SITE_LOGO brand the top bar, the page titles and the
    login and signup pages; the landing page leads with the name."""
    login = Client().get(reverse("login"))
    signup = Client().get(reverse("signup"))
    landing = Client().get("/")

    for response in (login, signup, landing):
        brand = _brand(response)
        assert 'src="/static/img/fern.svg"' in brand
        assert brand.endswith("Fernhollow Help")
        assert '<link rel="icon" href="/static/img/fern.svg">' in response.content.decode()
    assert _title(login) == "Log in · Fernhollow Help"
    assert "<h1>Log in to Fernhollow Help</h1>" in login.content.decode()
    assert _title(signup) == "Sign up · Fernhollow Help"
    assert "<h1>Create your Fernhollow Help account</h1>" in signup.content.decode()
    assert _title(landing).startswith("Fernhollow Help")
    assert '<h1 id="landing-title">Fernhollow Help</h1>' in landing.content.decode()
    assert ">Chat<" not in landing.content.decode()


@pytest.mark.django_db
@override_settings(SITE_NAME="Fernhollow Help")
def test_signed_in_pages_carry_the_name_too(client):
    client.force_login(UserFactory())

    response = client.get(reverse("password_change"))

    assert _title(response) == "Change password · Fernhollow Help"
    assert _brand(response).endswith("Fernhollow Help")


@pytest.mark.django_db
@override_settings(SITE_NAME="<Acme & Co>")
def test_the_name_is_escaped_like_any_text():
    page = Client().get("/").content.decode()

    assert "&lt;Acme &amp; Co&gt;" in page
    assert "<Acme & Co>" not in page


@pytest.mark.parametrize(
    ("logo", "url"),
    [
        ("favicon.svg", "/static/favicon.svg"),
        ("img/logo.png", "/static/img/logo.png"),
        ("/media/logo.svg", "/media/logo.svg"),
        ("https://cdn.example.com/logo.svg", "https://cdn.example.com/logo.svg"),
        ("data:image/svg+xml;base64,PHN2Zy8+", "data:image/svg+xml;base64,PHN2Zy8+"),
    ],
)
def test_a_logo_is_a_static_path_or_a_url(logo, url):
    assert site_logo_url(logo) == url


@override_settings(SITE_NAME="Acme", SITE_LOGO="brand/acme.svg")
def test_the_context_processor_gives_every_template_the_name_and_logo():
    """product_name, not site_name: Django's login view fills site_name
    with the host, and a view's context wins."""
    context = site_identity(RequestFactory().get("/"))

    assert context == {"product_name": "Acme", "product_logo_url": "/static/brand/acme.svg"}


@override_settings(
    SITE_LOGO="not-collected.svg",
    STORAGES={
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"}
    },
)
def test_a_logo_missing_from_the_manifest_does_not_break_pages():
    """Production's manifest storage refuses a file collectstatic did not
    see; the logo URL falls back to the plain static path."""
    assert site_logo_url("not-collected.svg") == "/static/not-collected.svg"


_PRINT = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps([settings.SITE_NAME, settings.SITE_LOGO]))
"""


def _identity_from(tmp_path, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SITE_NAME", "SITE_LOGO")}
    clean.update(VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="chatsite.settings")
    clean.update(env)
    result = subprocess.run(
        [sys.executable, "-c", _PRINT],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_settings_read_name_and_logo_from_the_environment(tmp_path):
    """Set, they win; unset or empty (as in a copied .env.example), the
    defaults hold."""
    assert _identity_from(tmp_path) == ["Chat", "favicon.svg"]
    assert _identity_from(tmp_path, SITE_NAME="", SITE_LOGO=" ") == ["Chat", "favicon.svg"]
    assert _identity_from(tmp_path, SITE_NAME="Acme", SITE_LOGO="img/acme.png") == [
        "Acme",
        "img/acme.png",
    ]


def test_the_example_environment_documents_both():
    example = (REPO_ROOT / ".env.example").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    for name in ("SITE_NAME", "SITE_LOGO"):
        assert f"\n{name}=" in example
        assert f"| `{name}` |" in readme


# --- The theme ---------------------------------------------------------------


@pytest.mark.django_db
def test_every_page_sets_the_theme_before_its_stylesheets_without_inline_script():
    """theme.js is an external, blocking script at the top of <head> (the
    policy runs no inline script), after the translations it uses; the
    toggle waits for it, hidden."""
    page = Client().get(reverse("login")).content.decode()
    head = page.split("</head>")[0]

    scripts = re.findall(r"<script[^>]*>", head)
    assert scripts == ['<script src="/jsi18n/en/">', '<script src="/static/js/theme.js">']
    assert head.index("js/theme.js") < head.index('rel="stylesheet"')
    assert head.index('<meta name="color-scheme" content="light dark">') < head.index("theme.js")
    toggle = re.search(r'<button[^>]*data-testid="theme-toggle"[^>]*>', page)
    assert toggle, "no theme toggle"
    assert 'type="button"' in toggle.group(0)
    assert 'aria-label="Theme: System. Switch to Light"' in toggle.group(0)
    assert " hidden" in toggle.group(0)


@pytest.mark.django_db
def test_the_code_themes_on_the_chat_page_are_marked_for_theme_js(client):
    client.force_login(UserFactory())

    page = client.get("/").content.decode()

    assert re.search(r'github\.min\.css"[^>]*data-theme-media="light"', page)
    assert re.search(r'github-dark\.min\.css"[^>]*data-theme-media="dark"', page)


@pytest.mark.parametrize("name", ["app.css", "forms.css", "markdown.css"])
def test_each_dark_media_block_gives_way_to_a_chosen_theme(name):
    """The system's dark scheme applies only where the reader chose none
    (or dark); each block has a [data-theme="dark"] twin for a chosen
    dark theme."""
    css = (STATIC / "css" / name).read_text()
    blocks = re.findall(r"@media \(prefers-color-scheme: dark\) \{\s*([^{]+)\{", css)

    assert blocks
    for selector in blocks:
        assert ':root:not([data-theme="light"])' in selector, selector
        twin = selector.replace(':root:not([data-theme="light"])', ':root[data-theme="dark"]')
        assert twin.strip() + " {" in css
