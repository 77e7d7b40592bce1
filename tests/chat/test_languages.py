"""Languages: the browser's, a user's own choice, the switcher, the widget's
site setting, sockets and mails in Chinese, and the catalogues themselves."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polib
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import translation

from chat.languages import catalogues_compile, language_from_accept
from chat.models import LanguageChoice
from chat.services.widget_sites import widget_site_save
from chatsite.asgi import application
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CATALOGUES = sorted(Path(django_settings.BASE_DIR, "locale").glob("*/LC_MESSAGES/*.po"))
CHINESE = "zh-CN,zh;q=0.9,en;q=0.5"
TIMEOUT = 30


def _lang(response) -> str:
    match = re.search(r'<html lang="([^"]+)"', response.content.decode())
    assert match, "no <html lang>"
    return match.group(1)


# --- requests ------------------------------------------------------------------


def test_the_browser_asking_for_chinese_gets_chinese(client):
    """Accept-Language zh-CN is served by zh-hans: the page, its lang and
    its script catalogue."""
    response = client.get(reverse("login"), headers={"accept-language": CHINESE})

    assert _lang(response) == "zh-hans"
    assert response["Content-Language"] == "zh-hans"
    page = response.content.decode()
    assert "登录" in page
    assert "/jsi18n/zh-hans/" in page


def test_english_stays_the_default(client):
    """No Accept-Language, or English first, means English."""
    assert _lang(client.get(reverse("login"))) == "en"
    english = client.get(reverse("login"), headers={"accept-language": "en-GB,zh;q=0.5"})
    assert _lang(english) == "en"
    assert "Forgot password?" in english.content.decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN", "zh-hans"),
        ("zh-Hans-CN", "zh-hans"),
        ("zh-SG,en;q=0.8", "zh-hans"),
        ("fr-FR, de;q=0.9", None),
        ("fr, zh-CN;q=0.5", "zh-hans"),
        ("*", None),
    ],
)
def test_accept_language_headers_pick_a_language_of_the_site(header, expected):
    assert language_from_accept(header) == expected


def test_the_script_catalogue_is_the_named_languages():
    """/jsi18n/<code>/ serves that language's catalogue; an unknown code is 404."""
    chinese = Client().get(reverse("javascript-catalog", args=["zh-hans"]))
    assert chinese.status_code == 200
    assert json.dumps("正在连接…")[1:-1] in chinese.content.decode()
    assert Client().get("/jsi18n/xx/").status_code == 404


