"""The knowledge area of the dashboard: every knowledge base with its
sources and index, a base's page (its settings, its sources with upload
and web addresses, a test box that shows what a question retrieves and
the prompt the chat would send, and how often the answers found a
passage), and the questions it had nothing on.

Looking and testing are for staff; creating, changing and deleting bases
and their sources need ``models_admin.manage_knowledge``. The questions
people asked are users' words: they are shown to staff who review
conversations or manage the knowledge, and each page of them is a view
in the review log.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.formats import number_format
from django.utils.translation import gettext, ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat.services.knowledge import grounding_for
from models_admin.dashboard.forms.knowledge import (
    KnowledgeBaseForm,
    KnowledgeTestForm,
    KnowledgeUploadForm,
    KnowledgeUrlsForm,
    size_text,
)
from models_admin.dashboard.selectors.knowledge import (
    knowledge_base_get,
    knowledge_bases_list,
    knowledge_demo_get,
    knowledge_gap_count,
    knowledge_gaps,
    knowledge_hit_rates,
    knowledge_source_get,
    knowledge_sources,
    knowledge_users,
)
from models_admin.dashboard.services.review import review_event_record
from models_admin.dashboard.views.access import (
    permission_required,
    staff_member,
    staff_required,
)
from models_admin.dashboard.views.editing import EditPages
from models_admin.models import KnowledgeBase, KnowledgeSource, ReviewEvent
from models_admin.selectors import model_version_get_production
from models_admin.selectors.knowledge import embedding_model, knowledge_index_state
from models_admin.services.knowledge import (
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
    knowledge_demo_create,
    knowledge_file_add,
    knowledge_index_rebuild,
    knowledge_source_delete,
    knowledge_source_refresh,
    knowledge_urls_add,
)

logger = logging.getLogger(__name__)

MANAGE = "models_admin.manage_knowledge"
REVIEW = "chat.review_conversation"


def _rights(request: HttpRequest) -> dict[str, bool]:
    return {"can_manage": request.user.has_perm(MANAGE)}


def _base_url(base: KnowledgeBase, anchor: str = "") -> str:
    url = reverse("dashboard:knowledge-base", args=[base.pk])
    return f"{url}#{anchor}" if anchor else url


# --- the list of bases -------------------------------------------------------


def _list_page(
    request: HttpRequest, form: KnowledgeBaseForm | None = None, status: int = 200
) -> HttpResponse:
    rights = _rights(request)
    if form is None and rights["can_manage"]:
        form = KnowledgeBaseForm()
    return render(
        request,
        "dashboard/knowledge/list.html",
        {
            "section": "knowledge",
            "rows": knowledge_bases_list(),
            "form": form if rights["can_manage"] else None,
            "demo": knowledge_demo_get(),
            "dense_now": embedding_model() is not None,
            **rights,
        },
        status=status,
    )


@staff_required
@require_GET
def knowledge_list(request: HttpRequest) -> HttpResponse:
    """Every base with its sources, passages and index."""
    return _list_page(request)


@permission_required(MANAGE)
@require_POST
def knowledge_demo(request: HttpRequest) -> HttpResponse:
    """Create the demo shop's help center (or import its articles again)
    and open it."""
    existed = knowledge_demo_get() is not None
    try:
        base = knowledge_demo_create(user=staff_member(request))
    except (ValidationError, IntegrityError):
        # Another click created it meanwhile (the name is unique): use it.
        base = knowledge_demo_create(user=staff_member(request))
        existed = True
    logger.info("%s created the demo knowledge base %s", request.user, base.pk)
    what = gettext("Its articles were imported again") if existed else gettext("It is created")
    messages.success(
        request,
        gettext(
            "“%(name)s”: %(what)s; members may use it in the chat. "
            "The index is built in the background."
        )
        % {"name": base.name, "what": what},
    )
    return redirect("dashboard:knowledge-base", pk=base.pk)


# --- a base's page -----------------------------------------------------------


def _test_run(base: KnowledgeBase, question: str) -> dict[str, Any]:
    """What the test box shows of ``question``: the passages retrieved
    (those that fit the prompt marked), whether the base counts it as
    found, the search time, and the system text the chat would send (or
    the reply it gives instead)."""
    version = model_version_get_production()
    try:
        grounding = grounding_for(base=base, question=question, version=version)
    except Exception as exc:
        logger.exception("The test search of knowledge base %s failed", base.pk)
        return {
            "question": question,
            "error": gettext("The search failed: %(exc)s") % {"exc": exc},
        }
    retrieval = grounding.retrieval
    in_prompt = len(grounding.passages)
    return {
        "question": question,
        "retrieval": retrieval,
        "found": grounding.found,
        "cards": [
            {**passage.card(number), "in_prompt": number <= in_prompt}
            for number, passage in enumerate(retrieval.passages, start=1)
        ],
        "in_prompt": in_prompt,
        "milliseconds": retrieval.seconds * 1000,
        "threshold": base.min_similarity if retrieval.dense else base.min_match,
        "best": retrieval.best_similarity if retrieval.dense else retrieval.best_match,
        "system_text": grounding.system_text() if grounding.found else "",
        "version": version,
    }


def _source_rows(base: KnowledgeBase) -> list[dict[str, Any]]:
    return [
        {"source": source, "size": size_text(source.size_bytes) if source.size_bytes else ""}
        for source in knowledge_sources(base=base)
    ]


def _base_page(
    request: HttpRequest,
    base: KnowledgeBase,
    *,
    form: KnowledgeBaseForm | None = None,
    upload_form: KnowledgeUploadForm | None = None,
    urls_form: KnowledgeUrlsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """The base's page, with the forms given (bound, with their errors)
    and fresh ones for the others."""
    rights = _rights(request)
    if form is None:
        form = KnowledgeBaseForm(
            initial=KnowledgeBaseForm.initial_for(base), read_only=not rights["can_manage"]
        )
    test_form = KnowledgeTestForm(request.GET if "q" in request.GET else None)
    test = _test_run(base, test_form.cleaned_data["q"]) if test_form.is_valid() else None
    sources = _source_rows(base)
    statuses = [row["source"].status for row in sources]
    context: dict[str, Any] = {
        "section": "knowledge",
        "base": base,
        "form": form,
        "index": knowledge_index_state(base=base),
        "dense_now": form.dense,
        "sources": sources,
        "pending": sum(
            1
            for state in statuses
            if state in (KnowledgeSource.Status.QUEUED, KnowledgeSource.Status.FETCHING)
        ),
        "ready": statuses.count(KnowledgeSource.Status.READY),
        "failed": statuses.count(KnowledgeSource.Status.FAILED),
        "upload_form": upload_form or KnowledgeUploadForm(),
        "urls_form": urls_form or KnowledgeUrlsForm(),
        "test_form": test_form,
        "test": test,
        "hits": knowledge_hit_rates(base=base),
        "gap_count": knowledge_gap_count(base=base),
        "users": knowledge_users(base=base),
        **rights,
    }
    return render(request, "dashboard/knowledge/base.html", context, status=status)


def _page(
    request: HttpRequest, form: KnowledgeBaseForm, base: KnowledgeBase | None, status: int = 200
) -> HttpResponse:
    if base is None:
        return _list_page(request, form, status)
    return _base_page(request, base, form=form, status=status)


def _base_save(
    request: HttpRequest, form: KnowledgeBaseForm, base: KnowledgeBase | None
) -> KnowledgeBase:
    if base is None:
        return knowledge_base_create(**form.base_data(), user=staff_member(request))
    return knowledge_base_update(base=base, **form.base_data())


def _base_saved(request: HttpRequest, base: KnowledgeBase, created: bool) -> HttpResponse:
    logger.info("%s saved knowledge base %s (%s)", request.user, base.pk, base.name)
    if created:
        messages.success(
            request,
            gettext("Knowledge base “%(name)s” created. Add its documents below.")
            % {"name": base.name},
        )
        return redirect(_base_url(base, "add"))
    messages.success(request, gettext("Settings of “%(name)s” saved.") % {"name": base.name})
    return redirect("dashboard:knowledge-base", pk=base.pk)


knowledge_new, knowledge_base_page = EditPages(
    form=KnowledgeBaseForm,
    initial=KnowledgeBaseForm.initial_for,
    get=lambda pk: knowledge_base_get(pk=pk),
    save=_base_save,
    saved=_base_saved,
    page=_page,
    add_permission=MANAGE,
    change_permission=MANAGE,
).views()


@permission_required(MANAGE)
@require_http_methods(["GET", "POST"])
def knowledge_base_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and delete (POST) a base with its sources; widget
    sites and keys that used it answer without one."""
    base = knowledge_base_get(pk=pk)
    if request.method == "POST":
        name = base.name
        knowledge_base_delete(base=base)
        logger.info("%s deleted knowledge base %s (%s)", request.user, pk, name)
        messages.success(request, gettext("Knowledge base “%(name)s” deleted.") % {"name": name})
        return redirect("dashboard:knowledge")
    return render(
        request,
        "dashboard/knowledge/delete.html",
        {
            "section": "knowledge",
            "base": base,
            "source_count": base.sources.count(),
            "passage_count": base.chunks.count(),
            "users": knowledge_users(base=base),
        },
    )


