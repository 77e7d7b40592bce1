"""The dashboard's widget sites area over HTTP: who may see, create and
change sites, the site form with the service's errors inline, the
business hours editor, the embed snippet and the identity secret."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from chat.models import WidgetSite
from chat.services.widget_identity import identity_signature
from chat.services.widget_sites import widget_site_save
from tests.factories import ModelVersionFactory, UserFactory
from tests.models_admin.conftest import grant

pytestmark = pytest.mark.django_db

LIST = reverse("dashboard:widget-sites")
NEW = reverse("dashboard:widget-site-new")
EMBED_JS = "http://testserver/static/widget/embed.js"


@pytest.fixture
def editor(client):
    user = UserFactory(username="site-editor", is_staff=True)
    grant(user, "add_widgetsite", "change_widgetsite")
    client.force_login(user)
    return user


@pytest.fixture
def site():
    return widget_site_save(
        data={
            "name": "Shop",
            "allowed_origins": "https://shop.example\nhttps://*.example.com",
            "greeting": "Hello!",
        }
    )


def _edit(site: WidgetSite) -> str:
    return reverse("dashboard:widget-site", args=[site.pk])


def _rotate(site: WidgetSite) -> str:
    return reverse("dashboard:widget-site-rotate", args=[site.pk])


def _form(**fields):
    data = {
        "name": "Docs",
        "allowed_origins": "https://docs.example",
        "enabled": "on",
        "title": "Ask us",
        "color": "#112233",
        "position": "left",
        "avatar_url": "",
        "greeting": "Hi there",
        "suggestions": "Where is my order?\nHow do I return an item?",
        "system_prompt": "You help customers of the docs site.",
        "model_version": "",
        "timezone": "UTC",
        "offline_message": "We are away.",
        "handoff_enabled": "on",
        "messages_per_minute": "12",
    }
    data.update(fields)
    return {name: value for name, value in data.items() if value is not None}


def _field_html(page: str, name: str) -> str:
    """The markup of one form field's wrapper, errors included."""
    match = re.search(rf'<div class="field[^"]*" data-field="{name}".*?\n</div>', page, re.S)
    assert match, f"no field {name}"
    return match.group(0)


def _day_html(page: str, day: str) -> str:
    match = re.search(rf'<tr data-day="{day}".*?</tr>', page, re.S)
    assert match, f"no day {day}"
    return match.group(0)


# --- access -------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client, site):
    for url in (LIST, NEW, _edit(site)):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    assert client.post(_rotate(site)).status_code == 302


def test_accounts_that_are_not_staff_are_refused(client, site):
    client.force_login(UserFactory(username="member"))
    for url in (LIST, NEW, _edit(site)):
        assert client.get(url).status_code == 403, url
    assert client.post(_rotate(site)).status_code == 403


def test_staff_without_rights_see_sites_but_no_buttons_or_secret(client, viewer, site):
    page = client.get(LIST).content.decode()
    assert "Shop" in page and site.public_key in page
    assert 'data-testid="new-site"' not in page

    detail = client.get(_edit(site))
    assert detail.status_code == 200
    text = detail.content.decode()
    assert 'data-testid="read-only"' in text
    for testid in ("save-site", "rotate-secret", "secret"):
        assert f'data-testid="{testid}"' not in text
    assert site.identity_secret not in text
    assert 'data-testid="secret-hidden"' in text
    assert "disabled" in _field_html(text, "name")
    # The snippet is not a secret: viewers may hand it to a web developer.
    assert site.public_key in html.unescape(text)


