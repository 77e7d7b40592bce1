from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from inference.connection import redis_client, serving_epoch_key
from inference.formats import folder_backend
from models_admin.models import Canary, ModelVersion, Promotion
from models_admin.selectors import model_version_get_by_folder
from models_admin.services.events import dashboard_notify

logger = logging.getLogger(__name__)


def _folder_for_storage(path: Path) -> str:
    """Store folders under MODEL_DIR relative to it, so a database can move
    with its model directory to another host."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path(settings.MODEL_DIR)))
    except ValueError:
        return str(path)


def model_version_create(
    *,
    name: str,
    folder: Path,
    kind: str = ModelVersion.Kind.BASE,
    parent: ModelVersion | None = None,
    metrics: dict[str, Any] | None = None,
    job: Any = None,
    step: int | None = None,
    dataset: Any = None,
) -> ModelVersion:
    version = ModelVersion(
        name=name,
        folder=_folder_for_storage(folder),
        format=(
            ModelVersion.Format.GGUF
            if folder_backend(Path(folder)) == "llama.cpp"
            else ModelVersion.Format.TRANSFORMERS
        ),
        kind=kind,
        parent=parent,
        metrics=metrics or {},
        job=job,
        step=step,
        dataset=dataset,
    )
    version.full_clean()
    version.save()
    return version


def _production_lock() -> ModelVersion | None:
    """Lock and return the production row; the caller holds a transaction.
    Lock order: production, then the version promoted, then the canary."""
    return (
        ModelVersion.objects.select_for_update()
        .filter(state=ModelVersion.State.PRODUCTION)
        .first()
    )


def _canary_lock() -> Canary | None:
    """Lock and return the running canary; the caller holds a transaction."""
    return Canary.objects.select_for_update().filter(ended_at__isnull=True).first()


def serving_changed() -> None:
    """After commit, tell inference workers to reload what they serve (they
    also poll) and dashboards to refresh."""

    def announce() -> None:
        try:
            redis_client().incr(serving_epoch_key())
        except redis.RedisError as exc:
            # Workers still notice within their poll interval.
            logger.warning("Could not announce the serving change: %s", exc)
            return
        dashboard_notify(topic="versions", payload={"type": "versions.changed"})

    transaction.on_commit(announce)


def _pk(user: AbstractBaseUser | None) -> Any:
    return user.pk if user is not None else None


def _loadable_check(version: ModelVersion) -> None:
    if not (version.path / "config.json").is_file():
        raise ValidationError(
            {
                "version": [
                    gettext("%(name)s has no model files at %(path)s.")
                    % {"name": version.name, "path": version.path}
                ]
            }
        )


@transaction.atomic
def model_version_promote(
    *, version: ModelVersion, by: AbstractBaseUser | None = None, note: str = ""
) -> Promotion | None:
    """Make version the one production version and record who did it.

    Workers load it beside the old one: new turns go to it, running
    answers finish on the old one. A canary of this version ends as
    promoted. Promoting the version already in production records nothing
    and returns None.
    """
    current = _production_lock()
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if current is not None and current.pk == version.pk:
        return None
    _loadable_check(version)
    if current is not None:
        # Demote first: the database allows one production row at a time.
        current.state = ModelVersion.State.ARCHIVED
        current.save(update_fields=["state"])
    version.state = ModelVersion.State.PRODUCTION
    version.save(update_fields=["state"])
    promotion = Promotion(
        from_version=current, to_version=version, by_id=_pk(by), note=note.strip()[:5000]
    )
    promotion.full_clean()
    promotion.save()
    canary = _canary_lock()
    if canary is not None and canary.version_id == version.pk:
        _canary_end(canary, by=by, outcome=Canary.Outcome.PROMOTED)
    serving_changed()
    return promotion


@transaction.atomic
def model_version_rollback(*, by: AbstractBaseUser | None = None, note: str = "") -> Promotion:
    """Promote the version that production replaced last; raise
    ValidationError when there is none."""
    current = _production_lock()
    last = (
        Promotion.objects.select_related("from_version")
        .filter(to_version=current, from_version__isnull=False)
        .first()
        if current is not None
        else None
    )
    if last is None or last.from_version is None:
        raise ValidationError(gettext("There is no earlier production version to roll back to."))
    promotion = model_version_promote(
        version=last.from_version,
        by=by,
        note=note.strip() or f"Rollback from {current.name if current else 'nothing'}",
    )
    assert promotion is not None  # a different version by construction
    return promotion


def _canary_end(canary: Canary, *, by: AbstractBaseUser | None, outcome: str) -> None:
    canary.ended_at = timezone.now()
    canary.ended_by_id = _pk(by)
    canary.outcome = outcome
    canary.save(update_fields=["ended_at", "ended_by", "outcome"])


@transaction.atomic
def canary_start(
    *,
    version: ModelVersion,
    percent: int,
    by: AbstractBaseUser | None = None,
    note: str = "",
) -> Canary:
    """Send percent of conversations (sticky per conversation) to version.
    A running canary of another version ends first; one of the same
    version changes its share."""
    current = _production_lock()
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if current is not None and current.pk == version.pk:
        raise ValidationError(
            {"version": [gettext("%(name)s is already in production.") % {"name": version.name}]}
        )
    if current is None:
        raise ValidationError(
            {"version": [gettext("Nothing is in production to compare against.")]}
        )
    _loadable_check(version)
    running = _canary_lock()
    if running is not None and running.version_id == version.pk:
        running.percent = percent
        running.full_clean()
        running.save(update_fields=["percent"])
        serving_changed()
        return running
    if running is not None:
        _canary_end(running, by=by, outcome=Canary.Outcome.STOPPED)
    canary = Canary(
        version=version, percent=percent, started_by_id=_pk(by), note=note.strip()[:5000]
    )
    canary.full_clean()
    canary.save()
    serving_changed()
    return canary


@transaction.atomic
def canary_stop(*, by: AbstractBaseUser | None = None) -> Canary | None:
    """End the running canary: every conversation goes back to production.
    Return it, or None when none was running."""
    running = _canary_lock()
    if running is None:
        return None
    _canary_end(running, by=by, outcome=Canary.Outcome.STOPPED)
    serving_changed()
    return running


@transaction.atomic
def model_version_register(
    *,
    name: str,
    folder: Path,
    promote_if_none: bool = True,
    note: str = "",
    parent: ModelVersion | None = None,
    kind: str = ModelVersion.Kind.BASE,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Register a base model folder once; promote it when nothing is in
    production. Calling it again with the same folder changes nothing.
    parent names the version a GGUF folder was made from (what training
    starts from when it is picked)."""
    existing = model_version_get_by_folder(folder=_folder_for_storage(folder))
    version = existing or model_version_create(
        name=name, folder=folder, parent=parent, kind=kind, metrics=metrics
    )
    if promote_if_none and _production_lock() is None:
        model_version_promote(version=version, note=note)
        version.refresh_from_db()
    return version


def model_version_trainable(version: ModelVersion) -> ModelVersion:
    """The version training starts from when version is picked: itself,
    or for a GGUF version the transformers version it was made from."""
    current: ModelVersion | None = version
    while current is not None and current.format == ModelVersion.Format.GGUF:
        current = current.parent
    if current is None:
        raise ValidationError(
            gettext(
                "%(name)s is a GGUF version with no transformers version behind it: training "
                "needs transformers weights (register the folder it was made from)."
            )
            % {"name": version.name}
        )
    return current
