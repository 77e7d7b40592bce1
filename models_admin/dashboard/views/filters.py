"""The content-filter area of the dashboard: the rules (list, create,
edit with a trial run of the unsaved rule, switch on and off, delete),
a test panel that runs rules on a sample text, import and export of the
rules as JSON, and the audit of every hit.

Looking and testing are for staff; creating and importing need
``models_admin.add_filterrule``, changing and switching
``models_admin.change_filterrule``, deleting (and an import that replaces
the rules) ``models_admin.delete_filterrule``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext, pgettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from models_admin.dashboard.forms.common import errors_by_field
from models_admin.dashboard.forms.filters import (
    TEST_TEXT_MAX_CHARS,
    FilterHitFilterForm,
    FilterImportForm,
    FilterRuleForm,
    FilterTestForm,
    FilterToggleForm,
)
from models_admin.dashboard.paging import query_without
from models_admin.dashboard.selectors.filter_audit import (
    filter_hit_totals,
    filter_hits_list,
    filter_hits_page,
    filter_preview,
    filter_rule_get,
    filter_rule_hit_count,
    filter_rules_overview,
)
from models_admin.dashboard.services.review import filter_hit_excerpts_viewed
from models_admin.dashboard.views.access import (
    permission_required,
    staff_member,
    staff_required,
)
from models_admin.dashboard.views.editing import EditPages
from models_admin.dashboard.views.http import json_error, json_object_body, next_url
from models_admin.filters import (
    filter_rule_delete,
    filter_rule_enable,
    filter_rule_save,
    filter_rules_export,
    filter_rules_import,
    filter_specs,
)
from models_admin.models import FilterRule

logger = logging.getLogger(__name__)

ADD = "models_admin.add_filterrule"
CHANGE = "models_admin.change_filterrule"
DELETE = "models_admin.delete_filterrule"
REVIEW = "chat.review_conversation"
#: Keywords the rule list shows of a keyword rule.
KEYWORDS_SHOWN = 3
#: Bytes of JSON the test panel reads: the longest text, escaped, and a draft.
TEST_BODY_MAX_BYTES = TEST_TEXT_MAX_CHARS * 12 + 200_000


def _rights(request: HttpRequest) -> dict[str, bool]:
    user = request.user
    return {
        "can_add": user.has_perm(ADD),
        "can_change": user.has_perm(CHANGE),
        "can_delete": user.has_perm(DELETE),
    }


def _matches_summary(rule: FilterRule) -> dict[str, Any]:
    """What the rule list says a rule looks for."""
    if rule.kind == FilterRule.Kind.KEYWORDS:
        words = rule.keyword_list()
        return {
            "count": len(words),
            "shown": words[:KEYWORDS_SHOWN],
            "more": max(len(words) - KEYWORDS_SHOWN, 0),
        }
    if rule.kind == FilterRule.Kind.REGEX:
        return {"pattern": rule.pattern}
    return {"preset": rule.get_preset_display()}


# --- rules ------------------------------------------------------------------


@staff_required
@require_GET
def filter_list(request: HttpRequest) -> HttpResponse:
    """Every rule in priority order with its hits."""
    rows = [{**row, "summary": _matches_summary(row["rule"])} for row in filter_rules_overview()]
    return render(
        request,
        "dashboard/filters/list.html",
        {
            "section": "filters",
            "rows": rows,
            "enabled_count": sum(1 for row in rows if row["rule"].enabled),
            **_rights(request),
        },
    )


def _rule_page(
    request: HttpRequest, form: FilterRuleForm, rule: FilterRule | None, status: int = 200
) -> HttpResponse:
    context = {
        "section": "filters",
        "form": form,
        "rule": rule,
        "hit_count": filter_rule_hit_count(rule=rule) if rule is not None else 0,
        "test_url": reverse("dashboard:filter-test"),
        "default_notice": settings.FILTER_BLOCK_NOTICE,
        **_rights(request),
    }
    return render(request, "dashboard/filters/form.html", context, status=status)


def _rule_save(request: HttpRequest, form: FilterRuleForm, rule: FilterRule | None) -> FilterRule:
    return filter_rule_save(data=form.rule_data(), by=staff_member(request), rule=rule)


def _rule_saved(request: HttpRequest, rule: FilterRule, created: bool) -> HttpResponse:
    logger.info("%s saved filter rule %s (%s)", request.user, rule.pk, rule.name)
    done = gettext("Rule “%(name)s” created.") if created else gettext("Rule “%(name)s” saved.")
    note = done % {"name": rule.name}
    if not rule.enabled:
        note += " " + gettext("It is off.")
    messages.success(request, note)
    return redirect("dashboard:filters")


filter_new, filter_edit = EditPages(
    form=FilterRuleForm,
    initial=FilterRuleForm.initial_for,
    get=lambda pk: filter_rule_get(pk=pk),
    save=_rule_save,
    saved=_rule_saved,
    page=_rule_page,
    add_permission=ADD,
    change_permission=CHANGE,
).views()


@permission_required(CHANGE)
@require_POST
def filter_toggle(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Switch a rule on or off."""
    rule = filter_rule_get(pk=pk)
    target = next_url(request, reverse("dashboard:filters"))
    form = FilterToggleForm(request.POST)
    if not form.is_valid():
        messages.error(request, gettext("Say whether the rule is to be on or off."))
        return HttpResponseRedirect(target)
    enabled = form.cleaned_data["enabled"]
    if rule.enabled == enabled:
        messages.info(
            request,
            gettext("Rule “%(name)s” was already %(enabled)s.")
            % {"name": rule.name, "enabled": _on(enabled)},
        )
        return HttpResponseRedirect(target)
    filter_rule_enable(rule=rule, enabled=enabled, by=staff_member(request))
    logger.info("%s switched filter rule %s %s", request.user, rule.pk, enabled)
    messages.success(
        request,
        gettext("Rule “%(name)s” is %(enabled)s.") % {"name": rule.name, "enabled": _on(enabled)},
    )
    return HttpResponseRedirect(target)