def test_staff_without_rights_cannot_create_edit_or_rotate(client, viewer, site):
    secret = site.identity_secret
    refused = [
        client.get(NEW),
        client.post(NEW, _form()),
        client.post(_edit(site), _form(name="Renamed")),
        client.post(_rotate(site)),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    site.refresh_from_db()
    assert (site.name, site.identity_secret) == ("Shop", secret)
    assert WidgetSite.objects.count() == 1


def test_adding_sites_does_not_allow_changing_them(client, site):
    user = UserFactory(username="adder", is_staff=True)
    grant(user, "add_widgetsite")
    client.force_login(user)
    assert 'data-testid="new-site"' in client.get(LIST).content.decode()
    assert client.post(NEW, _form()).status_code == 302
    assert client.post(_edit(site), _form(name="Renamed")).status_code == 403
    assert client.post(_rotate(site)).status_code == 403
    site.refresh_from_db()
    assert site.name == "Shop"


def test_the_nav_links_to_the_widget_area(client, viewer):
    page = client.get(LIST).content.decode()
    assert f'href="{LIST}"' in page
    assert 'aria-current="page">Widget</a>' in page


# --- the list -------------------------------------------------------------------


def test_the_list_shows_origins_state_and_counts(client, viewer, site):
    from chat.models import Conversation, WidgetVisitor

    visitor = WidgetVisitor.objects.create(site=site, token="00000000-0000-0000-0000-000000000001")
    WidgetVisitor.objects.create(site=site, token="00000000-0000-0000-0000-000000000002")
    Conversation.objects.create(site=site, visitor=visitor, source="widget", handoff="requested")
    Conversation.objects.create(site=site, visitor=visitor, source="widget", handoff="closed")
    widget_site_save(data={"name": "Blog", "allowed_origins": "https://blog.example"})
    widget_site_save(data={"enabled": False}, site=site)

    page = client.get(LIST).content.decode()
    row = re.search(rf'<tr data-site="{site.pk}".*?</tr>', page, re.S).group(0)
    assert "https://shop.example" in row and "https://*.example.com" in row
    assert "Off" in row
    cells = re.findall(r'<td class="num">(.*?)</td>', row, re.S)
    assert [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells] == ["2", "2", "1"]
    assert "Blog" in page


# --- creating and editing ---------------------------------------------------------


def test_creating_a_site_saves_every_field_and_shows_its_page(client, editor):
    version = ModelVersionFactory(name="support-v2")
    response = client.post(
        NEW,
        _form(
            allowed_origins="https://Docs.Example/\nhttps://*.docs.example",
            model_version=str(version.pk),
        ),
    )
    site = WidgetSite.objects.get(name="Docs")
    assert response.status_code == 302
    assert response["Location"] == _edit(site)
    assert site.origin_list() == ["https://docs.example", "https://*.docs.example"]
    assert site.public_key.startswith("wk_") and len(site.identity_secret) == 64
    assert (site.title, site.color, site.position) == ("Ask us", "#112233", "left")
    assert site.suggestion_list() == ["Where is my order?", "How do I return an item?"]
    assert site.model_version == version
    assert site.messages_per_minute == 12
    assert site.enabled and site.handoff_enabled
    assert site.business_hours == {}

    page = client.get(response["Location"]).content.decode()
    assert "created" in page
    assert 'data-testid="save-site"' in page and 'data-testid="rotate-secret"' in page


@pytest.mark.parametrize("origin", ["ftp://x", "https://exa mple.com"])
def test_origins_that_are_not_origins_are_refused_inline(client, editor, origin):
    response = client.post(NEW, _form(allowed_origins=f"https://fine.example\n{origin}"))
    assert response.status_code == 400
    field = html.unescape(_field_html(response.content.decode(), "allowed_origins"))
    assert f"Not an origin: '{origin}'" in field
    assert "https://fine.example" in field  # the typed value stays
    assert not WidgetSite.objects.exists()


@pytest.mark.parametrize(
    "avatar",
    [
        "https://x;script-src *@evil.example/a.png",
        "https://x;script-src:*@evil.example/a.png",
        "https://user:pass@cdn.example/a.png",
        "https://cdn.example/a.png;script-src",
        "https://cdn.example/a,b.png",
        "https://cdn.example/a'.png",
        'https://cdn.example/a".png',
        "https://cdn.example/a b.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "ftp://cdn.example/a.png",
        "//cdn.example/a.png",
    ],
)
def test_avatar_urls_that_could_reach_the_frame_policy_are_refused_inline(client, editor, avatar):
    response = client.post(NEW, _form(avatar_url=avatar))
    assert response.status_code == 400
    field = html.unescape(_field_html(response.content.decode(), "avatar_url"))
    assert "without a user name, spaces, quotes" in field
    assert not WidgetSite.objects.exists()


def test_a_plain_avatar_url_is_kept(client, editor):
    response = client.post(NEW, _form(avatar_url="https://cdn.example:8443/img/a.png?v=2"))
    assert response.status_code == 302
    assert WidgetSite.objects.get().avatar_url == "https://cdn.example:8443/img/a.png?v=2"


def test_a_site_needs_at_least_one_origin(client, editor):
    response = client.post(NEW, _form(allowed_origins="  \n"))
    assert response.status_code == 400
    assert "List at least one origin." in _field_html(response.content.decode(), "allowed_origins")


def test_service_errors_land_on_their_fields(client, editor, site):
    response = client.post(_edit(site), _form(color="blue", name="Renamed"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "A colour is #RRGGBB." in _field_html(page, "color")
    assert "not saved" in page
    site.refresh_from_db()
    assert (site.name, site.color) == ("Shop", "#2f6feb")


def test_editing_keeps_the_key_and_secret_and_can_unset_the_version(client, editor):
    version = ModelVersionFactory()
    site = widget_site_save(
        data={"name": "Shop", "allowed_origins": "https://shop.example", "model_version": version}
    )
    key, secret = site.public_key, site.identity_secret
    page = client.get(_edit(site)).content.decode()
    assert f'<option value="{version.pk}" selected>' in _field_html(page, "model_version")

    response = client.post(_edit(site), _form(name="Shop 2", enabled=None, handoff_enabled=None))
    assert response.status_code == 302
    site.refresh_from_db()
    assert (site.name, site.public_key, site.identity_secret) == ("Shop 2", key, secret)
    assert site.model_version is None
    assert not site.enabled and not site.handoff_enabled


# --- business hours ---------------------------------------------------------------


def test_business_hours_round_trip_through_the_weekday_editor(client, editor, site):
    hours = {
        "mon_from_0": "09:00",
        "mon_to_0": "12:30",
        "mon_from_1": "13:30",
        "mon_to_1": "18:00",
        "fri_from_0": "10:00",
        "fri_to_0": "16:00",
    }
    response = client.post(_edit(site), _form(timezone="Europe/Paris", **hours))
    assert response.status_code == 302
    site.refresh_from_db()
    assert site.business_hours == {
        "timezone": "Europe/Paris",
        "days": {"mon": [["09:00", "12:30"], ["13:30", "18:00"]], "fri": [["10:00", "16:00"]]},
    }

    page = client.get(_edit(site)).content.decode()
    monday = _day_html(page, "mon")
    for value in ("09:00", "12:30", "13:30", "18:00"):
        assert f'value="{value}"' in monday
    assert 'value="' not in _day_html(page, "tue")
    assert '<option value="Europe/Paris" selected>' in _field_html(page, "timezone")

    # Saving the page as shown changes nothing; emptying every day opens it always.
    shown = {name: value for name, value in hours.items()}
    client.post(_edit(site), _form(timezone="Europe/Paris", **shown))
    site.refresh_from_db()
    assert site.business_hours["days"]["mon"] == [["09:00", "12:30"], ["13:30", "18:00"]]
    client.post(_edit(site), _form(timezone="Europe/Paris"))
    site.refresh_from_db()
    assert site.business_hours == {}


def test_stored_hours_with_more_spans_keep_them_all(client, editor):
    spans = [["08:00", "09:00"], ["10:00", "11:00"], ["12:00", "13:00"]]
    site = widget_site_save(
        data={
            "name": "Busy",
            "allowed_origins": "https://busy.example",
            "business_hours": {"timezone": "UTC", "days": {"wed": spans}},
        }
    )
    page = client.get(_edit(site)).content.decode()
    assert 'value="12:00"' in _day_html(page, "wed")
    data = {
        f"wed_{end}_{i}": span[j]
        for i, span in enumerate(spans)
        for j, end in enumerate(("from", "to"))
    }
    client.post(_edit(site), _form(name="Busy", **data))
    site.refresh_from_db()
    assert site.business_hours["days"]["wed"] == spans


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"tue_from_0": "09:00"}, "Give both times, or neither"),
        ({"tue_from_0": "18:00", "tue_to_0": "09:00"}, "The end comes before the start."),
        ({"tue_from_0": "9 am", "tue_to_0": "17:00"}, "Enter a valid time."),
    ],
)
def test_bad_opening_times_are_refused_on_their_day(client, editor, site, hours, message):
    response = client.post(_edit(site), _form(**hours))
    assert response.status_code == 400
    page = response.content.decode()
    assert message in _day_html(page, "tue")
    assert message not in _day_html(page, "mon")
    site.refresh_from_db()
    assert site.business_hours == {}


