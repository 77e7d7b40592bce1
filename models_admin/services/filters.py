"""Content filter rules: saving, importing and deleting them (every change
reaches the inference workers within seconds), checking incoming
messages, and recording every hit."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from inference.connection import filters_epoch_key, redis_client
from inference.content_filter import RuleSet, Verdict
from models_admin.models import FilterHit, FilterRule
from models_admin.selectors.filters import filter_specs
from models_admin.services.events import dashboard_notify_on_commit

logger = logging.getLogger(__name__)

#: The fields a rule is made of, as import and export spell them.
RULE_FIELDS = (
    "name",
    "kind",
    "keywords",
    "whole_word",
    "pattern",
    "preset",
    "scope",
    "action",
    "mask_with",
    "notice",
    "surface",
    "site",
    "priority",
    "enabled",
)


def filter_rules_changed() -> None:
    """After commit, tell workers and web processes to reload the rules."""

    def announce() -> None:
        try:
            redis_client().incr(filters_epoch_key())
        except redis.RedisError as exc:
            logger.warning("Could not announce the rule change: %s", exc)

    transaction.on_commit(announce)
    dashboard_notify_on_commit(topic="filters", payload={"type": "filters.changed"})


def _pk(user: AbstractBaseUser | None) -> Any:
    return user.pk if user is not None else None


def _assign(rule: FilterRule, data: dict[str, Any]) -> None:
    unknown = set(data) - set(RULE_FIELDS)
    if unknown:
        raise ValidationError({name: ["Not a rule field."] for name in sorted(unknown)})
    for name, value in data.items():
        if name == "keywords" and isinstance(value, list):
            value = "\n".join(str(v) for v in value)
        if name == "site":
            name = "site_id" if not hasattr(value, "pk") else "site"
        setattr(rule, name, value)


@transaction.atomic
def filter_rule_save(
    *, data: dict[str, Any], by: AbstractBaseUser | None, rule: FilterRule | None = None
) -> FilterRule:
    """Create a rule, or change ``rule``; raise ValidationError keyed by
    field (a regular expression is compiled and tried on texts built to
    make it backtrack)."""
    rule = rule or FilterRule(created_by_id=_pk(by))
    _assign(rule, data)
    rule.updated_by_id = _pk(by)
    rule.full_clean()
    rule.save()
    filter_rules_changed()
    return rule


@transaction.atomic
def filter_rule_enable(*, rule: FilterRule, enabled: bool, by: AbstractBaseUser | None) -> None:
    rule.enabled = enabled
    rule.updated_by_id = _pk(by)
    rule.save(update_fields=["enabled", "updated_by", "updated_at"])
    filter_rules_changed()


@transaction.atomic
def filter_rule_delete(*, rule: FilterRule) -> None:
    """Delete a rule; its hits stay in the audit with the rule's name."""
    rule.delete()
    filter_rules_changed()


@transaction.atomic
def filter_rules_import(
    *, rules: Any, by: AbstractBaseUser | None, replace: bool = False
) -> list[FilterRule]:
    """Create rules from exported JSON (a list of objects with the rule
    fields). All or nothing: raise ValidationError listing every bad rule
    by its position and field. With ``replace`` the current rules go."""
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ValidationError("Expected a JSON list of rule objects.")
    errors: list[str] = []
    built: list[FilterRule] = []
    for position, data in enumerate(rules, start=1):
        rule = FilterRule(created_by_id=_pk(by), updated_by_id=_pk(by))
        try:
            _assign(rule, {k: v for k, v in data.items() if k not in ("id",)})
            rule.full_clean()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                label = data.get("name") or f"rule {position}"
                errors.extend(f"#{position} {label}: {field}: {m}" for m in messages)
            continue
        built.append(rule)
    if errors:
        raise ValidationError(errors)
    if replace:
        FilterRule.objects.all().delete()
    for rule in built:
        rule.save()
    filter_rules_changed()
    return built


def content_filter_input(*, text: str, surface: str, site_id: int | None = None) -> Verdict:
    """Run the input rules of a surface (chat, widget, api), and of a
    widget site, on a message."""
    rules = RuleSet.from_specs(
        filter_specs(),
        scope="input",
        surface=surface,
        site=site_id,
        notice=settings.FILTER_BLOCK_NOTICE,
        on_error=lambda spec, exc: logger.error(
            "Filter rule %s does not compile: %s", spec.get("name"), exc.message
        ),
    )
    if not rules:
        return Verdict(text=text)
    verdict = rules.check(text)
    for hit in verdict.hits:
        if hit.timed_out:
            logger.error("Filter rule %s ran out of time; the message was blocked", hit.rule_name)
    return verdict


def filter_hits_record(
    *,
    hits: list[dict[str, Any]],
    scope: str,
    surface: str = "",
    conversation_id: int | None = None,
    message_id: int | None = None,
    user_id: int | None = None,
    visitor: str = "",
    generation_id: str = "",
) -> list[FilterHit]:
    """Store hits (``Hit.as_dict()`` rows) in the audit."""
    known = set(
        FilterRule.objects.filter(pk__in=[h.get("rule_id") for h in hits]).values_list(
            "pk", flat=True
        )
    )
    rows = [
        FilterHit(
            rule_id=hit.get("rule_id") if hit.get("rule_id") in known else None,
            rule_name=str(hit.get("rule_name") or "")[:200],
            scope=scope,
            action=hit.get("action") or FilterRule.Action.FLAG,
            surface=surface,
            conversation_id=conversation_id,
            message_id=message_id,
            user_id=user_id,
            visitor=visitor[:100],
            generation_id=generation_id[:64],
            excerpt=str(hit.get("excerpt") or "")[:500],
        )
        for hit in hits
    ]
    created = FilterHit.objects.bulk_create(rows)
    if created:
        dashboard_notify_on_commit(topic="filters", payload={"type": "filters.hits"})
    return created