def _on(enabled: bool) -> str:
    return pgettext("a filter rule", "on") if enabled else pgettext("a filter rule", "off")


@permission_required(DELETE)
@require_http_methods(["GET", "POST"])
def filter_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and delete (POST) a rule; its hits stay in the audit
    under its name."""
    rule = filter_rule_get(pk=pk)
    if request.method == "POST":
        name = rule.name
        filter_rule_delete(rule=rule)
        logger.info("%s deleted filter rule %s (%s)", request.user, pk, name)
        messages.success(
            request,
            gettext("Rule “%(name)s” deleted; its hits stay in the audit.") % {"name": name},
        )
        return redirect("dashboard:filters")
    return render(
        request,
        "dashboard/filters/delete.html",
        {"section": "filters", "rule": rule, "hit_count": filter_rule_hit_count(rule=rule)},
    )


# --- the test panel -----------------------------------------------------------


def _test_run(body: dict[str, Any]) -> JsonResponse:
    """Answer one dry run: the saved rules (all enabled ones, or those in
    ``rules``) or an unsaved ``draft`` rule on ``text``."""
    if not isinstance(body.get("text", ""), str):
        return json_error(
            gettext("The text must be a string."), errors={"text": [gettext("Not text.")]}
        )
    draft = body.get("draft")
    fields: dict[str, Any] = {k: body[k] for k in ("text", "scope", "surface") if k in body}
    if draft is None and body.get("rules") is not None:
        if not isinstance(body["rules"], list):
            return json_error(gettext("rules must be a list of rule ids."))
        fields["rules"] = [str(value) for value in body["rules"]]
    form = FilterTestForm(fields)
    if not form.is_valid():
        errors = errors_by_field(form)
        return json_error(next(iter(errors.values()))[0], errors=errors)
    data = form.cleaned_data
    if draft is not None:
        if not isinstance(draft, dict):
            return json_error(gettext("draft must be an object of rule fields."))
        rule_form = FilterRuleForm(draft, draft=True)
        if not rule_form.is_valid():
            return json_error(
                gettext("The draft rule is not valid."), rule_errors=errors_by_field(rule_form)
            )
        specs = [rule_form.draft_spec()]
    elif "rules" in fields:
        chosen = {rule.pk for rule in data["rules"]}
        specs = [spec for spec in filter_specs(enabled_only=False) if spec["id"] in chosen]
    else:
        specs = filter_specs()
    preview = filter_preview(
        text=data["text"],
        specs=specs,
        scope=data["scope"],
        surface=data["surface"],
        notice=settings.FILTER_BLOCK_NOTICE,
    )
    if draft is not None and preview["errors"]:
        rule_errors: dict[str, list[str]] = {}
        for error in preview["errors"]:
            rule_errors.setdefault(error["field"], []).append(error["message"])
        return json_error(gettext("The draft rule does not compile."), rule_errors=rule_errors)
    return JsonResponse(preview)


@staff_required
@require_http_methods(["GET", "POST"])
def filter_test(request: HttpRequest) -> HttpResponse:
    """The test panel (GET); POST ``{"text", "scope", "surface", "rules":
    [ids] | absent, "draft": {rule fields} | absent}`` as JSON to run
    rules on the text without storing anything."""
    if request.method == "GET":
        return render(
            request,
            "dashboard/filters/test.html",
            {
                "section": "filters",
                "form": FilterTestForm(),
                "has_rules": FilterRule.objects.exists(),
                "default_notice": settings.FILTER_BLOCK_NOTICE,
            },
        )
    body = json_object_body(request, max_bytes=TEST_BODY_MAX_BYTES)
    if isinstance(body, JsonResponse):
        return body
    return _test_run(body)


# --- import and export --------------------------------------------------------


@staff_required
@require_GET
def filters_export(request: HttpRequest) -> HttpResponse:
    """Download every rule as JSON that the import takes back."""
    body = json.dumps(filter_rules_export(), indent=2, ensure_ascii=False) + "\n"
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    filename = f"filter-rules-{timezone.localdate():%Y-%m-%d}.json"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@permission_required(ADD)
@require_http_methods(["GET", "POST"])
def filters_import(request: HttpRequest) -> HttpResponse:
    """Upload a rules file (GET shows the form). All or nothing: one bad
    rule and none is saved, with every problem listed."""
    problems: list[str] = []
    if request.method == "POST":
        form = FilterImportForm(request.POST, request.FILES)
        if form.is_valid():
            replace = form.cleaned_data["replace"]
            if replace and not request.user.has_perm(DELETE):
                form.add_error(
                    None,
                    gettext(
                        "Replacing deletes the current rules, which your "
                        "account may not do (needs %(delete)s)."
                    )
                    % {"delete": DELETE},
                )
            else:
                try:
                    imported = filter_rules_import(
                        rules=form.cleaned_data["rules"], by=staff_member(request), replace=replace
                    )
                except ValidationError as exc:
                    problems = list(exc.messages)
                else:
                    count = len(imported)
                    logger.info(
                        "%s imported %s filter rules (replace=%s)", request.user, count, replace
                    )
                    what = gettext("replaced the rules") if replace else gettext("added")
                    messages.success(
                        request,
                        ngettext(
                            "Imported %(count)s rule (%(what)s).",
                            "Imported %(count)s rules (%(what)s).",
                            count,
                        )
                        % {"count": count, "what": what},
                    )
                    return redirect("dashboard:filters")
    else:
        form = FilterImportForm()
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "dashboard/filters/import.html",
        {"section": "filters", "form": form, "problems": problems, **_rights(request)},
        status=status,
    )


# --- hits ---------------------------------------------------------------------


@staff_required
@require_GET
def filter_hits(request: HttpRequest) -> HttpResponse:
    """Every hit, newest first, filtered; with per-rule totals. The
    excerpts (users' words) are for staff with the review right, and
    each page of them is a view in the review log."""
    can_review = request.user.has_perm(REVIEW)
    filters = FilterHitFilterForm(request.GET or None, excerpts=can_review)
    rows = filter_hits_list(**filters.selector_kwargs(), excerpts=can_review)
    page = filter_hits_page(rows=rows, page=request.GET.get("page"))
    if can_review and page.object_list:
        filter_hit_excerpts_viewed(staff=staff_member(request), hits=page.object_list)
    return render(
        request,
        "dashboard/filters/hits.html",
        {
            "section": "filters",
            "filters": filters,
            "page": page,
            "totals": filter_hit_totals(rows=rows),
            "query": query_without(request),
            "can_review": can_review,
        },
    )


urlpatterns = [
    path("", filter_list, name="filters"),
    path("new/", filter_new, name="filter-new"),
    path("<int:pk>/", filter_edit, name="filter-edit"),
    path("<int:pk>/toggle/", filter_toggle, name="filter-toggle"),
    path("<int:pk>/delete/", filter_delete, name="filter-delete"),
    path("test/", filter_test, name="filter-test"),
    path("export.json", filters_export, name="filters-export"),
    path("import/", filters_import, name="filters-import"),
    path("hits/", filter_hits, name="filter-hits"),
]
