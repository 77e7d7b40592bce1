"""Reads for the content-filter pages: the rules with their hit counts,
the audit of hits with its filters and per-rule totals, and the test
panel's dry run of rules on a sample text."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.paginator import Page
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils.translation import gettext

from inference.content_filter import Match, RuleError, RuleSet
from models_admin.dashboard.paging import page_get
from models_admin.filters import filter_hit_counts
from models_admin.models import FilterHit, FilterRule

HITS_PER_PAGE = 50
#: Names of deleted rules the hit filter offers at most.
GONE_RULES_LIMIT = 200
#: Prefix of a hit-filter value that names a deleted rule, not an id.
GONE_PREFIX = "name:"


# --- rules ------------------------------------------------------------------


def filter_rule_get(*, pk: Any) -> FilterRule:
    """Return a rule or raise Http404."""
    try:
        return FilterRule.objects.select_related("created_by", "updated_by").get(pk=int(pk))
    except (FilterRule.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(gettext("No such filter rule.")) from None


def filter_rules_overview() -> list[dict[str, Any]]:
    """Every rule in priority order with ``hits`` (count) and ``last_hit``
    (time of the latest, or None)."""
    counts = filter_hit_counts()
    rules = FilterRule.objects.select_related("created_by", "updated_by").order_by(
        "priority", "id"
    )
    rows = []
    for rule in rules:
        found = counts.get(rule.pk, {})
        rows.append({"rule": rule, "hits": found.get("hits", 0), "last_hit": found.get("last")})
    return rows


def filter_rule_hit_count(*, rule: FilterRule) -> int:
    return FilterHit.objects.filter(rule=rule).count()


# --- hits -------------------------------------------------------------------


def filter_hit_rule_choices() -> list[tuple[str, str]]:
    """Values of the hit filter's rule field: each rule's id, then each
    deleted rule's name (``name:<name>``) that still has hits."""
    choices = [
        (str(pk), name)
        for pk, name in FilterRule.objects.order_by("name").values_list("pk", "name")
    ]
    gone = (
        FilterHit.objects.filter(rule__isnull=True)
        .order_by("rule_name")
        .values_list("rule_name", flat=True)
        .distinct()[:GONE_RULES_LIMIT]
    )
    choices.extend((f"{GONE_PREFIX}{name}", f"{name} (deleted)") for name in gone)
    return choices


def filter_hits_list(
    *,
    rule_id: int | None = None,
    rule_name: str = "",
    action: str = "",
    scope: str = "",
    surface: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    query: str = "",
    excerpts: bool = True,
) -> QuerySet[FilterHit]:
    """Hits newest first. ``rule_id`` keeps one rule's hits; ``rule_name``
    the hits of a deleted rule of that name; ``query`` matches part of the
    excerpt, ignoring case; the dates bound the day of the hit, both
    included. With ``excerpts=False`` the excerpts are neither read nor
    searched (``query`` is ignored)."""
    rows = FilterHit.objects.select_related("rule", "user")
    if not excerpts:
        rows = rows.defer("excerpt")
        query = ""
    if rule_id is not None:
        rows = rows.filter(rule_id=rule_id)
    elif rule_name:
        rows = rows.filter(rule__isnull=True, rule_name=rule_name)
    if action:
        rows = rows.filter(action=action)
    if scope:
        rows = rows.filter(scope=scope)
    if surface:
        rows = rows.filter(surface=surface)
    if date_from is not None:
        rows = rows.filter(created_at__date__gte=date_from)
    if date_to is not None:
        rows = rows.filter(created_at__date__lte=date_to)
    if query.strip():
        rows = rows.filter(excerpt__icontains=query.strip())
    return rows.order_by("-created_at", "-id")


def filter_hits_page(*, rows: QuerySet[FilterHit], page: Any = 1) -> Page[Any]:
    return page_get(rows, per_page=HITS_PER_PAGE, number=page)


