"""The customer-service widget: visitors' conversations, their messages,
and the handoff to a person."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import Conversation, Message, WidgetVisitor
from chat.services.events import conversation_group, notify_on_commit
from chat.services.messages import ChatError, Sent, generation_stop, question_send
from chat.services.widget_limits import widget_answer_running, widget_message_limits_check
from chat.services.widget_sites import site_online
from models_admin.services.events import dashboard_notify_on_commit

#: Added to a site's system prompt when people can take over.
HANDOFF_HINT = (
    "If you cannot answer a question from what you know, say so plainly and offer to "
    'connect the visitor with a person from the team: they can press "Talk to a person".'
)
#: A visitor's messages a minute count over this window.
_WINDOW = timedelta(minutes=1)


# --- conversations ------------------------------------------------------------


def visitor_conversation(*, visitor: WidgetVisitor) -> Conversation | None:
    """The visitor's current conversation (the latest not closed)."""
    return (
        Conversation.objects.filter(visitor=visitor)
        .exclude(handoff=Conversation.Handoff.CLOSED)
        .order_by("-updated_at", "-id")
        .first()
    )


def _conversation_for_send(visitor: WidgetVisitor) -> Conversation:
    conversation = visitor_conversation(visitor=visitor)
    if conversation is not None:
        return conversation
    site = visitor.site
    prompt = site.system_prompt.strip()
    if site.handoff_enabled:
        # The widget shows a "Talk to a person" button; the model points to it.
        prompt = f"{prompt}\n\n{HANDOFF_HINT}" if prompt else HANDOFF_HINT
    conversation = Conversation(
        visitor=visitor,
        site=site,
        source=Conversation.Source.WIDGET,
        system_prompt=prompt[:8000],
    )
    conversation.full_clean()
    conversation.save()
    return conversation


def _visitor_limits(visitor: WidgetVisitor) -> None:
    limit = visitor.site.messages_per_minute
    recent = Message.objects.filter(
        conversation__visitor=visitor,
        role=Message.Role.USER,
        created_at__gte=timezone.now() - _WINDOW,
    ).count()
    if recent >= limit:
        raise ChatError(
            "rate_limited",
            gettext("You can send %(limit)s messages a minute; wait a moment.") % {"limit": limit},
            retry_after=60.0,
        )


def widget_message_send(
    *, visitor: WidgetVisitor, content: Any, client_id: Any, address: Any = None
) -> Sent:
    """A visitor's message: answered by the model, or only stored while a
    person owns (or was asked to own) the conversation. It counts against
    the visitor's limit and the caps of its client ``address`` and site;
    raise ChatError ``rate_limited`` naming the one reached."""
    conversation = _conversation_for_send(visitor)
    with_person = conversation.handoff in (
        Conversation.Handoff.REQUESTED,
        Conversation.Handoff.ACTIVE,
    )

    def limits() -> None:
        _visitor_limits(visitor)
        widget_message_limits_check(site=visitor.site, address=address, answer=not with_person)

    sent = question_send(
        conversation=conversation,
        content=content,
        client_id=client_id,
        # Counted once, before the filter: the caps are windows in Redis,
        # not rows the conversation's lock would order.
        limits_early=limits,
        answer=not with_person,
    )
    if sent.created and sent.answer is not None and sent.answer.status == Message.Status.PENDING:
        widget_answer_running(address=address, message_id=sent.answer.pk)
    if with_person and sent.created:
        dashboard_notify_on_commit(
            topic="inbox", payload={"type": "inbox.message", "conversation": conversation.pk}
        )
    return sent


def widget_generation_stop(*, visitor: WidgetVisitor, message_id: Any) -> bool:
    message = Message.objects.filter(
        pk=message_id if isinstance(message_id, int) else -1, conversation__visitor=visitor
    ).first()
    if message is None:
        raise ChatError("not_found", gettext("No such message."))
    return generation_stop(message=message)


# --- handoff ------------------------------------------------------------------


def handoff_state(*, conversation: Conversation | None) -> dict[str, Any]:
    if conversation is None:
        return {"state": Conversation.Handoff.NONE, "agent": None}
    agent = conversation.agent
    name = (agent.first_name or agent.get_username()) if agent is not None else None
    return {"state": conversation.handoff, "agent": name}


def _handoff_announce(conversation: Conversation) -> None:
    state = handoff_state(conversation=conversation)
    site = conversation.site
    notify_on_commit(
        conversation_group(conversation.pk),
        {
            "type": "handoff.changed",
            "conversation": conversation.pk,
            **state,
            "online": site_online(site=site) if site else True,
            "offline_message": site.offline_message if site else "",
        },
    )
    dashboard_notify_on_commit(
        topic="inbox",
        payload={"type": "inbox.changed", "conversation": conversation.pk, **state},
    )


