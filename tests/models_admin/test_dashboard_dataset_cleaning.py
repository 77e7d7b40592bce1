"""The dashboard's cleaning of a dataset over HTTP: the preview of what the
filter rules drop, mask or flag and the near duplicates, who may see it and
who may store the cleaned copy, the copy's lineage on both datasets'
pages, and users' text shown escaped."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from models_admin.dashboard.views import datasets as dataset_views
from models_admin.filters import filter_rule_enable, filter_rule_save
from models_admin.models import Dataset, FilterRule
from models_admin.services.datasets import dataset_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


CONVERSATIONS = [
    _chat("How do returns work?", "Send it back within 30 days for a full refund."),
    _chat("What is my card number 4111 1111 1111 1111 for?", "I cannot see card numbers."),
    _chat("Tell me about the blorkfest sale", "The sale starts on Monday."),
    _chat("Where is my parcel?", "Your parcel ships from our zorbex warehouse."),
    _chat("Where is my parcel?", "Your parcel ships from our warehouse in Leeds."),
    _chat("Do you ship abroad?", "Yes, we ship to most countries in Europe."),
    _chat("Do you ship abroad??", "Yes, we ship to most countries in Europe!"),
]


def _rule(**data):
    return filter_rule_save(data=data, by=None)


@pytest.fixture
def dataset():
    # Stored before any production version exists: no tokenizer loads.
    return dataset_create(name="Shop", conversations=CONVERSATIONS, source=Dataset.Source.UPLOAD)


@pytest.fixture
def rules():
    _rule(name="cards", kind="preset", preset="card", scope="input", action="mask")
    _rule(
        name="banned event", kind="keywords", keywords="blorkfest", scope="input", action="block"
    )
    _rule(name="internal site", kind="keywords", keywords="zorbex", scope="output", action="block")
    _rule(name="refunds", kind="keywords", keywords="refund", scope="output", action="flag")


@pytest.fixture
def staff(client):
    user = UserFactory(username="watcher", is_staff=True)
    client.force_login(user)
    return user


def _url(dataset) -> str:
    return reverse("dashboard:dataset-clean", args=[dataset.pk])


def _example(html: str, index: int) -> str:
    match = re.search(rf'<article [^>]*data-example="{index}">.*?</article>', html, re.S)
    assert match, f"example {index} is not listed"
    return match.group(0)


def _count(html: str, name: str) -> str:
    match = re.search(rf'data-count="{name}">([^<]*)<', html)
    assert match, name
    return match.group(1)


# --- the preview ------------------------------------------------------------------


def test_the_preview_counts_kept_masked_and_dropped_and_says_why(client, staff, dataset, rules):
    response = client.get(_url(dataset))
    assert response.status_code == 200
    html = response.content.decode()
    assert [_count(html, n) for n in ("keep", "mask", "drop", "duplicates")] == [
        "4",
        "1",
        "2",
        "1",
    ]
    assert reverse("dashboard:filters") in html

    masked = _example(html, 1)
    assert "masked</span>" in masked
    assert "Turn 1 · user" in masked and "cards" in masked and "action-mask" in masked
    # Before and after of the masked turn: the number, then what replaced it.
    before = re.search(r'class="mask-before">.*?</div>', masked, re.S).group(0)
    after = re.search(r'class="mask-after">.*?</div>', masked, re.S).group(0)
    assert "<del>4111 1111 1111 1111</del>" in before and "What is my card number " in before
    assert "4111" not in after and "<ins>" in after

    dropped = _example(html, 3)
    assert "dropped</span>" in dropped and "Turn 2 · assistant" in dropped
    assert "internal site" in dropped and "zorbex" in dropped
    flagged = _example(html, 0)
    assert "kept, flagged" in flagged and "refunds" in flagged and "action-flag" in flagged
    # An example no rule touches is not listed.
    assert 'data-example="4"' not in html

    duplicates = re.search(r'data-testid="clean-duplicates".*?</section>', html, re.S).group(0)
    assert "#5, #6" in duplicates and "Do you ship abroad?" in duplicates


def test_each_surface_previews_its_own_rules(client, staff, dataset):
    _rule(
        name="widget words",
        kind="keywords",
        keywords="parcel",
        scope="input",
        action="flag",
        surface="widget",
    )
    chat = client.get(_url(dataset)).content.decode()
    assert 'data-testid="no-rules"' in chat and 'data-testid="nothing-changed"' in chat
    widget = client.get(_url(dataset), {"surface": "widget"}).content.decode()
    assert 'data-testid="no-rules"' not in widget
    assert "widget words" in _example(widget, 3) and "widget words" in _example(widget, 4)
    assert 'value="widget" selected' in widget  # the form stores what was previewed


def test_with_no_rule_enabled_the_page_says_so_and_still_finds_duplicates(client, staff, dataset):
    rule = _rule(name="cards", kind="preset", preset="card", scope="input", action="mask")
    filter_rule_enable(rule=rule, enabled=False, by=None)
    html = client.get(_url(dataset)).content.decode()
    assert "No enabled filter rule applies to this surface" in html
    assert [_count(html, n) for n in ("keep", "mask", "drop")] == ["7", "0", "0"]
    assert "#5, #6" in html


def test_changed_examples_come_a_page_at_a_time(client, staff, monkeypatch):
    monkeypatch.setattr(dataset_views, "CLEAN_EXAMPLES_PER_PAGE", 3)
    _rule(name="hello", kind="keywords", keywords="hello", scope="input", action="flag")
    dataset = dataset_create(
        name="many",
        conversations=[
            _chat(f"hello number {n} " + "word " * n, f"Answer {n}.") for n in range(7)
        ],
        source=Dataset.Source.UPLOAD,
    )
    first = client.get(_url(dataset)).content.decode()
    assert re.findall(r'data-example="(\d+)"', first) == ["0", "1", "2"]
    assert "Examples 1\N{EN DASH}3 of 7 changed" in first
    last = client.get(_url(dataset), {"page": 3}).content.decode()
    assert re.findall(r'data-example="(\d+)"', last) == ["6"]


def test_a_long_masked_turn_is_shown_shortened_around_the_change():
    before = "a" * 500 + " 4111 1111 1111 1111 " + "b" * 500
    after = "a" * 500 + " [card] " + "b" * 500
    change = dataset_views.masked_turn(before, after)
    assert change["lead"] and change["trail"]
    assert change["before"] == "4111 1111 1111 1111" and change["after"] == "[card]"
    assert len(change["prefix"]) == len(change["suffix"]) == dataset_views.MASK_CONTEXT
    long = dataset_views.masked_turn("x" * 1000, "*" * 1000)
    assert len(long["before"]) <= dataset_views.MASK_SPAN + 3 and " … " in long["before"]


# --- who may do what ----------------------------------------------------------------


def test_visitors_and_accounts_that_are_not_staff_are_refused(client, dataset):
    response = client.get(_url(dataset))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    client.force_login(UserFactory(username="customer"))
    assert client.get(_url(dataset)).status_code == 403
    assert client.post(_url(dataset), {"name": "x", "surface": "chat"}).status_code == 403
    assert Dataset.objects.count() == 1


def test_staff_without_the_training_right_see_the_preview_but_cannot_store(
    client, staff, dataset, rules
):
    html = client.get(_url(dataset)).content.decode()
    form = re.search(r'data-testid="clean-form".*?</form>', html, re.S).group(0)
    assert re.search(r"<fieldset [^>]*disabled", form)
    assert "needs <code>models_admin.run_trainingjob</code>" in form
    response = client.post(_url(dataset), {"name": "Shop (clean)", "surface": "chat"})
    assert response.status_code == 403 and b"run_trainingjob" in response.content
    assert Dataset.objects.count() == 1


def test_storing_needs_the_csrf_token(dataset, rules):
    client = Client(enforce_csrf_checks=True)
    user = UserFactory(username="trainer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="run_trainingjob"))
    client.force_login(user)
    assert client.post(_url(dataset), {"name": "x", "surface": "chat"}).status_code == 403
    assert Dataset.objects.count() == 1


# --- storing the cleaned copy ---------------------------------------------------------


def test_storing_the_cleaned_copy_opens_it_and_both_pages_show_the_lineage(
    client, runner, dataset, rules
):
    offered = client.get(_url(dataset)).content.decode()
    form = re.search(r'data-testid="clean-form".*?</form>', offered, re.S).group(0)
    assert 'value="Shop (clean)"' in form and "disabled" not in form

    response = client.post(
        _url(dataset), {"name": "Shop (clean)", "surface": "chat", "drop_duplicates": "on"}
    )
    cleaned = Dataset.objects.get(name="Shop (clean)")
    assert response.status_code == 302
    assert response.url == reverse("dashboard:dataset", args=[cleaned.pk])
    assert cleaned.parent == dataset and cleaned.created_by == runner
    assert cleaned.stats["examples"] == 4
    assert cleaned.filters["duplicates_dropped"] == 1

    page = client.get(response.url).content.decode()
    assert "The cleaned copy Shop (clean) is stored with 4 examples" in page
    origin = re.search(r'data-testid="cleaned-from">.*?</dd>', page, re.S).group(0)
    assert reverse("dashboard:dataset", args=[dataset.pk]) in origin and ">Shop</a>" in origin
    assert "1 example masked, 2 dropped, 1 near duplicate left out, by the chat" in origin
    assert 'data-testid="dataset-filters"' not in page  # no raw filters of a clean copy

    original = client.get(reverse("dashboard:dataset", args=[dataset.pk])).content.decode()
    copies = re.search(r'data-testid="cleaned-copies">.*?</dd>', original, re.S).group(0)
    assert f'href="{response.url}">Shop (clean)</a>' in copies
    assert f'href="{_url(dataset)}"' in original

    # Cleaning again offers a name no dataset has yet.
    again = client.get(_url(dataset)).content.decode()
    assert 'value="Shop (clean) 2"' in again


def test_a_taken_name_is_refused_next_to_the_name_and_nothing_is_stored(
    client, runner, dataset, rules
):
    response = client.post(_url(dataset), {"name": "Shop", "surface": "api"})
    assert response.status_code == 200
    assert "already exists" in str(response.context["form"].errors["name"])
    html = response.content.decode()
    assert 'value="api" selected' in html and 'value="Shop"' in html
    assert _count(html, "keep")  # the preview is shown again
    assert Dataset.objects.count() == 1


def test_a_copy_with_no_example_left_is_refused_above_the_form(client, runner):
    _rule(name="everything", kind="regex", pattern=".", scope="input", action="block")
    dataset = dataset_create(name="doomed", conversations=CONVERSATIONS[:2], source="upload")
    response = client.post(_url(dataset), {"name": "nothing left", "surface": "chat"})
    assert response.status_code == 200
    assert "at least one example" in str(response.context["form"].non_field_errors())
    assert not Dataset.objects.filter(name="nothing left").exists()


def test_an_unknown_surface_is_refused_next_to_it(client, runner, dataset):
    response = client.post(_url(dataset), {"name": "Shop (email)", "surface": "email"})
    assert response.status_code == 200 and response.context["form"].errors["surface"]
    assert client.get(_url(dataset), {"surface": "email"}).status_code == 200  # chat's preview


# --- escaping -----------------------------------------------------------------------------


def test_hostile_text_in_examples_and_rules_is_shown_escaped(client, staff):
    hostile = "<script>alert(1)</script> my card 4111 1111 1111 1111"
    _rule(name="cards", kind="preset", preset="card", scope="input", action="mask")
    _rule(
        name="<b>scripts</b>",
        kind="keywords",
        keywords="script",
        whole_word=False,
        scope="both",
        action="flag",
    )
    dataset = dataset_create(
        name="<i>hostile</i>",
        conversations=[_chat(hostile, '<img src=x onerror="alert(2)">')] * 2,
        source=Dataset.Source.UPLOAD,
    )
    html = client.get(_url(dataset)).content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "<b>scripts</b>" not in html and "<i>hostile</i>" not in html
    example = _example(html, 0)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in example  # the masked turn
    assert "&lt;b&gt;scripts&lt;/b&gt;" in example  # the rule's name
    assert "&lt;«script»&gt;alert(1)" in example  # the excerpt, the match marked
    duplicates = re.search(r'data-testid="clean-duplicates".*?</section>', html, re.S).group(0)
    assert "&lt;script&gt;" in duplicates


def test_filter_rule_surfaces_are_the_cleaning_surfaces():
    """Every surface a rule can name, but "all", is one cleaning offers."""
    offered = {value for value, _label in dataset_views.CLEAN_SURFACES}
    assert offered == set(FilterRule.Surface.values) - {"all"}