def filter_hit_totals(*, rows: QuerySet[FilterHit]) -> list[dict[str, Any]]:
    """Per rule among ``rows``: ``hits``, ``blocks``, ``masks`` and
    ``flags``, most hits first. A rule that still exists is one row under
    its current name (``rule_id`` set); the hits of deleted rules are
    grouped by the name they had (``rule_id`` None)."""
    grouped = (
        rows.order_by()
        .values("rule_id", "rule_name")
        .annotate(
            hits=Count("id"),
            blocks=Count("id", filter=Q(action=FilterRule.Action.BLOCK)),
            masks=Count("id", filter=Q(action=FilterRule.Action.MASK)),
            flags=Count("id", filter=Q(action=FilterRule.Action.FLAG)),
        )
    )
    totals: dict[Any, dict[str, Any]] = {}
    for row in grouped:
        key = row["rule_id"] if row["rule_id"] is not None else (GONE_PREFIX, row["rule_name"])
        total = totals.setdefault(
            key,
            {
                "rule_id": row["rule_id"],
                "name": row["rule_name"],
                "hits": 0,
                "blocks": 0,
                "masks": 0,
                "flags": 0,
            },
        )
        for name in ("hits", "blocks", "masks", "flags"):
            total[name] += row[name]
    names = dict(
        FilterRule.objects.filter(pk__in=[t["rule_id"] for t in totals.values()]).values_list(
            "pk", "name"
        )
    )
    for total in totals.values():
        if total["rule_id"] is not None:
            total["name"] = names.get(total["rule_id"], total["name"])
        total["filter_value"] = (
            str(total["rule_id"]) if total["rule_id"] is not None else GONE_PREFIX + total["name"]
        )
    return sorted(totals.values(), key=lambda t: (-t["hits"], t["name"].casefold()))


# --- the test panel ---------------------------------------------------------


def _segments(text: str, matches: list[Match]) -> list[dict[str, Any]]:
    """Cut text into plain pieces and matched pieces (``match`` is the
    index into ``matches``), so a page can mark matches without counting
    characters itself (browsers count UTF-16 units, Python code points).
    Overlapping matches (a timed-out rule covers the rest of the text)
    keep the earlier one."""
    pieces: list[dict[str, Any]] = []
    position = 0
    for index, match in sorted(enumerate(matches), key=lambda item: item[1].start):
        start = max(match.start, position)
        if start >= match.end:
            continue
        if start > position:
            pieces.append({"text": text[position:start], "match": None})
        pieces.append({"text": text[start : match.end], "match": index})
        position = match.end
    if position < len(text):
        pieces.append({"text": text[position:], "match": None})
    return pieces


def filter_preview(
    *, text: str, specs: list[dict[str, Any]], scope: str, surface: str, notice: str
) -> dict[str, Any]:
    """Run the rules of ``specs`` that apply to scope and surface on text,
    as the site would, and return plain data:

    - ``matches``: rule_id, rule_name, action, start, end (code points),
      text, replacement (what a mask writes), timed_out;
    - ``segments``: text cut into pieces, see ``_segments``;
    - ``verdict``: text (after masks; empty when blocked), blocked,
      notice (``notice`` is the default for rules without their own),
      flagged;
    - ``flags``: rule_id, rule_name, text of every flagging match;
    - ``rules``: id, name, kind, action of the rules that ran;
    - ``errors``: rule_id, rule_name, field, message of every spec that
      does not compile (it does not run).

    Nothing is stored. A regular expression that runs out of time counts
    as a blocking match, as it does on the site.
    """
    errors: list[dict[str, Any]] = []

    def on_error(spec: dict[str, Any], exc: RuleError) -> None:
        errors.append(
            {
                "rule_id": spec.get("id"),
                "rule_name": spec.get("name") or "",
                "field": exc.field,
                "message": exc.message,
            }
        )

    rules = RuleSet.from_specs(
        specs, scope=scope, surface=surface, notice=notice, on_error=on_error
    )
    matches, _hold = rules.scan(text)
    verdict = rules.check(text)
    found = [
        {
            "rule_id": m.rule.id,
            "rule_name": m.rule.name,
            "action": FilterRule.Action.BLOCK if m.timed_out else m.rule.action,
            "start": m.start,
            "end": m.end,
            "text": m.text,
            "replacement": m.rule.mask(m.text) if m.rule.action == FilterRule.Action.MASK else "",
            "timed_out": m.timed_out,
        }
        for m in matches
    ]
    return {
        "matches": found,
        "segments": _segments(text, matches),
        "verdict": {
            "text": verdict.text,
            "blocked": verdict.blocked,
            "notice": verdict.notice,
            "flagged": verdict.flagged,
        },
        "flags": [
            {"rule_id": m["rule_id"], "rule_name": m["rule_name"], "text": m["text"]}
            for m in found
            if m["action"] == FilterRule.Action.FLAG
        ],
        "rules": [
            {"id": r.id, "name": r.name, "kind": r.kind, "action": r.action} for r in rules.rules
        ],
        "errors": errors,
    }