def test_an_unknown_time_zone_is_refused(client, editor, site):
    response = client.post(
        _edit(site), _form(timezone="Mars/Olympus", mon_from_0="09:00", mon_to_0="17:00")
    )
    assert response.status_code == 400
    assert "Mars/Olympus" in html.unescape(_field_html(response.content.decode(), "timezone"))


# --- embedding and identity ---------------------------------------------------------


def test_the_site_page_shows_the_embed_snippet_with_the_absolute_script_url(client, editor, site):
    page = html.unescape(client.get(_edit(site)).content.decode())
    snippet = f'<script src="{EMBED_JS}" data-site="{site.public_key}" async></script>'
    assert snippet in page
    assert 'data-copy="#embed-snippet"' in page


def test_the_site_page_shows_the_secret_and_how_to_sign(client, editor, site):
    page = html.unescape(client.get(_edit(site)).content.decode())
    secret_box = re.search(r'<details class="secret".*?</details>', page, re.S).group(0)
    assert site.identity_secret in secret_box
    assert identity_signature(site=site, user_id="42") in secret_box
    assert "ChatWidget.identify(userId, signature)" in page


def test_the_python_signing_example_signs_as_the_server_checks(client, editor, site, monkeypatch):
    page = client.get(_edit(site)).content.decode()
    code = html.unescape(
        re.search(r'data-testid="python-example">(.*?)</pre>', page, re.S).group(1)
    )
    monkeypatch.setenv("CHAT_WIDGET_SECRET", site.identity_secret)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (the page's own example)
    assert namespace["widget_signature"]("user-7") == identity_signature(
        site=site, user_id="user-7"
    )


def test_the_preview_opens_the_widget_page_on_an_exact_origin(client, editor, site):
    page = html.unescape(client.get(_edit(site)).content.decode())
    assert f"/widget/frame/?key={site.public_key}&origin=https%3A%2F%2Fshop.example" in page


def test_rotating_the_secret_changes_it_and_old_signatures(client, editor, site):
    before = site.identity_secret
    old_signature = identity_signature(site=site, user_id="42")
    response = client.post(_rotate(site))
    assert response.status_code == 302 and response["Location"] == _edit(site)
    site.refresh_from_db()
    assert site.identity_secret != before
    assert identity_signature(site=site, user_id="42") != old_signature
    page = client.get(_edit(site)).content.decode()
    assert "New identity secret" in page
    assert client.get(_rotate(site)).status_code == 405


def test_a_missing_site_is_a_404(client, editor):
    assert client.get(reverse("dashboard:widget-site", args=[999])).status_code == 404
    assert client.post(reverse("dashboard:widget-site-rotate", args=[999])).status_code == 404
