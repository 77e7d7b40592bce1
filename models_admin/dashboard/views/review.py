"""Conversation review: staff with ``chat.review_conversation`` browse
every user's conversations, open one (each opening is audit-logged), flag
them and add them to training datasets."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from models_admin.dashboard.forms.review import (
    DatasetAddForm,
    FlagForm,
    ReviewFilterForm,
    ReviewLogFilterForm,
)
from models_admin.dashboard.paging import query_without
from models_admin.dashboard.selectors.review import (
    conversation_review_get,
    conversation_review_load,
    conversations_for_review,
    conversations_review_page,
    review_events_list,
    review_events_page,
)
from models_admin.dashboard.services.review import (
    conversation_flag,
    conversation_unflag,
    conversations_dataset_add,
    review_event_record,
)
from models_admin.dashboard.views.access import permission_required, staff_member
from models_admin.dashboard.views.http import next_url
from models_admin.models import ReviewEvent

PERMISSION = "chat.review_conversation"


def _errors_text(error: ValidationError | Form) -> str:
    if isinstance(error, Form):
        return " ".join(str(e) for errors in error.errors.values() for e in errors)
    return " ".join(error.messages)


@permission_required(PERMISSION)
@require_GET
def conversations(request: HttpRequest) -> HttpResponse:
    # The list shows titles and counts only, so reading it is not logged;
    # opening a conversation is.
    filters = ReviewFilterForm(request.GET or None)
    rows = conversations_for_review(**filters.selector_kwargs())
    page = conversations_review_page(rows=rows, page=request.GET.get("page"))
    return render(
        request,
        "dashboard/review/list.html",
        {
            "section": "conversations",
            "filters": filters,
            "page": page,
            "query": query_without(request),
            "dataset_form": DatasetAddForm(),
        },
    )


@permission_required(PERMISSION)
@require_GET
def conversation_review(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_review_get(pk=pk)
    review_event_record(
        staff=staff_member(request), conversation=conversation, action=ReviewEvent.Action.VIEW
    )
    review = conversation_review_load(pk=conversation.pk)
    return render(
        request,
        "dashboard/review/detail.html",
        {
            "section": "conversations",
            "review": review,
            "conversation": review.conversation,
            "flag_form": FlagForm(),
            "dataset_form": DatasetAddForm(initial={"conversations": [conversation.pk]}),
        },
    )


@permission_required(PERMISSION)
@require_POST
def conversation_flag_view(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_review_get(pk=pk)
    form = FlagForm(request.POST)
    if not form.is_valid():
        messages.error(request, _errors_text(form))
        return redirect("dashboard:conversation-review", pk=conversation.pk)
    try:
        if form.cleaned_data["action"] == "flag":
            conversation_flag(
                conversation=conversation,
                by=staff_member(request),
                reason=form.cleaned_data["reason"],
            )
            messages.success(request, gettext("Conversation flagged."))
        else:
            conversation_unflag(
                conversation=conversation,
                by=staff_member(request),
                reason=form.cleaned_data["reason"],
            )
            messages.success(request, gettext("Flag cleared."))
    except ValidationError as exc:
        messages.error(request, _errors_text(exc))
    return redirect("dashboard:conversation-review", pk=conversation.pk)


@permission_required(PERMISSION)
@require_POST
def conversations_dataset(request: HttpRequest) -> HttpResponse:
    fallback = reverse("dashboard:conversations")
    form = DatasetAddForm(request.POST)
    if not form.is_valid():
        messages.error(request, _errors_text(form))
        return HttpResponseRedirect(next_url(request, fallback))
    data = form.cleaned_data
    try:
        dataset, added, examples = conversations_dataset_add(
            conversations=list(data["conversations"]),
            by=staff_member(request),
            dataset=data["dataset"],
            new_name=data["new_name"],
            thumbs_up_only=data["thumbs_up_only"],
            exclude_flagged=data["exclude_flagged"],
        )
    except ValidationError as exc:
        messages.error(request, _errors_text(exc))
        return HttpResponseRedirect(next_url(request, fallback))
    selected = len(data["conversations"])
    skipped = (
        " The others were flagged, had no answer to train on or are in it already."
        if added < selected
        else ""
    )
    messages.success(
        request,
        format_html(
            'Added {} of {} selected conversation{} ({} example{}) to <a href="{}">{}</a>.{}',
            added,
            selected,
            "" if selected == 1 else "s",
            examples,
            "" if examples == 1 else "s",
            reverse("dashboard:dataset", args=[dataset.pk]),
            dataset.name,
            skipped,
        ),
    )
    return HttpResponseRedirect(next_url(request, fallback))


@permission_required(PERMISSION)
@require_GET
def review_log(request: HttpRequest) -> HttpResponse:
    filters = ReviewLogFilterForm(request.GET or None)
    page = review_events_page(
        rows=review_events_list(**filters.selector_kwargs()), page=request.GET.get("page")
    )
    return render(
        request,
        "dashboard/review/log.html",
        {
            "section": "conversations",
            "filters": filters,
            "page": page,
            "query": query_without(request),
        },
    )


urlpatterns = [
    path("", conversations, name="conversations"),
    path("<int:pk>/", conversation_review, name="conversation-review"),
    path("<int:pk>/flag/", conversation_flag_view, name="conversation-flag"),
    path("dataset/", conversations_dataset, name="conversations-dataset"),
    path("log/", review_log, name="review-log"),
]