@permission_required(MANAGE)
@require_POST
def knowledge_rebuild(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Queue a build of the base's index when a change waits for one (a
    build that failed, or a queue that was away)."""
    base = knowledge_base_get(pk=pk)
    state = knowledge_index_state(base=base)
    if state["version"] and not state["stale"]:
        messages.info(
            request, gettext("The index already holds every change; there is nothing to build.")
        )
        return redirect(_base_url(base, "index"))
    knowledge_index_rebuild(base=base)
    logger.info("%s queued the index build of knowledge base %s", request.user, base.pk)
    messages.success(
        request,
        gettext(
            "The index build is queued. Answers use the current index until it is done; "
            "reload the page to see the new version."
        ),
    )
    return redirect(_base_url(base, "index"))


# --- sources -----------------------------------------------------------------


@permission_required(MANAGE)
@require_POST
def knowledge_upload(request: HttpRequest, pk: int) -> HttpResponse:
    """Import the uploaded files: the readable ones are stored, and every
    other is named with the reason, nothing of it stored. One index build
    is queued for the lot."""
    base = knowledge_base_get(pk=pk)
    form = KnowledgeUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _base_page(request, base, upload_form=form, status=400)
    problems = list(form.refused)
    imported: list[KnowledgeSource] = []
    for upload in form.cleaned_data["documents"]:
        name = upload.name or ""
        try:
            imported.append(
                knowledge_file_add(
                    base=base,
                    filename=name,
                    data=upload.read(),
                    content_type=upload.content_type or "",
                    queue=False,
                )
            )
        except ValidationError as exc:
            problems.append((name, " ".join(exc.messages)))
    if imported:
        knowledge_index_rebuild(base=base)
        passages = sum(source.chunk_count for source in imported)
        logger.info(
            "%s imported %s files into knowledge base %s", request.user, len(imported), base.pk
        )
        messages.success(
            request,
            gettext("Imported %(file)s (%(passage)s). The index is rebuilt in the background.")
            % {
                "file": ngettext("%(count)s file", "%(count)s files", len(imported))
                % {"count": number_format(len(imported), force_grouping=True)},
                "passage": ngettext("%(count)s passage", "%(count)s passages", passages)
                % {"count": number_format(passages, force_grouping=True)},
            },
        )
    for name, reason in problems:
        messages.error(
            request,
            gettext("“%(name)s” was not imported: %(reason)s") % {"name": name, "reason": reason},
        )
    return redirect(_base_url(base, "sources"))


@permission_required(MANAGE)
@require_POST
def knowledge_urls(request: HttpRequest, pk: int) -> HttpResponse:
    """Add web pages and queue their fetch; a bad address refuses them
    all, each bad line named."""
    base = knowledge_base_get(pk=pk)
    form = KnowledgeUrlsForm(request.POST)
    if form.is_valid():
        try:
            sources = knowledge_urls_add(base=base, urls=form.cleaned_data["urls"])
        except ValidationError as exc:
            form.add_error("urls", exc.messages)
        else:
            logger.info(
                "%s added %s addresses to knowledge base %s", request.user, len(sources), base.pk
            )
            messages.success(
                request,
                gettext("%(address)s queued to be fetched. Reload the page to see how they went.")
                % {
                    "address": ngettext("%(count)s address", "%(count)s addresses", len(sources))
                    % {"count": number_format(len(sources), force_grouping=True)}
                },
            )
            return redirect(_base_url(base, "sources"))
    return _base_page(request, base, urls_form=form, status=400)


@permission_required(MANAGE)
@require_POST
def knowledge_source_refetch(request: HttpRequest, pk: int, source_pk: int) -> HttpResponse:
    """Fetch a web page source again."""
    base = knowledge_base_get(pk=pk)
    source = knowledge_source_get(base=base, pk=source_pk)
    try:
        knowledge_source_refresh(source=source)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            gettext("“%(source)s” is queued to be fetched again. Reload to see it.")
            % {"source": source},
        )
    return redirect(_base_url(base, "sources"))


@permission_required(MANAGE)
@require_http_methods(["GET", "POST"])
def knowledge_source_remove(request: HttpRequest, pk: int, source_pk: int) -> HttpResponse:
    """Confirm (GET) and delete (POST) a source with its passages."""
    base = knowledge_base_get(pk=pk)
    source = knowledge_source_get(base=base, pk=source_pk)
    if request.method == "POST":
        label = str(source)
        knowledge_source_delete(source=source)
        logger.info("%s deleted knowledge source %s of base %s", request.user, source_pk, pk)
        messages.success(
            request,
            gettext("“%(label)s” deleted. Answers stop citing it once the index is rebuilt.")
            % {"label": label},
        )
        return redirect(_base_url(base, "sources"))
    return render(
        request,
        "dashboard/knowledge/source_delete.html",
        {"section": "knowledge", "base": base, "source": source},
    )


# --- gaps ----------------------------------------------------------------------


def _gaps_viewed(
    *, staff: AbstractBaseUser, base: KnowledgeBase, gaps: list[dict[str, Any]]
) -> None:
    """Record that ``staff`` read the questions of ``gaps``: one view a
    conversation, naming the answers, as the filter hit audit does."""
    by_conversation: dict[int, list[int]] = {}
    conversations = {}
    for gap in gaps:
        answer = gap["answer"]
        by_conversation.setdefault(answer.conversation_id, []).append(answer.pk)
        conversations[answer.conversation_id] = answer.conversation
    with transaction.atomic():
        for conversation_id, answer_ids in by_conversation.items():
            numbers = ", ".join(f"#{pk}" for pk in sorted(answer_ids))
            review_event_record(
                staff=staff,
                conversation=conversations[conversation_id],
                action=ReviewEvent.Action.VIEW,
                detail=f"knowledge gaps of \u201c{base.name}\u201d: answers {numbers}",
            )


@staff_required
@require_GET
def knowledge_gaps_page(request: HttpRequest, pk: int) -> HttpResponse:
    """The newest questions the base had no good passage for: the gaps to
    write documents for."""
    base = knowledge_base_get(pk=pk)
    can_read = request.user.has_perm(REVIEW) or request.user.has_perm(MANAGE)
    gaps = knowledge_gaps(base=base) if can_read else []
    if gaps:
        _gaps_viewed(staff=staff_member(request), base=base, gaps=gaps)
    return render(
        request,
        "dashboard/knowledge/gaps.html",
        {
            "section": "knowledge",
            "base": base,
            "hits": knowledge_hit_rates(base=base),
            "gaps": gaps,
            "gap_count": knowledge_gap_count(base=base),
            "can_read": can_read,
            "can_review": request.user.has_perm(REVIEW),
            **_rights(request),
        },
    )


urlpatterns = [
    path("", knowledge_list, name="knowledge"),
    path("new/", knowledge_new, name="knowledge-new"),
    path("demo/", knowledge_demo, name="knowledge-demo"),
    path("<int:pk>/", knowledge_base_page, name="knowledge-base"),
    path("<int:pk>/delete/", knowledge_base_remove, name="knowledge-delete"),
    path("<int:pk>/rebuild/", knowledge_rebuild, name="knowledge-rebuild"),
    path("<int:pk>/upload/", knowledge_upload, name="knowledge-upload"),
    path("<int:pk>/urls/", knowledge_urls, name="knowledge-urls"),
    path("<int:pk>/gaps/", knowledge_gaps_page, name="knowledge-gaps"),
    path(
        "<int:pk>/sources/<int:source_pk>/fetch/",
        knowledge_source_refetch,
        name="knowledge-source-fetch",
    ),
    path(
        "<int:pk>/sources/<int:source_pk>/delete/",
        knowledge_source_remove,
        name="knowledge-source-delete",
    ),
]
