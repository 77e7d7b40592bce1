"""The dashboard's inbox over HTTP: who may use it, which widget
conversations it lists and in what order, a conversation's thread and
visitor, and taking, answering, handing back and closing."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, Message, WidgetSite, WidgetVisitor
from chat.services.conversations import conversation_create
from chat.services.widget import handoff_take
from chat.services.widget_sites import widget_site_save
from tests.factories import UserFactory
from tests.models_admin.conftest import grant

pytestmark = pytest.mark.django_db

INBOX = reverse("dashboard:inbox")


@pytest.fixture
def agent(client):
    """A staff member who answers visitors, logged in."""
    user = UserFactory(username="agent", first_name="Ada", is_staff=True)
    grant(user, "answer_visitors")
    client.force_login(user)
    return user


@pytest.fixture
def site():
    return widget_site_save(data={"name": "Shop", "allowed_origins": "https://shop.example"})


def _conversation(
    site: WidgetSite,
    *,
    handoff: str = "requested",
    external_id: str = "",
    email: str = "",
    waited: timedelta = timedelta(minutes=3),
    agent=None,
) -> Conversation:
    visitor = WidgetVisitor.objects.create(
        site=site, token=uuid.uuid4(), external_id=external_id, email=email
    )
    return Conversation.objects.create(
        site=site,
        visitor=visitor,
        source="widget",
        handoff=handoff,
        handoff_at=timezone.now() - waited,
        agent=agent,
    )


def _message(conversation: Conversation, content: str, *, role: str = "user", **fields) -> Message:
    message = Message.objects.create(
        conversation=conversation,
        role=role,
        content=content,
        parent=conversation.current_leaf,
        **fields,
    )
    conversation.current_leaf = message
    conversation.save(update_fields=["current_leaf"])
    return message


def _url(name: str, conversation: Conversation) -> str:
    return reverse(f"dashboard:{name}", args=[conversation.pk])


def _reply(client, conversation: Conversation, content: str):
    return client.post(
        _url("inbox-reply", conversation), {"content": content}, HTTP_ACCEPT="application/json"
    )


def _row_ids(page: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-conversation="(\d+)"', page)]


# --- access -------------------------------------------------------------------


def _action_urls(conversation: Conversation) -> list[str]:
    return [_url(name, conversation) for name in ("inbox-take", "inbox-release", "inbox-close")]


def test_anonymous_visitors_are_sent_to_log_in(client, site):
    conversation = _conversation(site)
    for url in (INBOX, _url("inbox-conversation", conversation)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_accounts_that_are_not_staff_are_refused(client, site):
    conversation = _conversation(site)
    user = UserFactory(username="member")
    grant(user, "answer_visitors")
    client.force_login(user)
    assert client.get(INBOX).status_code == 403
    assert client.get(_url("inbox-conversation", conversation)).status_code == 403


def test_staff_who_do_not_answer_visitors_are_refused_and_see_no_link(client, viewer, site):
    conversation = _conversation(site)
    assert client.get(INBOX).status_code == 403
    assert client.get(_url("inbox-conversation", conversation)).status_code == 403
    for url in _action_urls(conversation):
        assert client.post(url).status_code == 403, url
    assert _reply(client, conversation, "Hello").status_code == 403
    conversation.refresh_from_db()
    assert (conversation.handoff, conversation.agent) == ("requested", None)
    assert not conversation.messages.exists()
    assert f'href="{INBOX}"' not in client.get(reverse("dashboard:widget-sites")).content.decode()


def test_staff_who_answer_visitors_get_the_nav_link(client, agent):
    page = client.get(INBOX).content.decode()
    assert 'aria-current="page">Inbox</a>' in page


def test_conversations_that_are_not_the_widgets_are_not_found(client, agent):
    chat = conversation_create(user=UserFactory(username="member"))
    assert client.get(_url("inbox-conversation", chat)).status_code == 404
    assert client.post(_url("inbox-take", chat)).status_code == 404


# --- the list -------------------------------------------------------------------


def test_the_inbox_lists_a_requested_conversation_with_its_visitor(client, agent, site):
    conversation = _conversation(site, email="kim@example.com", waited=timedelta(minutes=7))
    _message(conversation, "Where is my <b>parcel</b>?")
    page = client.get(INBOX).content.decode()
    assert _row_ids(page) == [conversation.pk]
    row = re.search(r"<tr data-conversation=.*?</tr>", page, re.S).group(0)
    assert f"anonymous #{conversation.visitor_id}" in row
    assert "kim@example.com" in row and "Shop" in row
    assert "Waiting for a person" in row
    assert "7\xa0minutes" in row
    assert "Where is my &lt;b&gt;parcel&lt;/b&gt;?" in row
    assert 'data-testid="count-requested">1 waiting' in page


def test_identified_visitors_are_listed_by_their_id(client, agent, site):
    _conversation(site, external_id="customer-77")
    page = client.get(INBOX).content.decode()
    assert "customer-77" in page and "anonymous #" not in page


def test_the_inbox_puts_waiting_first_then_active_then_recently_closed(client, agent, site):
    other = UserFactory(username="bea", is_staff=True)
    newer = _conversation(site, waited=timedelta(minutes=1))
    older = _conversation(site, waited=timedelta(minutes=20))
    active = _conversation(site, handoff="active", agent=other)
    closed = _conversation(site, handoff="closed")
    stale = _conversation(site, handoff="closed")
    Conversation.objects.filter(pk=stale.pk).update(updated_at=timezone.now() - timedelta(days=30))
    untouched = _conversation(site, handoff="none")

    page = client.get(INBOX).content.decode()
    assert _row_ids(page) == [older.pk, newer.pk, active.pk, closed.pk]
    assert stale.pk not in _row_ids(page) and untouched.pk not in _row_ids(page)
    row = re.search(rf'<tr data-conversation="{active.pk}".*?</tr>', page, re.S).group(0)
    assert "bea" in row


def test_active_conversations_show_how_long_a_question_waits(client, agent, site):
    answered = _conversation(site, handoff="active", agent=agent)
    _message(answered, "Hi")
    _message(answered, "Hello, how can I help?", role="assistant", author=agent)
    waiting = _conversation(site, handoff="active", agent=agent)
    question = _message(waiting, "Still there?")
    Message.objects.filter(pk=question.pk).update(created_at=timezone.now() - timedelta(minutes=9))

    page = client.get(INBOX).content.decode()
    assert _row_ids(page) == [waiting.pk, answered.pk]
    found = re.findall(r"<tr data-conversation=.*?</tr>", page, re.S)
    rows = dict(zip(_row_ids(page), found, strict=True))
    assert "9\xa0minutes" in rows[waiting.pk]
    assert 'class="waiting' not in rows[answered.pk]
    assert "Ada:" in rows[answered.pk]


def test_the_inbox_filters_by_site_and_state(client, agent, site):
    blog = widget_site_save(data={"name": "Blog", "allowed_origins": "https://blog.example"})
    shop_waiting = _conversation(site)
    blog_waiting = _conversation(blog)
    blog_active = _conversation(blog, handoff="active", agent=agent)

    assert _row_ids(client.get(INBOX, {"site": blog.pk}).content.decode()) == [
        blog_waiting.pk,
        blog_active.pk,
    ]
    assert _row_ids(client.get(INBOX, {"state": "requested"}).content.decode()) == [
        shop_waiting.pk,
        blog_waiting.pk,
    ]
    page = client.get(INBOX, {"site": blog.pk, "state": "active"}).content.decode()
    assert _row_ids(page) == [blog_active.pk]
    # An unknown filter value is ignored and shown as an error.
    page = client.get(INBOX, {"state": "lost"}).content.decode()
    assert len(_row_ids(page)) == 3 and "errorlist" in page


def test_the_rows_fragment_is_the_list_alone_with_the_filters(client, agent, site):
    blog = widget_site_save(data={"name": "Blog", "allowed_origins": "https://blog.example"})
    _conversation(site)
    blog_waiting = _conversation(blog)
    page = client.get(INBOX, {"site": blog.pk}).content.decode()
    url = html.unescape(re.search(r'data-fragment-url="([^"]+)"', page).group(1))
    assert "fragment=rows" in url and f"site={blog.pk}" in url
    fragment = client.get(url).content.decode()
    assert "<html" not in fragment
    assert _row_ids(fragment) == [blog_waiting.pk]


# --- a conversation -----------------------------------------------------------------


def test_the_conversation_page_shows_the_thread_and_the_visitor(client, agent, site):
    conversation = _conversation(site, external_id="customer-9", email="kim@example.com")
    _message(conversation, "My order is late")
    _message(conversation, "Sorry to hear that.", role="assistant", model_version_name="v3")
    _message(conversation, "I want a person")

    page = client.get(_url("inbox-conversation", conversation)).content.decode()
    thread = re.search(r'data-testid="thread".*?</form>', page, re.S).group(0)
    assert thread.index("My order is late") < thread.index("Sorry to hear that.")
    assert thread.index("Sorry to hear that.") < thread.index("I want a person")
    assert "v3" in thread
    visitor = re.search(r'data-testid="visitor".*?</section>', page, re.S).group(0)
    for fact in ("Shop", "customer-9", "kim@example.com", "identified"):
        assert fact in visitor
    assert 'data-testid="take"' in page
    assert re.search(r"<form[^>]*data-reply-form[^>]*hidden", page)
    assert (
        json.loads(
            re.search(
                r'<script id="inbox-live" type="application/json">(.*?)</script>', page
            ).group(1)
        )["conversation"]
        == conversation.pk
    )


def test_the_side_and_thread_fragments_stand_alone(client, agent, site):
    conversation = _conversation(site)
    _message(conversation, "Anyone?")
    url = _url("inbox-conversation", conversation)
    side = client.get(url, {"fragment": "side"}).content.decode()
    assert "<html" not in side and 'data-state="requested"' in side and 'data-mine="0"' in side
    thread = client.get(url, {"fragment": "thread"}).content.decode()
    assert "<html" not in thread and "Anyone?" in thread


# --- taking, answering, handing back, closing -------------------------------------------


def test_take_reply_release_and_close_change_the_state(client, agent, site):
    conversation = _conversation(site)
    page_url = _url("inbox-conversation", conversation)

    response = client.post(_url("inbox-take", conversation))
    assert response.status_code == 302 and response["Location"] == page_url
    conversation.refresh_from_db()
    assert (conversation.handoff, conversation.agent) == ("active", agent)
    page = client.get(page_url).content.decode()
    assert 'data-mine="1"' in page
    assert not re.search(r"<form[^>]*data-reply-form[^>]*hidden", page)
    assert 'data-testid="take"' not in page

    response = _reply(client, conversation, "Hello, I am Ada.")
    assert response.status_code == 200
    sent = response.json()["message"]
    assert sent["author"] == "Ada" and sent["content"] == "Hello, I am Ada."
    message = Message.objects.get(pk=sent["id"])
    assert (message.author, message.role, message.conversation) == (
        agent,
        "assistant",
        conversation,
    )

    client.post(_url("inbox-release", conversation))
    conversation.refresh_from_db()
    assert (conversation.handoff, conversation.agent) == ("none", None)

    client.post(_url("inbox-take", conversation))
    client.post(_url("inbox-close", conversation))
    conversation.refresh_from_db()
    assert conversation.handoff == "closed"
    page = client.get(page_url).content.decode()
    assert 'data-testid="close"' not in page and 'data-testid="take"' not in page


def test_a_reply_without_javascript_redirects_to_the_conversation(client, agent, site):
    conversation = _conversation(site)
    client.post(_url("inbox-take", conversation))
    response = client.post(_url("inbox-reply", conversation), {"content": "Plain form"})
    assert response.status_code == 302
    assert conversation.messages.get().content == "Plain form"


def test_a_reply_by_someone_who_did_not_take_it_is_refused(client, agent, site):
    conversation = _conversation(site)
    other = UserFactory(username="bea", is_staff=True)
    handoff_take(conversation=conversation, agent=other)

    response = _reply(client, conversation, "Let me butt in")
    assert response.status_code == 409
    assert "Take the conversation" in response.json()["error"]
    response = client.post(_url("inbox-reply", conversation), {"content": "Again"}, follow=True)
    assert "Take the conversation" in response.content.decode()
    assert not conversation.messages.exists()

    page = client.get(_url("inbox-conversation", conversation)).content.decode()
    assert 'data-testid="take"' in page and "Take over" in page


def test_an_empty_reply_is_refused(client, agent, site):
    conversation = _conversation(site)
    client.post(_url("inbox-take", conversation))
    response = _reply(client, conversation, "   ")
    assert response.status_code == 400
    assert response.json()["error"] == "Write a reply first."
    assert not conversation.messages.exists()


def test_reply_content_is_escaped_on_the_page(client, agent, site):
    conversation = _conversation(site)
    client.post(_url("inbox-take", conversation))
    _reply(client, conversation, '<script>alert("x")</script> & <b>bold</b>')
    page = client.get(_url("inbox-conversation", conversation)).content.decode()
    assert "<script>alert(" not in page and "<b>bold</b>" not in page
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    )
    assert "Ada" in page and "staff" in page


def test_taking_a_closed_conversation_is_refused(client, agent, site):
    conversation = _conversation(site, handoff="closed")
    response = client.post(_url("inbox-take", conversation), follow=True)
    assert "closed" in response.content.decode()
    conversation.refresh_from_db()
    assert (conversation.handoff, conversation.agent) == ("closed", None)


def test_actions_are_posts(client, agent, site):
    conversation = _conversation(site)
    for name in ("inbox-take", "inbox-reply", "inbox-release", "inbox-close"):
        assert client.get(_url(name, conversation)).status_code == 405, name
