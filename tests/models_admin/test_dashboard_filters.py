"""The dashboard's content-filter area over HTTP: who may see and change
rules, the rule form and its validation, switching and deleting, import
and export, the test panel (saved rules and a draft) and the hit audit."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation
from models_admin.filters import filter_rule_save, filter_rules_export
from models_admin.models import FilterHit, FilterRule, ReviewEvent
from tests.factories import UserFactory
from tests.models_admin.conftest import grant

pytestmark = pytest.mark.django_db

CATASTROPHIC = "(a+)+$"
LUHN_CARD = "4111 1111 1111 1111"


@pytest.fixture
def editor(client):
    user = UserFactory(username="editor", is_staff=True)
    grant(user, "add_filterrule", "change_filterrule", "delete_filterrule", "view_filterrule")
    client.force_login(user)
    return user


def _rule(**fields):
    data = {"name": "Bad words", "kind": "keywords", "keywords": "badword", "action": "block"}
    data.update(fields)
    return filter_rule_save(data=data, by=None)


@pytest.fixture
def rule():
    return _rule(notice="Please keep it civil.", priority=10)


def _form(**fields):
    data = {
        "name": "Bad words",
        "kind": "keywords",
        "keywords": "badword\nworse word",
        "whole_word": "on",
        "pattern": "",
        "preset": "",
        "scope": "both",
        "action": "block",
        "mask_with": "",
        "notice": "",
        "surface": "all",
        "priority": "100",
        "enabled": "on",
    }
    data.update(fields)
    return {name: value for name, value in data.items() if value is not None}


def _field_html(page: str, name: str) -> str:
    """The markup of one form field's wrapper, errors included."""
    match = re.search(rf'<div class="field[^"]*" data-field="{name}".*?\n</div>', page, re.S)
    assert match, f"no field {name}"
    return match.group(0)


def _test_post(client, body):
    return client.post(
        reverse("dashboard:filter-test"),
        data=json.dumps(body),
        content_type="application/json",
        HTTP_ACCEPT="application/json",
    )


def _pages(rule):
    return [
        reverse("dashboard:filters"),
        reverse("dashboard:filter-new"),
        reverse("dashboard:filter-edit", args=[rule.pk]),
        reverse("dashboard:filter-delete", args=[rule.pk]),
        reverse("dashboard:filter-test"),
        reverse("dashboard:filters-export"),
        reverse("dashboard:filters-import"),
        reverse("dashboard:filter-hits"),
    ]


# --- access -------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client, rule):
    for url in _pages(rule):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_accounts_that_are_not_staff_are_refused(client, rule):
    client.force_login(UserFactory(username="member"))
    for url in _pages(rule):
        assert client.get(url).status_code == 403, url
    assert _test_post(client, {"text": "badword"}).status_code == 403


def test_staff_without_rights_see_the_rules_but_no_buttons_to_change_them(client, viewer, rule):
    page = client.get(reverse("dashboard:filters")).content.decode()
    assert "Bad words" in page
    for testid in ("new-rule", "import", f"toggle-{rule.pk}"):
        assert f'data-testid="{testid}"' not in page
    assert 'data-testid="export"' in page and 'data-testid="test-panel"' in page

    detail = client.get(reverse("dashboard:filter-edit", args=[rule.pk]))
    assert detail.status_code == 200
    text = detail.content.decode()
    assert 'data-testid="read-only"' in text
    assert 'data-testid="save-rule"' not in text and 'data-testid="delete-rule"' not in text
    assert "disabled" in _field_html(text, "pattern")