def test_a_visitor_switches_language_with_the_switcher(client):
    """The switcher on the login page keeps the choice in a cookie and goes
    back where the visitor was."""
    page = client.get(reverse("login")).content.decode()
    assert 'data-testid="language-form"' in page

    response = client.post(
        reverse("set_language"), {"language": "zh-hans", "next": reverse("signup")}
    )

    assert response.status_code == 302
    assert response.url == reverse("signup")
    assert client.cookies[django_settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert _lang(client.get(reverse("signup"))) == "zh-hans"
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert _lang(client.get(reverse("signup"), headers={"accept-language": CHINESE})) == "en"


def test_a_users_choice_wins_over_the_browser_and_persists(client):
    """Chosen on the account page, the language is kept with the account:
    it applies in another browser asking for English, after logging in."""
    user = UserFactory()
    client.force_login(user)
    response = client.post(
        reverse("set_language"), {"language": "zh-hans", "next": reverse("account")}
    )
    assert response.status_code == 302
    assert LanguageChoice.objects.get(user=user).language == "zh-hans"

    other = Client()
    login = other.post(
        reverse("login"),
        {"username": user.username, "password": "correct horse battery staple"},
        headers={"accept-language": "en-US"},
    )
    assert login.status_code == 302
    page = other.get(reverse("account"), headers={"accept-language": "en-US"})
    assert _lang(page) == "zh-hans"
    assert "您的账户" in page.content.decode()
    assert 'value="zh-hans" lang="zh-hans" selected' in page.content.decode()


def test_following_the_browser_again_forgets_the_choice(client):
    user = UserFactory()
    LanguageChoice.objects.create(user=user, language="zh-hans")
    client.force_login(user)
    assert _lang(client.get(reverse("account"))) == "zh-hans"

    client.post(reverse("set_language"), {"language": "", "next": reverse("account")})

    assert not LanguageChoice.objects.filter(user=user).exists()
    assert _lang(client.get(reverse("account"))) == "en"
    assert _lang(client.get(reverse("account"), headers={"accept-language": CHINESE})) == (
        "zh-hans"
    )


def test_the_password_reset_mail_is_in_chinese(client):
    """The mail and its subject follow the language of the page that asked."""
    UserFactory(email="reset@example.com")

    client.post(
        reverse("password_reset"),
        {"email": "reset@example.com"},
        headers={"accept-language": CHINESE},
    )

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject.startswith("重置您在")
    assert "要设置新密码" in message.body
    assert "If you did not ask" not in message.body


def test_numbers_and_dates_follow_the_language():
    """Django's own formats: Chinese dates on a page in Chinese."""
    from datetime import date

    from django.utils.formats import date_format

    with translation.override("zh-hans"):
        assert date_format(date(2026, 3, 9), "DATE_FORMAT") == "2026年3月9日"


# --- the widget ----------------------------------------------------------------


def _site(**data):
    base = {"name": "Shop", "allowed_origins": "https://shop.example"}
    return widget_site_save(data={**base, **data})


def _frame(client, site, **headers):
    return client.get(
        reverse("widget-frame"),
        {"key": site.public_key, "origin": "https://shop.example"},
        headers=headers,
    )


def test_the_widget_follows_its_sites_language_else_the_browser(client):
    browser = _site()
    chinese = _site(language="zh-hans")
    english = _site(language="en")

    assert _lang(_frame(client, browser)) == "en"
    assert _lang(_frame(client, browser, accept_language=CHINESE)) == "zh-hans"
    frame = _frame(client, chinese)
    assert _lang(frame) == "zh-hans"
    assert "转人工" in frame.content.decode()
    assert "/jsi18n/zh-hans/" in frame.content.decode()
    assert _lang(_frame(client, english, accept_language=CHINESE)) == "en"

    config = client.get(
        reverse("widget-config"),
        {"key": chinese.public_key},
        headers={"origin": "https://shop.example"},
    ).json()
    assert config["labels"]["close"] == "关闭聊天"


def test_a_widget_site_refuses_an_unknown_language():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        _site(language="tlh")
    assert "language" in refused.value.message_dict


# --- sockets -------------------------------------------------------------------


async def _socket(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application,
        path,
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), *headers],
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_socket_error_arrives_in_the_browsers_language():
    """An anonymous chat socket is told to log in, in Chinese."""
    communicator = await _socket("/ws/chat/", (b"accept-language", CHINESE.encode()))
    frame = await communicator.receive_json_from(timeout=TIMEOUT)
    assert frame["code"] == "auth"
    assert frame["error"] == "请登录后再聊天。"
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_users_socket_speaks_their_language_and_the_widget_its_sites():
    user = await sync_to_async(UserFactory)()
    await sync_to_async(LanguageChoice.objects.create)(user=user, language="zh-hans")

    @sync_to_async
    def cookie() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies[django_settings.SESSION_COOKIE_NAME].value

    session = await cookie()
    communicator = await _socket(
        "/ws/chat/",
        (b"accept-language", b"en-US"),
        (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode()),
    )
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
    await communicator.send_to(text_data="{nope")
    assert (await communicator.receive_json_from(timeout=TIMEOUT))["error"] == (
        "该消息帧不是有效的 JSON。"
    )
    await communicator.disconnect()

    site = await sync_to_async(_site)(language="zh-hans")
    widget = await _socket(f"/ws/widget/?key={site.public_key}&origin=https://shop.example")
    await widget.send_json_to({"type": "message.send", "content": "hi"})
    assert (await widget.receive_json_from(timeout=TIMEOUT))["error"] == (
        "请先使用您的令牌发送 hello。"
    )
    await widget.disconnect()


# --- the catalogues ------------------------------------------------------------


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_message_is_translated_and_none_is_fuzzy(path):
    catalogue = polib.pofile(str(path))
    untranslated = [e.msgid for e in catalogue.untranslated_entries() if not e.obsolete]
    fuzzy = [e.msgid for e in catalogue.fuzzy_entries()]
    assert not untranslated, untranslated
    assert not fuzzy, fuzzy
    placeholder = re.compile(r"%\([a-z_]+\)[sdr]|\{[a-z_]+\}")
    for entry in catalogue.translated_entries():
        translations = [entry.msgstr] if entry.msgstr else list(entry.msgstr_plural.values())
        for text in translations:
            assert sorted(placeholder.findall(text)) == sorted(placeholder.findall(entry.msgid)), (
                entry.msgid
            )


def test_both_catalogues_are_there():
    names = {(p.parent.parent.name, p.name) for p in CATALOGUES}
    assert names >= {("zh_Hans", "django.po"), ("zh_Hans", "djangojs.po")}


def test_the_compile_command_builds_catalogues_from_scratch(tmp_path, settings):
    """Without any .mo, the command writes one per .po that gettext reads;
    a second run leaves them alone."""
    locale = tmp_path / "locale"
    for path in CATALOGUES:
        target = locale / path.relative_to(path.parents[2])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    settings.LOCALE_PATHS = [locale]

    call_command("translations_compile")

    compiled = sorted(locale.glob("*/LC_MESSAGES/*.mo"))
    assert [p.stem for p in compiled] == sorted(p.stem for p in CATALOGUES)
    import gettext

    catalogue = gettext.GNUTranslations((locale / "zh_Hans/LC_MESSAGES/django.mo").open("rb"))
    assert catalogue.gettext("Log in") == "登录"
    assert catalogues_compile([locale]) == []
    assert len(catalogues_compile([locale], force=True)) == len(CATALOGUES)


def test_a_stored_default_notice_reads_in_the_readers_language():
    """The default notice of a blocking rule is stored as the worker wrote
    it and shown in the page's language; a site's own notice as written."""
    from chat.selectors import stored_text_shown

    notice = django_settings.FILTER_BLOCK_NOTICE
    with translation.override("zh-hans"):
        assert stored_text_shown(notice) == "此消息已被本站的内容规则拦截。"
        assert stored_text_shown("Our own notice.") == "Our own notice."
    assert stored_text_shown(notice) == notice
