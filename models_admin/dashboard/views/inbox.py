"""The inbox of the dashboard: widget conversations that need a person.
Staff with ``chat.answer_visitors`` see who waits (the longest waiting
first), take a conversation, answer the visitor while the assistant stays
silent, hand it back to the assistant or close it.

The pages follow the dashboard socket: the list reads its rows again
when the "inbox" topic says something changed, a conversation shows the
visitor's messages and the assistant's answers as they come and its
handoff state as it changes.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from chat.models import Conversation
from chat.selectors import message_serialize
from chat.services.messages import ChatError
from chat.services.widget import agent_reply, handoff_close, handoff_release, handoff_take
from chat.services.widget_sites import site_online
from models_admin.dashboard.forms.inbox import InboxFilterForm, InboxReplyForm
from models_admin.dashboard.selectors.inbox import (
    inbox_conversation_get,
    inbox_counts,
    inbox_messages,
    inbox_rows,
    inbox_visitor_facts,
    visitor_label,
)
from models_admin.dashboard.views.access import permission_required, staff_member
from models_admin.dashboard.views.http import json_error

logger = logging.getLogger(__name__)

PERMISSION = "chat.answer_visitors"
Handoff = Conversation.Handoff
#: A visitor waiting longer than this is marked in the list.
WAIT_WARNING_S = 5 * 60


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _conversation_url(conversation: Conversation) -> str:
    return reverse("dashboard:inbox-conversation", args=[conversation.pk])


# --- the list -----------------------------------------------------------------


@permission_required(PERMISSION)
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    """Conversations waiting for a person, with one, and lately closed.
    ``?fragment=rows`` answers the list alone, for the page's live
    refresh."""
    filters = InboxFilterForm(request.GET or None)
    rows = inbox_rows(**filters.selector_kwargs())
    query = request.GET.copy()
    query["fragment"] = "rows"
    context = {
        "section": "inbox",
        "filters": filters,
        "fragment_url": f"{reverse('dashboard:inbox')}?{query.urlencode()}",
        "rows": rows,
        "counts": inbox_counts(agent_id=request.user.pk),
        "wait_warning_s": WAIT_WARNING_S,
    }
    if request.GET.get("fragment") == "rows":
        return render(request, "dashboard/inbox/_rows.html", context)
    return render(request, "dashboard/inbox/list.html", context)


# --- one conversation -------------------------------------------------------------


def _side_context(request: HttpRequest, conversation: Conversation) -> dict[str, Any]:
    """What the page's side panel shows: the handoff state, the actions the
    user may take now, and the visitor."""
    mine = conversation.handoff == Handoff.ACTIVE and conversation.agent_id == request.user.pk
    site = conversation.site
    return {
        "conversation": conversation,
        "mine": mine,
        "taken_by_other": conversation.handoff == Handoff.ACTIVE and not mine,
        "visitor": inbox_visitor_facts(conversation=conversation),
        "site_online": site_online(site=site) if site is not None else True,
    }


@permission_required(PERMISSION)
@require_GET
def inbox_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    """The whole thread, the visitor and the handoff actions.
    ``?fragment=side`` answers the side panel alone and
    ``?fragment=thread`` the messages alone, for the page's live
    refresh."""
    conversation = inbox_conversation_get(pk=pk)
    fragment = request.GET.get("fragment")
    context = {"section": "inbox", **_side_context(request, conversation)}
    if fragment == "side":
        return render(request, "dashboard/inbox/_side.html", context)
    context["thread"] = inbox_messages(conversation=conversation)
    if fragment == "thread":
        return render(request, "dashboard/inbox/_thread.html", context)
    context.update(
        reply_form=InboxReplyForm(),
        visitor_name=visitor_label(conversation.visitor),
        live={
            "conversation": conversation.pk,
            "reply_url": reverse("dashboard:inbox-reply", args=[conversation.pk]),
            "page_url": _conversation_url(conversation),
        },
    )
    return render(request, "dashboard/inbox/conversation.html", context)


@permission_required(PERMISSION)
@require_POST
def inbox_take(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Take the conversation: the assistant stops answering and the
    visitor sees who joined. Taking one another person holds takes it
    over."""
    conversation = inbox_conversation_get(pk=pk)
    if conversation.handoff == Handoff.CLOSED:
        messages.error(
            request,
            gettext("The conversation is closed; the visitor's next message opens a new one."),
        )
        return redirect(_conversation_url(conversation))
    previous = conversation.agent if conversation.handoff == Handoff.ACTIVE else None
    try:
        handoff_take(conversation=conversation, agent=staff_member(request))
    except ChatError as exc:
        messages.error(request, exc.message)
        return redirect(_conversation_url(conversation))
    logger.info("%s took widget conversation %s", request.user, conversation.pk)
    if previous is not None and previous.pk != request.user.pk:
        messages.success(
            request,
            gettext("You took the conversation over from %(previous)s.") % {"previous": previous},
        )
    else:
        messages.success(
            request, gettext("The conversation is yours; the assistant stays silent.")
        )
    return redirect(_conversation_url(conversation))


@permission_required(PERMISSION)
@require_POST
def inbox_reply(request: HttpRequest, pk: int) -> HttpResponse:
    """Send a reply to the visitor. Answers JSON ``{"message": ...}`` (as
    the chat serializes messages) to a request that accepts JSON, else
    redirects back to the conversation."""
    conversation = inbox_conversation_get(pk=pk)
    form = InboxReplyForm(request.POST)
    error, status = "", 200
    reply = None
    if not form.is_valid():
        error, status = " ".join(str(e) for e in form.errors.get("content", [])), 400
    else:
        try:
            reply = agent_reply(
                conversation=conversation,
                agent=staff_member(request),
                content=form.cleaned_data["content"],
            )
        except ChatError as exc:
            # Not taken, or taken by someone else: a conflict with the
            # conversation's state rather than a missing right.
            error, status = exc.message, 409 if exc.code == "invalid" else 400
    if _wants_json(request):
        if reply is None:
            return json_error(error, status=status)
        return JsonResponse({"message": message_serialize(reply)})
    if reply is None:
        messages.error(request, error)
    return redirect(_conversation_url(conversation))


@permission_required(PERMISSION)
@require_POST
def inbox_release(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Hand the conversation back to the assistant."""
    conversation = handoff_release(conversation=inbox_conversation_get(pk=pk))
    logger.info("%s handed widget conversation %s back", request.user, conversation.pk)
    messages.success(request, gettext("The assistant answers the visitor again."))
    return redirect(_conversation_url(conversation))


@permission_required(PERMISSION)
@require_POST
def inbox_close(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Close the conversation; the visitor's next message starts a new one."""
    conversation = handoff_close(conversation=inbox_conversation_get(pk=pk))
    logger.info("%s closed widget conversation %s", request.user, conversation.pk)
    messages.success(request, gettext("Conversation closed."))
    return redirect(_conversation_url(conversation))


urlpatterns = [
    path("", inbox, name="inbox"),
    path("<int:pk>/", inbox_conversation, name="inbox-conversation"),
    path("<int:pk>/take/", inbox_take, name="inbox-take"),
    path("<int:pk>/reply/", inbox_reply, name="inbox-reply"),
    path("<int:pk>/release/", inbox_release, name="inbox-release"),
    path("<int:pk>/close/", inbox_close, name="inbox-close"),
]