def test_staff_without_rights_cannot_create_edit_switch_delete_or_import(client, viewer, rule):
    before = filter_rules_export()
    upload = SimpleUploadedFile("rules.json", json.dumps(before).encode())
    refused = [
        client.get(reverse("dashboard:filter-new")),
        client.post(reverse("dashboard:filter-new"), _form(name="Other")),
        client.post(reverse("dashboard:filter-edit", args=[rule.pk]), _form(name="Renamed")),
        client.post(reverse("dashboard:filter-toggle", args=[rule.pk]), {"enabled": "0"}),
        client.get(reverse("dashboard:filter-delete", args=[rule.pk])),
        client.post(reverse("dashboard:filter-delete", args=[rule.pk])),
        client.get(reverse("dashboard:filters-import")),
        client.post(reverse("dashboard:filters-import"), {"file": upload}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert filter_rules_export() == before


def test_adding_rules_does_not_allow_changing_or_deleting_them(client, rule):
    user = UserFactory(username="adder", is_staff=True)
    grant(user, "add_filterrule")
    client.force_login(user)
    page = client.get(reverse("dashboard:filters")).content.decode()
    assert 'data-testid="new-rule"' in page and f'data-testid="toggle-{rule.pk}"' not in page
    response = client.post(reverse("dashboard:filter-edit", args=[rule.pk]), _form(name="X"))
    assert response.status_code == 403
    assert client.post(reverse("dashboard:filter-delete", args=[rule.pk])).status_code == 403
    assert FilterRule.objects.get().name == "Bad words"


# --- create and edit ----------------------------------------------------------


def test_staff_with_rights_see_every_button(client, editor, rule):
    page = client.get(reverse("dashboard:filters")).content.decode()
    for testid in ("new-rule", "import", "export", "test-panel", f"toggle-{rule.pk}"):
        assert f'data-testid="{testid}"' in page
    edit = client.get(reverse("dashboard:filter-edit", args=[rule.pk])).content.decode()
    assert 'data-testid="save-rule"' in edit and 'data-testid="delete-rule"' in edit


def test_a_keyword_rule_is_created_and_listed(client, editor):
    response = client.post(reverse("dashboard:filter-new"), _form(whole_word=None))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:filters")
    rule = FilterRule.objects.get()
    assert rule.name == "Bad words" and rule.kind == "keywords"
    assert rule.keyword_list() == ["badword", "worse word"]
    assert rule.whole_word is False and rule.enabled is True
    assert rule.created_by == editor and rule.updated_by == editor

    page = client.get(response["Location"]).content.decode()
    assert "Rule “Bad words” created." in html.unescape(page)
    assert "2 keywords" in page and "<code>worse word</code>" in page
    assert ">editor<" in page  # who changed it


def test_a_rule_is_edited_and_unused_fields_are_emptied(client, editor, rule):
    response = client.post(
        reverse("dashboard:filter-edit", args=[rule.pk]),
        _form(name="Order numbers", kind="regex", pattern=r"\bORD-\d{6}\b", action="mask"),
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.kind, rule.pattern, rule.action) == (
        "Order numbers",
        "regex",
        r"\bORD-\d{6}\b",
        "mask",
    )
    assert rule.keywords == ""  # the keyword list is not carried by a regex rule
    assert rule.updated_by == editor


def test_a_catastrophic_pattern_is_refused_next_to_the_pattern_field(client, editor):
    response = client.post(
        reverse("dashboard:filter-new"),
        _form(name="Runaway", kind="regex", pattern=CATASTROPHIC, notice="Stop."),
    )
    assert response.status_code == 400
    page = response.content.decode()
    pattern = html.unescape(_field_html(page, "pattern"))
    assert "catastrophic backtracking" in pattern
    assert f'value="{CATASTROPHIC}"' in pattern  # nothing typed is lost
    assert 'value="Runaway"' in _field_html(page, "name")
    assert "Stop." in _field_html(page, "notice")
    assert "worse word" in _field_html(page, "keywords")
    assert "catastrophic" not in _field_html(page, "name")
    assert not FilterRule.objects.exists()


def test_an_invalid_pattern_is_refused(client, editor, rule):
    response = client.post(
        reverse("dashboard:filter-edit", args=[rule.pk]), _form(kind="regex", pattern="[")
    )
    assert response.status_code == 400
    assert "not a valid regular expression" in _field_html(response.content.decode(), "pattern")
    rule.refresh_from_db()
    assert rule.kind == "keywords" and rule.pattern == ""


def test_a_preset_rule_needs_a_preset(client, editor):
    response = client.post(reverse("dashboard:filter-new"), _form(kind="preset", preset=""))
    assert response.status_code == 400
    assert "Choose a preset" in _field_html(response.content.decode(), "preset")
    assert not FilterRule.objects.exists()


# --- switch and delete ----------------------------------------------------------


def test_a_rule_is_switched_off_and_on(client, editor, rule):
    url = reverse("dashboard:filter-toggle", args=[rule.pk])
    response = client.post(url, {"enabled": "0", "next": reverse("dashboard:filter-hits")})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:filter-hits")
    rule.refresh_from_db()
    assert rule.enabled is False and rule.updated_by == editor
    client.post(url, {"enabled": "1"})
    rule.refresh_from_db()
    assert rule.enabled is True
    assert client.get(url).status_code == 405


def test_deleting_a_rule_keeps_its_hits_under_its_name(client, editor, rule):
    FilterHit.objects.create(
        rule=rule, rule_name=rule.name, scope="input", action="block", excerpt="a «badword»"
    )
    confirm = client.get(reverse("dashboard:filter-delete", args=[rule.pk]))
    assert confirm.status_code == 200 and "1 hit stay" in confirm.content.decode()
    assert FilterRule.objects.filter(pk=rule.pk).exists()  # GET only asks

    response = client.post(reverse("dashboard:filter-delete", args=[rule.pk]))
    assert response.status_code == 302
    assert not FilterRule.objects.exists()
    hit = FilterHit.objects.get()
    assert hit.rule is None and hit.rule_name == "Bad words"
    hits = client.get(reverse("dashboard:filter-hits")).content.decode()
    assert "Bad words" in hits and "(deleted)" in hits


# --- import and export ----------------------------------------------------------


def test_export_then_import_gives_back_the_same_rules(client, editor, rule):
    _rule(name="Emails", kind="preset", preset="email", action="mask", scope="output")
    _rule(name="Orders", kind="regex", pattern=r"ORD-\d+", action="flag", enabled=False)
    response = client.get(reverse("dashboard:filters-export"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    today = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == f'attachment; filename="filter-rules-{today}.json"'
    exported = json.loads(response.content)
    assert [r["name"] for r in exported] == ["Bad words", "Emails", "Orders"]
    assert response.content.decode().startswith("[\n  {")  # pretty

    upload = SimpleUploadedFile("rules.json", response.content, "application/json")
    response = client.post(reverse("dashboard:filters-import"), {"file": upload, "replace": "on"})
    assert response.status_code == 302
    assert filter_rules_export() == exported
    assert not FilterRule.objects.filter(pk=rule.pk).exists()  # replaced, not kept
    page = client.get(response["Location"]).content.decode()
    assert "Imported 3 rules (replaced the rules)." in page


def test_an_import_with_one_bad_rule_saves_none_and_lists_the_error(client, editor, rule):
    rules = [
        {"name": "Fine", "kind": "keywords", "keywords": ["spam"]},
        {"name": "Runaway", "kind": "regex", "pattern": CATASTROPHIC},
        {"name": "Also fine", "kind": "preset", "preset": "card", "action": "mask"},
    ]
    upload = SimpleUploadedFile("rules.json", json.dumps(rules).encode())
    response = client.post(reverse("dashboard:filters-import"), {"file": upload})
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert "Nothing was imported: 1 problem" in page
    assert "#2 Runaway: pattern:" in page and "catastrophic backtracking" in page
    assert list(FilterRule.objects.values_list("name", flat=True)) == ["Bad words"]


def test_an_import_that_is_not_json_or_too_large_is_refused(client, editor):
    bad = SimpleUploadedFile("rules.json", b'[{"name": "x",')
    response = client.post(reverse("dashboard:filters-import"), {"file": bad})
    assert response.status_code == 400
    assert "not valid JSON" in response.content.decode()

    big = SimpleUploadedFile("rules.json", b"[" + b" " * 1_000_001 + b"]")
    response = client.post(reverse("dashboard:filters-import"), {"file": big})
    assert response.status_code == 400
    assert "the limit is 1,000,000" in response.content.decode()
    assert not FilterRule.objects.exists()


def test_replacing_on_import_needs_the_delete_permission(client, rule):
    user = UserFactory(username="adder", is_staff=True)
    grant(user, "add_filterrule")
    client.force_login(user)
    upload = SimpleUploadedFile("rules.json", json.dumps(filter_rules_export()).encode())
    response = client.post(reverse("dashboard:filters-import"), {"file": upload, "replace": "on"})
    assert response.status_code == 400
    assert "Replacing deletes the current rules" in response.content.decode()
    assert list(FilterRule.objects.values_list("pk", flat=True)) == [rule.pk]


# --- the test panel -------------------------------------------------------------


def test_the_test_panel_page_lists_the_rules(client, viewer, rule):
    _rule(name="Dormant", enabled=False)
    page = client.get(reverse("dashboard:filter-test")).content.decode()
    assert 'data-enabled="1"' in page and 'data-enabled="0"' in page
    assert re.search(rf'value="{rule.pk}"[^>]*checked', page)


def test_the_test_panel_finds_a_keyword_written_apart_and_shows_the_block(client, viewer, rule):
    text = "you are a b a d w o r d, really"
    response = _test_post(client, {"text": text, "scope": "input", "surface": "chat"})
    assert response.status_code == 200
    data = response.json()
    (match,) = data["matches"]
    assert match["rule_name"] == "Bad words" and match["action"] == "block"
    assert match["text"] == "b a d w o r d"
    assert text[match["start"] : match["end"]] == "b a d w o r d"
    assert data["verdict"] == {
        "text": "",
        "blocked": True,
        "notice": "Please keep it civil.",
        "flagged": False,
    }
    assert "".join(piece["text"] for piece in data["segments"]) == text
    assert [p["match"] for p in data["segments"]] == [None, 0, None]


def test_the_test_panel_masks_an_email_and_a_card_number(client, viewer):
    email = _rule(name="Emails", kind="preset", preset="email", action="mask")
    card = _rule(name="Cards", kind="preset", preset="card", action="mask", mask_with="[card]")
    flag = _rule(name="Refunds", kind="keywords", keywords="refund", action="flag")
    text = f"Refund to jo@example.com, card {LUHN_CARD}; order 1234 5678 9012 3456."
    data = _test_post(client, {"text": text, "scope": "output", "surface": "widget"}).json()
    found = {(m["rule_id"], m["text"]) for m in data["matches"]}
    assert found == {(flag.pk, "Refund"), (email.pk, "jo@example.com"), (card.pk, LUHN_CARD)}
    assert data["verdict"]["blocked"] is False and data["verdict"]["flagged"] is True
    assert data["verdict"]["text"] == (
        "Refund to [email], card [card]; order 1234 5678 9012 3456."
    )  # the second number fails the Luhn check and stays
    assert data["flags"] == [{"rule_id": flag.pk, "rule_name": "Refunds", "text": "Refund"}]


def test_the_test_panel_runs_only_the_chosen_rules(client, viewer, rule):
    dormant = _rule(name="Dormant", keywords="secret", enabled=False, action="mask")
    text = "badword secret"
    everything = _test_post(client, {"text": text, "scope": "input", "surface": "api"}).json()
    assert [m["rule_name"] for m in everything["matches"]] == ["Bad words"]

    chosen = _test_post(
        client, {"text": text, "scope": "input", "surface": "api", "rules": [dormant.pk]}
    ).json()
    assert [r["name"] for r in chosen["rules"]] == ["Dormant"]
    assert chosen["verdict"]["text"] == "badword ******"

    none = _test_post(client, {"text": text, "scope": "input", "surface": "api", "rules": []})
    assert none.json()["matches"] == [] and none.json()["verdict"]["text"] == text


def test_rules_for_another_scope_or_surface_do_not_run(client, viewer):
    _rule(name="Widget only", surface="widget", scope="output")
    body = {"text": "badword", "scope": "input", "surface": "widget"}
    assert _test_post(client, body).json()["matches"] == []
    body.update(scope="output", surface="chat")
    assert _test_post(client, body).json()["matches"] == []
    body.update(surface="widget")
    assert len(_test_post(client, body).json()["matches"]) == 1


def test_the_test_panel_refuses_bad_requests(client, viewer):
    url = reverse("dashboard:filter-test")
    response = client.post(url, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "The body is not valid JSON."
    response = client.post(url, data="[]", content_type="application/json")
    assert response.status_code == 400
    too_long = _test_post(client, {"text": "x" * 20_001, "scope": "input", "surface": "chat"})
    assert too_long.status_code == 400 and "text" in too_long.json()["errors"]
    wrong = _test_post(client, {"text": "hi", "scope": "both", "surface": "all"})
    assert wrong.status_code == 400 and set(wrong.json()["errors"]) == {"scope", "surface"}
    assert _test_post(client, {"text": 5, "scope": "input", "surface": "chat"}).status_code == 400


def test_a_draft_rule_is_tried_without_being_saved(client, viewer):
    draft = _form(name="", kind="regex", pattern=r"(?i)order\s+#?\d{4,}", action="mask")
    draft.pop("whole_word")
    text = "Where is Order #12345?"
    response = _test_post(
        client, {"text": text, "scope": "input", "surface": "chat", "draft": draft}
    )
    assert response.status_code == 200
    data = response.json()
    assert [(m["rule_name"], m["text"]) for m in data["matches"]] == [
        ("Draft rule", "Order #12345")
    ]
    assert data["verdict"]["text"] == "Where is ************?"
    assert not FilterRule.objects.exists()


def test_a_draft_rule_that_does_not_compile_answers_its_field_errors(client, viewer):
    body = {"text": "aaaa", "scope": "input", "surface": "chat"}
    bad = _test_post(client, {**body, "draft": _form(kind="regex", pattern=CATASTROPHIC)})
    assert bad.status_code == 400
    assert "catastrophic backtracking" in bad.json()["rule_errors"]["pattern"][0]
    unparsed = _test_post(client, {**body, "draft": _form(priority="soon", action="erase")})
    assert unparsed.status_code == 400
    assert set(unparsed.json()["rule_errors"]) == {"priority", "action"}
    assert not FilterRule.objects.exists()


# --- hits -----------------------------------------------------------------------


def _hit(rule, **fields):
    data = {
        "rule": rule,
        "rule_name": rule.name if rule else "Gone",
        "scope": "input",
        "action": "block",
        "surface": "chat",
        "excerpt": "…",
    }
    data.update(fields)
    return FilterHit.objects.create(**data)


def test_the_hits_page_filters_and_counts_by_rule(client, viewer, rule):
    grant(viewer, "review_conversation")  # excerpts and their search need it
    cards = _rule(name="Cards", kind="preset", preset="card", action="mask")
    _hit(rule, excerpt="you «badword»")
    _hit(rule, excerpt="another «badword»", scope="output", surface="widget")
    _hit(rule, action="flag", excerpt="flagged «badword»")
    _hit(cards, action="mask", excerpt="card [card] please")
    old = _hit(cards, action="mask", excerpt="old [card]")
    FilterHit.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    url = reverse("dashboard:filter-hits")

    page = client.get(url)
    assert page.status_code == 200
    totals = {t["name"]: t for t in page.context["totals"]}
    assert (totals["Bad words"]["hits"], totals["Bad words"]["blocks"]) == (3, 2)
    assert totals["Bad words"]["flags"] == 1
    assert (totals["Cards"]["hits"], totals["Cards"]["masks"]) == (2, 2)
    newest = page.context["page"][0]
    assert newest.excerpt == "card [card] please"

    def shown(**query):
        response = client.get(url, query)
        return sorted(h.excerpt for h in response.context["page"]), response.context["totals"]

    assert shown(rule=cards.pk)[0] == ["card [card] please", "old [card]"]
    assert shown(action="flag")[0] == ["flagged «badword»"]
    assert shown(scope="output")[0] == ["another «badword»"]
    assert shown(surface="widget")[0] == ["another «badword»"]
    assert shown(q="ANOTHER")[0] == ["another «badword»"]
    since = (timezone.localdate() - timedelta(days=1)).isoformat()
    recent, totals = shown(rule=cards.pk, date_from=since)
    assert recent == ["card [card] please"]
    assert [(t["name"], t["hits"]) for t in totals] == [("Cards", 1)]
    until = (timezone.localdate() - timedelta(days=5)).isoformat()
    assert shown(date_to=until)[0] == ["old [card]"]


def test_hit_rows_escape_excerpts_and_link_conversations_for_reviewers(client, viewer, rule):
    conversation = Conversation.objects.create(user=UserFactory(username="someone"))
    _hit(rule, excerpt="<script>alert(1)</script> «badword»", conversation=conversation)
    review_url = reverse("dashboard:conversation-review", args=[conversation.pk])
    page = client.get(reverse("dashboard:filter-hits")).content.decode()
    assert review_url not in page
    assert reverse("dashboard:filter-edit", args=[rule.pk]) in page

    grant(viewer, "review_conversation")
    page = client.get(reverse("dashboard:filter-hits")).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert review_url in page


def test_excerpts_need_the_review_right_and_each_view_is_in_the_review_log(client, viewer, rule):
    someone = Conversation.objects.create(user=UserFactory(username="someone"))
    other = Conversation.objects.create(user=UserFactory(username="other"))
    _hit(rule, excerpt="my card is «secret-one»", conversation=someone)
    _hit(rule, excerpt="and «secret-two»", conversation=someone)
    _hit(rule, excerpt="then «secret-three»", conversation=other)
    _hit(rule, excerpt="an API call «secret-four»")
    url = reverse("dashboard:filter-hits")

    # Without the review right: every hit, none of the users' words, and
    # the excerpt search cannot be used to guess them.
    response = client.get(url)
    page = response.content.decode()
    assert "secret" not in page
    assert page.count("data-hit=") == 4
    assert "excerpt-hidden" in page
    assert 'name="q"' not in page
    probe = client.get(url, {"q": "secret-one"}).content.decode()
    assert probe.count("data-hit=") == 4 and "secret" not in probe
    assert not ReviewEvent.objects.exists()

    # With it: the words, and one view per conversation in the review log.
    grant(viewer, "review_conversation")
    page = client.get(url).content.decode()
    for word in ("secret-one", "secret-two", "secret-three", "secret-four"):
        assert word in page
    views = ReviewEvent.objects.filter(action=ReviewEvent.Action.VIEW, staff=viewer)
    assert sorted(views.values_list("conversation_id", flat=True), key=str) == sorted(
        [someone.pk, other.pk, None], key=str
    )
    assert all("filter hit" in event.detail for event in views)
    searched = client.get(url, {"q": "secret-three"}).content.decode()
    assert searched.count("data-hit=") == 1
    latest = ReviewEvent.objects.filter(action=ReviewEvent.Action.VIEW, staff=viewer)
    assert latest.count() == 4 and latest.first().conversation_id == other.pk


def test_the_rule_list_shows_hit_counts_and_the_last_hit(client, viewer, rule):
    _hit(rule)
    latest = _hit(rule)
    page = client.get(reverse("dashboard:filters"))
    (row,) = page.context["rows"]
    assert row["hits"] == 2 and row["last_hit"] == latest.created_at
    assert f"{reverse('dashboard:filter-hits')}?rule={rule.pk}" in page.content.decode()
