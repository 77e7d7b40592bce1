"""Reads of content filter rules and their hits."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Max

from models_admin.models import FilterHit, FilterRule


def filter_specs(*, enabled_only: bool = True) -> list[dict[str, Any]]:
    """Every rule as the matcher takes it, in priority order."""
    rules = FilterRule.objects.order_by("priority", "id")
    if enabled_only:
        rules = rules.filter(enabled=True)
    return [rule.spec() for rule in rules]


def filter_rules_export() -> list[dict[str, Any]]:
    """Every rule as JSON-ready data that ``filter_rules_import`` takes."""
    from models_admin.services.filters import RULE_FIELDS

    out = []
    for rule in FilterRule.objects.order_by("priority", "id"):
        data = {name: getattr(rule, name) for name in RULE_FIELDS if name != "site"}
        data["site"] = rule.site_id
        data["keywords"] = rule.keyword_list()
        out.append(data)
    return out


def filter_hit_counts() -> dict[int, dict[str, Any]]:
    """Per rule id: hits and the time of the latest."""
    rows = (
        FilterHit.objects.filter(rule__isnull=False)
        .values("rule_id")
        .annotate(hits=Count("id"), last=Max("created_at"))
    )
    return {row["rule_id"]: {"hits": row["hits"], "last": row["last"]} for row in rows}
