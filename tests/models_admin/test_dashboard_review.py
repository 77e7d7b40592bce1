"""Conversation review in the dashboard: access, filters, the audit trail,
flags and adding conversations to datasets."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import reverse

from chat.models import Conversation
from chat.services.answers import message_regenerate
from chat.services.conversations import conversation_create
from chat.services.messages import (
    feedback_set,
    message_generation_finish,
    message_send,
)
from models_admin.dashboard.selectors.review import conversations_for_review
from models_admin.dashboard.services.review import (
    conversation_flag,
    conversation_unflag,
    conversations_dataset_add,
)
from models_admin.models import Dataset, DatasetExample, ReviewEvent
from models_admin.services.datasets import dataset_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LIST = reverse("dashboard:conversations")
LOG = reverse("dashboard:review-log")
ADD = reverse("dashboard:conversations-dataset")


def _detail(conversation: Conversation) -> str:
    return reverse("dashboard:conversation-review", args=[conversation.pk])


def _flag_url(conversation: Conversation) -> str:
    return reverse("dashboard:conversation-flag", args=[conversation.pk])


def _exchange(user, conversation, question, answer, *, reason="stop", version="tiny-v1"):
    """Ask and store the finished answer, as the worker would."""
    sent = message_send(
        user=user, conversation=conversation, content=question, client_id=uuid.uuid4()
    )
    return message_generation_finish(
        generation_id=sent.answer.generation_id,
        final={
            "finish_reason": reason,
            "model_version": version,
            "usage": {"prompt_tokens": 12, "completion_tokens": 30},
            "timings": {"ttft_s": 0.25, "total_s": 1.25},
        },
        text=answer,
    )


def _navigation(user) -> str:
    """The dashboard frame every page extends, as ``user`` sees it."""
    request = RequestFactory().get("/dashboard/")
    request.user = user
    return render_to_string("dashboard/base.html", {"section": "home"}, request=request)


@pytest.fixture
def reviewer():
    user = UserFactory(username="reviewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="review_conversation"))
    return user


@pytest.fixture
def staff_without_right():
    return UserFactory(username="plainstaff", is_staff=True)


@pytest.fixture
def owner():
    return UserFactory(username="alice")


@pytest.fixture
def talk(owner):
    """A chat with one liked answer and a second, unrated exchange."""
    conversation = conversation_create(user=owner, title="Returns", system_prompt="Be kind.")
    first = _exchange(owner, conversation, "Return policy?", "Thirty days.")
    feedback_set(user=owner, message=first, rating=1, reason="clear")
    _exchange(owner, conversation, "Thanks", "Anything else?")
    conversation.refresh_from_db()
    return conversation


@pytest.fixture
def staff_client(client, reviewer):
    client.force_login(reviewer)
    return client


def test_staff_without_the_review_right_are_refused_and_see_no_link(
    client, staff_without_right, reviewer, talk
):
    """Staff lacking chat.review_conversation get 403 everywhere in the
    area, and the navigation hides the link that the right shows."""
    client.force_login(staff_without_right)
    for url in (LIST, _detail(talk), LOG):
        assert client.get(url).status_code == 403
    assert client.post(_flag_url(talk), {"action": "flag", "reason": "x"}).status_code == 403
    assert client.post(ADD, {"conversations": [talk.pk], "new_name": "x"}).status_code == 403
    assert not ReviewEvent.objects.exists()
    talk.refresh_from_db()
    assert talk.flagged_at is None and not Dataset.objects.exists()
    assert f'href="{LIST}"' not in _navigation(staff_without_right)
    assert f'href="{LIST}"' in _navigation(reviewer)


def test_non_staff_are_refused_and_visitors_sent_to_log_in(client, owner, talk):
    assert client.get(LIST).status_code == 302
    client.force_login(owner)
    assert client.get(LIST).status_code == 403
    assert client.get(_detail(talk)).status_code == 403
    assert not ReviewEvent.objects.exists()


def test_list_shows_every_users_conversations_with_counts_and_logs_nothing(staff_client, talk):
    bob = UserFactory(username="bob")
    other = conversation_create(user=bob, title="Widget chat", source="widget")
    _exchange(bob, other, "Hi", "Hello!", version="tiny-v2")
    response = staff_client.get(LIST)
    assert response.status_code == 200
    rows = {c.pk: c for c in response.context["page"]}
    assert set(rows) == {talk.pk, other.pk}
    assert (rows[talk.pk].message_count, rows[talk.pk].thumbs_up) == (4, 1)
    assert rows[talk.pk].thumbs_down == 0 and rows[talk.pk].model_versions == ["tiny-v1"]
    page = response.content.decode()
    assert "Returns" in page and "Widget chat" in page and "bob" in page
    assert not ReviewEvent.objects.exists()


def test_list_filters_by_feedback_flag_source_user_and_text(staff_client, reviewer, talk):
    bob = UserFactory(username="bob")
    disliked = conversation_create(user=bob, title="Disliked", source="widget")
    answer = _exchange(bob, disliked, "Where is my parcel?", "No idea.")
    feedback_set(user=bob, message=answer, rating=-1, reason="unhelpful")
    quiet = conversation_create(user=bob, title="Quiet", source="api")
    _exchange(bob, quiet, "Opening hours?", "Nine to five.")
    conversation_flag(conversation=quiet, by=reviewer, reason="spam")

    def shown(**params) -> set[int]:
        response = staff_client.get(LIST, params)
        assert response.status_code == 200
        return {c.pk for c in response.context["page"]}

    assert shown(feedback="up") == {talk.pk}
    assert shown(feedback="down") == {disliked.pk}
    assert shown(feedback="none") == {quiet.pk}
    assert shown(flagged="yes") == {quiet.pk}
    assert shown(flagged="no") == {talk.pk, disliked.pk}
    assert shown(source="widget") == {disliked.pk}
    assert shown(source="api", flagged="yes") == {quiet.pk}
    assert shown(user="BO") == {disliked.pk, quiet.pk}
    assert shown(q="PARCEL") == {disliked.pk}
    assert shown(q="nine to") == {quiet.pk}
    assert shown(feedback="up", user="bob") == set()
    # An unknown value is refused by the form, not passed on.
    response = staff_client.get(LIST, {"source": "fax"})
    assert response.context["filters"].errors["source"]
    assert {c.pk for c in response.context["page"]} == {talk.pk, disliked.pk, quiet.pk}


def test_list_filters_by_date_and_pages_by_fifty(staff_client, owner, talk):
    from datetime import timedelta

    from django.utils import timezone

    old = conversation_create(user=owner, title="Old")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=10))
    today = timezone.localdate()
    shown = staff_client.get(LIST, {"date_from": today.isoformat()}).context["page"]
    assert {c.pk for c in shown} == {talk.pk}
    earlier = (today - timedelta(days=5)).isoformat()
    shown = staff_client.get(LIST, {"date_to": earlier}).context["page"]
    assert {c.pk for c in shown} == {old.pk}

    for n in range(50):
        conversation_create(user=owner, title=f"Bulk {n}")
    first = staff_client.get(LIST).context["page"]
    assert len(first.object_list) == 50 and first.paginator.count == 52
    second = staff_client.get(LIST, {"page": 2}).context["page"]
    assert [c.pk for c in second] == [talk.pk, old.pk]


def test_each_opening_records_exactly_one_view(staff_client, reviewer, talk):
    for expected in (1, 2):
        response = staff_client.get(_detail(talk))
        assert response.status_code == 200
        views = ReviewEvent.objects.filter(action=ReviewEvent.Action.VIEW)
        assert views.count() == expected
    assert set(views.values_list("staff_id", "conversation_id")) == {(reviewer.pk, talk.pk)}
    # The page's trail already holds the view that showed it.
    assert len(response.context["review"].events) == 2
    missing = reverse("dashboard:conversation-review", args=[999999])
    assert staff_client.get(missing).status_code == 404
    assert ReviewEvent.objects.count() == 2


def test_the_detail_page_shows_the_path_facts_feedback_and_branches(staff_client, owner, talk):
    thread_answer = talk.current_leaf
    regenerated = message_regenerate(
        user=owner, conversation=talk, message=thread_answer, client_id=uuid.uuid4()
    )
    message_generation_finish(
        generation_id=regenerated.answer.generation_id,
        final={"finish_reason": "stop"},
        text="Is there anything else?",
    )
    response = staff_client.get(_detail(talk))
    review = response.context["review"]
    assert [m.message.content for m in review.path] == [
        "Return policy?",
        "Thirty days.",
        "Thanks",
        "Is there anything else?",
    ]
    assert [[m.message.pk for m in b.messages] for b in review.branches] == [[thread_answer.pk]]
    assert review.path[1].tokens_per_s == pytest.approx(30.0)
    page = response.content.decode()
    assert "Be kind." in page and "alice" in page and "clear" in page
    assert "TTFT 0.25 s" in page and "Anything else?" in page


def test_message_text_is_escaped_with_its_line_breaks(staff_client, owner):
    conversation = conversation_create(user=owner, title="<b>title</b>")
    _exchange(owner, conversation, "<script>alert(1)</script>\nline two", "<img src=x>")
    page = staff_client.get(_detail(conversation)).content.decode()
    assert "<script>alert(1)" not in page and "<img src=x>" not in page
    assert "<b>title</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\nline two" in page
    assert "&lt;img src=x&gt;" in page


def test_flag_needs_a_reason_and_unflag_clears_it(staff_client, reviewer, talk):
    updated = talk.updated_at
    response = staff_client.post(_flag_url(talk), {"action": "flag", "reason": " "})
    assert response.status_code == 302
    talk.refresh_from_db()
    assert talk.flagged_at is None

    staff_client.post(_flag_url(talk), {"action": "flag", "reason": "asks for card numbers"})
    talk.refresh_from_db()
    assert talk.flagged_at is not None and talk.flag_reason == "asks for card numbers"
    assert talk.updated_at == updated
    shown = staff_client.get(LIST, {"flagged": "yes"}).content.decode()
    assert "asks for card numbers" in shown

    response = staff_client.post(_flag_url(talk), {"action": "unflag", "reason": "false alarm"})
    assert response.url == _detail(talk)
    talk.refresh_from_db()
    assert talk.flagged_at is None and talk.flag_reason == ""
    events = list(
        ReviewEvent.objects.exclude(action=ReviewEvent.Action.VIEW)
        .order_by("id")
        .values_list("action", "detail", "staff_id")
    )
    assert events == [
        ("flag", "asks for card numbers", reviewer.pk),
        ("unflag", "false alarm (was: asks for card numbers)", reviewer.pk),
    ]
    with pytest.raises(ValidationError):
        conversation_unflag(conversation=talk, by=reviewer)
    assert staff_client.get(_flag_url(talk)).status_code == 405


def test_selected_conversations_become_a_new_dataset_of_their_active_paths(
    staff_client, reviewer, owner, talk
):
    short = conversation_create(user=owner, title="Hours")
    first = _exchange(owner, short, "Open today?", "Until six.")
    # A regenerated answer moves the active path; the old one is left out.
    again = message_regenerate(
        user=owner, conversation=short, message=first, client_id=uuid.uuid4()
    )
    message_generation_finish(
        generation_id=again.answer.generation_id, final={"finish_reason": "stop"}, text="Till 6."
    )
    empty = conversation_create(user=owner, title="Nothing yet")
    response = staff_client.post(
        ADD,
        {"conversations": [talk.pk, short.pk, empty.pk], "new_name": "Reviewed", "next": LIST},
        follow=True,
    )
    dataset = Dataset.objects.get(name="Reviewed")
    assert response.redirect_chain[-1][0] == LIST
    page = response.content.decode()
    assert "Added 2 of 3 selected conversations (2 examples)" in page
    assert 'href="' in page and ">Reviewed</a>" in page
    rows = [e.messages for e in dataset.examples.order_by("index")]
    assert rows == [
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Return policy?"},
            {"role": "assistant", "content": "Thirty days."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Anything else?"},
        ],
        [{"role": "user", "content": "Open today?"}, {"role": "assistant", "content": "Till 6."}],
    ]
    assert dataset.source == Dataset.Source.EXPORT and dataset.created_by == reviewer
    assert dataset.stats["examples"] == 2 and dataset.stats["messages"] == 7
    added = ReviewEvent.objects.filter(action=ReviewEvent.Action.DATASET_ADD)
    assert set(added.values_list("conversation_id", flat=True)) == {talk.pk, short.pk}
    assert set(added.values_list("staff_id", flat=True)) == {reviewer.pk}


def test_adding_to_an_existing_dataset_appends_after_its_last_index(
    staff_client, reviewer, owner, talk
):
    base = [
        [{"role": "user", "content": f"Q{n}"}, {"role": "assistant", "content": f"A{n}"}]
        for n in range(9)
    ]
    dataset = dataset_create(name="Existing", conversations=base, source="upload")
    assert (dataset.stats["train"], dataset.stats["eval"]) == (8, 1)
    more = conversation_create(user=owner)
    _exchange(owner, more, "Colours?", "Red and blue.")
    response = staff_client.post(ADD, {"conversations": [talk.pk, more.pk], "dataset": dataset.pk})
    assert response.status_code == 302 and response.url == LIST
    dataset.refresh_from_db()
    indexes = list(dataset.examples.order_by("index").values_list("index", flat=True))
    assert indexes == list(range(11))
    assert dataset.stats["examples"] == 11 and dataset.stats["messages"] == 18 + 5 + 2
    splits = DatasetExample.objects.filter(dataset=dataset)
    assert dataset.stats["eval"] == splits.filter(split="eval").count() == 1
    assert dataset.stats["train"] == splits.filter(split="train").count() == 10
    assert dataset.filters["additions"][0]["conversations"] == [talk.pk, more.pk]

    # The same conversations again add nothing: the examples are there.
    _, conversations, examples = conversations_dataset_add(
        conversations=[talk, more], by=reviewer, dataset=dataset
    )
    assert (conversations, examples) == (0, 0)
    assert DatasetExample.objects.filter(dataset=dataset).count() == 11


def test_appends_keep_the_datasets_eval_fraction(reviewer, owner):
    dataset = dataset_create(
        name="Fraction",
        conversations=[[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]],
        source="upload",
        eval_fraction=0.25,
    )
    talks = []
    for n in range(7):
        conversation = conversation_create(user=owner)
        _exchange(owner, conversation, f"Question {n}", f"Answer {n}")
        talks.append(conversation)
    conversations_dataset_add(conversations=talks, by=reviewer, dataset=dataset)
    dataset.refresh_from_db()
    assert (dataset.stats["examples"], dataset.stats["eval"], dataset.stats["train"]) == (8, 2, 6)
    assert DatasetExample.objects.filter(dataset=dataset, split="eval").count() == 2


def test_thumbs_up_only_keeps_turns_up_to_the_last_liked_answer(staff_client, owner, talk):
    unrated = conversation_create(user=owner)
    _exchange(owner, unrated, "Hello", "Hi!")
    response = staff_client.post(
        ADD,
        {
            "conversations": [talk.pk, unrated.pk],
            "new_name": "Liked",
            "thumbs_up_only": "on",
        },
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get(name="Liked")
    assert [e.messages for e in dataset.examples.all()] == [
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Return policy?"},
            {"role": "assistant", "content": "Thirty days."},
        ]
    ]


def test_flagged_conversations_are_skipped_unless_asked_for(reviewer, owner, talk):
    conversation_flag(conversation=talk, by=reviewer, reason="rude")
    with pytest.raises(ValidationError):
        conversations_dataset_add(conversations=[talk], by=reviewer, new_name="Clean")
    assert not Dataset.objects.exists()
    dataset, conversations, examples = conversations_dataset_add(
        conversations=[talk], by=reviewer, new_name="All", exclude_flagged=False
    )
    assert (conversations, examples) == (1, 1) and dataset.stats["examples"] == 1


def test_a_dataset_needs_one_target_and_a_free_name(staff_client, talk):
    Dataset.objects.create(name="Taken", source="upload")
    for data in (
        {"conversations": [talk.pk]},
        {"conversations": [talk.pk], "new_name": "Taken"},
        {"conversations": [], "new_name": "Fresh"},
    ):
        response = staff_client.post(ADD, data, follow=True)
        assert response.status_code == 200
        assert [m.level_tag for m in response.context["messages"]] == ["error"]
    assert Dataset.objects.count() == 1
    assert not ReviewEvent.objects.filter(action=ReviewEvent.Action.DATASET_ADD).exists()


def test_the_review_log_lists_events_newest_first_and_filters(staff_client, reviewer, talk, owner):
    other_staff = UserFactory(username="second", is_staff=True)
    staff_client.get(_detail(talk))
    conversation_flag(conversation=talk, by=other_staff, reason="check this")
    response = staff_client.get(LOG)
    events = list(response.context["page"])
    assert [(e.action, e.staff_id) for e in events] == [
        ("flag", other_staff.pk),
        ("view", reviewer.pk),
    ]
    page = response.content.decode()
    assert "check this" in page and "Returns" in page
    only_views = staff_client.get(LOG, {"action": "view"}).context["page"]
    assert [e.action for e in only_views] == ["view"]
    by_second = staff_client.get(LOG, {"staff": other_staff.pk}).context["page"]
    assert [e.staff_id for e in by_second] == [other_staff.pk]
    assert not ReviewEvent.objects.filter(action="view").exclude(staff=reviewer).exists()


def test_the_source_filter_choices_are_all_understood_by_the_selector():
    """Every value the form offers is a filter the selector accepts."""
    from models_admin.dashboard.forms.review import ReviewFilterForm

    for value, _label in ReviewFilterForm().fields["source"].choices:
        assert conversations_for_review(source=value).count() == 0
    with pytest.raises(ValueError):
        conversations_for_review(source="fax")


def test_appended_examples_are_counted_in_tokens(tiny_model_dir, settings, reviewer, talk):
    """With a production tokenizer, an append adds its tokens to the
    dataset's totals and to each new example."""
    from models_admin.services import model_version_register

    settings.MODEL_DIR = tiny_model_dir.parent
    model_version_register(name="tiny", folder=tiny_model_dir)
    pair = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    dataset = dataset_create(name="Counted", conversations=[pair], source="upload")
    before = dict(dataset.stats)
    conversations_dataset_add(conversations=[talk], by=reviewer, dataset=dataset)
    dataset.refresh_from_db()
    added = dataset.examples.get(index=1)
    assert added.tokens and dataset.stats["tokens"] == before["tokens"] + added.tokens
    assert dataset.stats["assistant_tokens"] > before["assistant_tokens"] > 0