def _answers_stop(conversation: Conversation) -> None:
    """Once the change commits, stop the assistant's running answers in the
    conversation: a person is taking over (or it ended), and the bot must
    not go on writing under them. What it wrote so far is kept, so staff
    see it."""
    running = Message.objects.filter(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        author=None,
    ).exclude(generation_id=None)
    for message in running:
        transaction.on_commit(functools.partial(generation_stop, message=message))


def _locked(conversation: Conversation) -> Conversation:
    """Lock the conversation row (only it: PostgreSQL refuses FOR UPDATE
    on the nullable side of the outer joins select_related makes)."""
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("agent", "site")
        .get(pk=conversation.pk)
    )


@transaction.atomic
def handoff_request(*, visitor: WidgetVisitor) -> Conversation:
    """The visitor asks for a person. Outside business hours the request
    stands (staff see it later) and the visitor is shown the offline
    message and may leave an email."""
    site = visitor.site
    if not site.handoff_enabled:
        raise ChatError("handoff_off", gettext("This site does not offer a person to talk to."))
    conversation = _locked(_conversation_for_send(visitor))
    if conversation.handoff in (Conversation.Handoff.NONE, Conversation.Handoff.CLOSED):
        conversation.handoff = Conversation.Handoff.REQUESTED
        conversation.handoff_at = timezone.now()
        conversation.save(update_fields=["handoff", "handoff_at", "updated_at"])
    _answers_stop(conversation)
    _handoff_announce(conversation)
    return conversation


@transaction.atomic
def visitor_email_leave(*, visitor: WidgetVisitor, email: Any) -> WidgetVisitor:
    try:
        validate_email(email)
    except (ValidationError, TypeError):
        raise ChatError("invalid", gettext("Write a valid email address.")) from None
    visitor.email = str(email).strip()
    visitor.save(update_fields=["email", "last_seen_at"])
    conversation = visitor_conversation(visitor=visitor)
    if conversation is not None:
        dashboard_notify_on_commit(
            topic="inbox", payload={"type": "inbox.email", "conversation": conversation.pk}
        )
    return visitor


@transaction.atomic
def handoff_take(*, conversation: Conversation, agent: AbstractBaseUser) -> Conversation:
    """A staff member takes the conversation: the model stays silent and
    the visitor sees who joined."""
    conversation = _locked(conversation)
    if conversation.visitor_id is None:
        raise ChatError("invalid", gettext("Only widget conversations are handed to a person."))
    if conversation.handoff == Conversation.Handoff.CLOSED:
        raise ChatError(
            "invalid",
            gettext("The conversation is closed; the visitor's next message opens a new one."),
        )
    conversation.handoff = Conversation.Handoff.ACTIVE
    conversation.agent_id = agent.pk
    conversation.handoff_at = timezone.now()
    conversation.save(update_fields=["handoff", "agent", "handoff_at", "updated_at"])
    conversation.refresh_from_db()
    _answers_stop(conversation)
    _handoff_announce(conversation)
    return conversation


@transaction.atomic
def agent_reply(*, conversation: Conversation, agent: AbstractBaseUser, content: Any) -> Message:
    """A staff member's answer, shown to the visitor at once."""
    conversation = _locked(conversation)
    if conversation.handoff != Conversation.Handoff.ACTIVE or conversation.agent_id != agent.pk:
        raise ChatError("invalid", gettext("Take the conversation before replying."))
    if not isinstance(content, str) or not content.strip():
        raise ChatError("empty", gettext("Write a reply first."))
    reply = Message(
        conversation=conversation,
        parent=conversation.current_leaf,
        role=Message.Role.ASSISTANT,
        status=Message.Status.DONE,
        content=content.strip()[:16_000],
        author_id=agent.pk,
        finished_at=timezone.now(),
    )
    reply.full_clean()
    reply.save()
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf", "updated_at"])
    from chat.selectors import message_serialize

    notify_on_commit(
        conversation_group(conversation.pk),
        {
            "type": "message.created",
            "conversation": conversation.pk,
            "question": None,
            "answer": message_serialize(reply),
        },
    )
    dashboard_notify_on_commit(
        topic="inbox", payload={"type": "inbox.message", "conversation": conversation.pk}
    )
    return reply


@transaction.atomic
def handoff_release(*, conversation: Conversation) -> Conversation:
    """Back to the assistant."""
    conversation = _locked(conversation)
    conversation.handoff = Conversation.Handoff.NONE
    conversation.agent = None
    conversation.save(update_fields=["handoff", "agent", "updated_at"])
    _handoff_announce(conversation)
    return conversation


@transaction.atomic
def handoff_close(*, conversation: Conversation) -> Conversation:
    """End the conversation; the visitor's next message starts a new one."""
    conversation = _locked(conversation)
    conversation.handoff = Conversation.Handoff.CLOSED
    conversation.save(update_fields=["handoff", "updated_at"])
    _answers_stop(conversation)
    _handoff_announce(conversation)
    return conversation
