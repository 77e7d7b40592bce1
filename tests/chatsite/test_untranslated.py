"""The main pages in Chinese leave no English behind: every visible text and
every text read out or shown on hover, listed page by page when one is
left."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from chat.models import LanguageChoice
from chat.services.api_keys import api_key_create
from chat.services.conversations import conversation_create
from chat.services.widget_sites import widget_site_save
from models_admin.filters import filter_rule_save
from models_admin.models import ModelVersion
from models_admin.services.datasets import dataset_create
from models_admin.services.knowledge import knowledge_base_create
from tests.factories import ModelVersionFactory, UserFactory
from tests.untranslated import texts_report, untranslated

pytestmark = pytest.mark.django_db

CHINESE = {"accept-language": "zh-CN,zh;q=0.9"}

#: The dashboard's sections: the overview and each one's main pages.
DASHBOARD_PAGES = [
    "dashboard:home",
    "dashboard:usage",
    "dashboard:versions",
    "dashboard:promotions",
    "dashboard:jobs",
    "dashboard:job-new",
    "dashboard:datasets",
    "dashboard:dataset-upload",
    "dashboard:conversations",
    "dashboard:filters",
    "dashboard:filter-new",
    "dashboard:filter-hits",
    "dashboard:filter-test",
    "dashboard:knowledge",
    "dashboard:api-keys-admin",
    "dashboard:widget-sites",
    "dashboard:widget-site-new",
    "dashboard:inbox",
    "dashboard:privacy",
]


@pytest.fixture
def data() -> dict:
    """A production version, a widget site and a staff member who reads
    Chinese; the words the test made itself are allowed."""
    version = ModelVersionFactory(name="smol-prod", state=ModelVersion.State.PRODUCTION)
    site = widget_site_save(
        data={"name": "Shop", "allowed_origins": "https://shop.example", "title": "Shop help"}
    )
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    return {
        "root": root,
        "site": site,
        "allowed": [
            version.name,
            site.name,
            site.title,
            site.offline_message,
            root.get_username(),
            root.email,
            settings.SITE_NAME,
            "Shop help",
        ],
    }


def _page(client: Client, url: str, **params: str) -> str:
    response = client.get(url, params, headers=CHINESE)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def test_visitors_pages_in_chinese_have_no_english_left(data):
    client = Client()
    pages = {
        name: _page(client, reverse(name))
        for name in ("chat", "login", "signup", "password_reset", "status")
    }
    found = {name: untranslated(html, allowed=data["allowed"]) for name, html in pages.items()}
    assert not any(found.values()), "Untranslated:\n" + texts_report(found)


def test_members_and_staff_pages_in_chinese_have_no_english_left(data):
    client = Client()
    client.force_login(data["root"])
    LanguageChoice.objects.create(user=data["root"], language="zh-hans")
    names = ["chat", "account", "api-keys", "status", *DASHBOARD_PAGES]
    found = {
        name: untranslated(_page(client, reverse(name)), allowed=data["allowed"]) for name in names
    }
    assert not any(found.values()), "Untranslated:\n" + texts_report(found)


def test_the_dashboards_detail_pages_in_chinese_have_no_english_left(data):
    """A version, a filter rule, a knowledge base, a dataset, an API key, a
    widget site and a conversation under review, each on its own page."""
    root = data["root"]
    candidate = ModelVersionFactory(name="smol-cand")
    rule = filter_rule_save(
        data={"name": "银行卡", "kind": "preset", "preset": "card", "action": "mask"}, by=root
    )
    base = knowledge_base_create(name="帮助中心", user=root)
    turns = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"}]
    dataset = dataset_create(name="演示集", conversations=[turns] * 4, source="upload")
    key, _secret = api_key_create(user=root, name="笔记本")
    conversation = conversation_create(user=root, title="问候")
    client = Client()
    client.force_login(root)
    LanguageChoice.objects.create(user=root, language="zh-hans")
    pages = {
        "version": reverse("dashboard:version", args=[candidate.pk]),
        "promote": reverse("dashboard:version-promote", args=[candidate.pk]),
        "compare": reverse("dashboard:compare") + f"?v={candidate.pk}&v={candidate.pk - 1}",
        "rule": reverse("dashboard:filter-edit", args=[rule.pk]),
        "rule delete": reverse("dashboard:filter-delete", args=[rule.pk]),
        "rules import": reverse("dashboard:filters-import"),
        "knowledge base": reverse("dashboard:knowledge-base", args=[base.pk]),
        "knowledge gaps": reverse("dashboard:knowledge-gaps", args=[base.pk]),
        "knowledge delete": reverse("dashboard:knowledge-delete", args=[base.pk]),
        "dataset": reverse("dashboard:dataset", args=[dataset.pk]),
        "dataset clean": reverse("dashboard:dataset-clean", args=[dataset.pk]),
        "api key": reverse("dashboard:api-key-admin", args=[key.pk]),
        "widget site": reverse("dashboard:widget-site", args=[data["site"].pk]),
        "review": reverse("dashboard:conversation-review", args=[conversation.pk]),
        "review log": reverse("dashboard:review-log"),
    }
    # The base's reply when nothing is found, as the service stores it.
    allowed = [*data["allowed"], candidate.name, key.prefix, base.nothing_found]
    found = {
        name: untranslated(_page(client, url), allowed=allowed) for name, url in pages.items()
    }
    assert not any(found.values()), "Untranslated:\n" + texts_report(found)


def test_the_widget_frame_in_chinese_has_no_english_left(data):
    site = data["site"]
    html = _page(
        Client(),
        reverse("widget-frame"),
        key=site.public_key,
        origin="https://shop.example",
    )
    found = {"widget frame": untranslated(html, allowed=data["allowed"])}
    assert not any(found.values()), "Untranslated:\n" + texts_report(found)


def test_the_lister_finds_english_and_skips_code_and_allowed_words():
    html = (
        '<p>你好 <b>Save</b></p><input placeholder="Search here">'
        "<code>make run</code><script>alert('Hi there')</script>"
        '<option lang="en">English</option><span>API · GGUF · 模型 smol</span>'
    )
    assert untranslated(html, allowed=["smol"]) == ["Save", "Search here"]
    assert untranslated('<p>格式 "messages" 与 “badge” b4dw0rd top-p export.md</p>') == []
