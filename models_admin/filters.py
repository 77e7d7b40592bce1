"""Content filter rules: saving, importing and deleting them, reading
them and their hits, and running them on incoming messages and streamed
answers, every hit recorded.

Every rule change moves the rules' epoch (``FilterRulesEpoch``) in its
own transaction. A process compiles the enabled rules into one
``RuleBook`` and keeps it while the epoch stays where it was: a check
costs one primary-key read and the matching, and a change applies from
the next check on, in every web process and inference worker.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import Count, Max
from django.utils.translation import gettext

from inference.content_filter import RuleBook, RuleError, StreamFilter, Verdict
from models_admin.models import FilterHit, FilterRule, FilterRulesEpoch
from models_admin.pii import pii_mask
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


# --- changes -----------------------------------------------------------------


def filter_rules_changed() -> None:
    """Move the rules' epoch in the caller's transaction, so it commits
    (or not) with the change; open dashboards refresh after commit."""
    FilterRulesEpoch.objects.update_or_create(
        pk=FilterRulesEpoch.ROW, defaults={"token": secrets.token_hex(16)}
    )
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
        raise ValidationError(gettext("Expected a JSON list of rule objects."))
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


# --- reads -------------------------------------------------------------------


def filter_specs(*, enabled_only: bool = True) -> list[dict[str, Any]]:
    """Every rule as the matcher takes it, in priority order."""
    rules = FilterRule.objects.order_by("priority", "id")
    if enabled_only:
        rules = rules.filter(enabled=True)
    return [rule.spec() for rule in rules]


def filter_rules_export() -> list[dict[str, Any]]:
    """Every rule as JSON-ready data that ``filter_rules_import`` takes."""
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


def filter_rules_epoch() -> str:
    """The rules' epoch: one primary-key read ("" before any change)."""
    token = (
        FilterRulesEpoch.objects.filter(pk=FilterRulesEpoch.ROW)
        .values_list("token", flat=True)
        .first()
    )
    return token or ""


# --- running the rules ------------------------------------------------------


def _compile_error_log(spec: dict[str, Any], exc: RuleError) -> None:
    logger.error("Filter rule %s does not compile: %s", spec.get("name"), exc.message)


class _CompiledRules:
    """The enabled rules of this process, compiled at one epoch and
    shared by its threads."""

    def __init__(self) -> None:
        # The epoch and its book in one attribute, replaced whole, so a
        # thread never pairs one epoch with another's book.
        self.current: tuple[str, RuleBook] | None = None
        self._lock = threading.Lock()

    def at(self, epoch: str) -> RuleBook:
        """The rules compiled at epoch; compile them when the epoch is not
        the one they were compiled at."""
        current = self.current
        if current is None or current[0] != epoch:
            with self._lock:
                current = self.current
                if current is None or current[0] != epoch:
                    # Read after the epoch, the rules are at least as new
                    # as it says: no book is kept for an older epoch.
                    specs = filter_specs()
                    book = RuleBook(
                        specs, notice=settings.FILTER_BLOCK_NOTICE, on_error=_compile_error_log
                    )
                    current = self.current = (epoch, book)
                    logger.info("Compiled %d content filter rule(s)", len(specs))
        return current[1]


_compiled = _CompiledRules()


def compiled_rules() -> RuleBook:
    """The enabled rules, compiled (shared by this process's threads)."""
    return _compiled.at(filter_rules_epoch())


def content_filter_input(*, text: str, surface: str, site_id: int | None = None) -> Verdict:
    """Run the input rules of a surface (chat, widget, api), and of a
    widget site, on a message."""
    verdict = _compiled.at(filter_rules_epoch()).check(text, surface=surface, site=site_id)
    for hit in verdict.hits:
        if hit.timed_out:
            logger.error("Filter rule %s ran out of time; the message was blocked", hit.rule_name)
    return verdict


def content_filter_output(payload: dict[str, Any]) -> StreamFilter | None:
    """The output filter of one generation request (the worker's
    ``output_filter_factory``): the output rules of the request's surface
    and widget site, or None when none applies. A rule change applies from
    the next request on; while the database does not answer, the rules
    compiled last go on running."""
    try:
        book = _compiled.at(filter_rules_epoch())
    except DatabaseError as exc:
        if _compiled.current is None:
            raise
        logger.warning("Could not read the filter rules, using the last ones: %s", exc)
        book = _compiled.current[1]
    surface = str(payload.get("surface") or "chat")
    site = payload.get("site") if isinstance(payload.get("site"), int) else None
    return book.stream(surface=surface, site=site)


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
    """Store hits (``Hit.as_dict()`` rows) in the audit, their excerpts
    with emails, phone and card numbers masked (``models_admin.pii``)."""
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
            # Personal details around a match never reach the audit; the
            # match itself stays readable (a PII preset's is masked anyway).
            excerpt=pii_mask(str(hit.get("excerpt") or ""), own_rules=False)[:500],
        )
        for hit in hits
    ]
    created = FilterHit.objects.bulk_create(rows)
    if created:
        dashboard_notify_on_commit(topic="filters", payload={"type": "filters.hits"})
    return created
