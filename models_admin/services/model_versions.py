from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from models_admin.models import ModelVersion, Promotion
from models_admin.selectors import model_version_get_by_folder


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
    """Lock and return the production row; the caller holds a transaction."""
    return (
        ModelVersion.objects.select_for_update()
        .filter(state=ModelVersion.State.PRODUCTION)
        .first()
    )


@transaction.atomic
def model_version_promote(
    *, version: ModelVersion, by: User | None = None, note: str = ""
) -> Promotion | None:
    """Make version the one production version and record who did it.

    Promoting the version already in production records nothing and
    returns None.
    """
    current = _production_lock()
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if current is not None and current.pk == version.pk:
        return None
    if current is not None:
        # Demote first: the database allows one production row at a time.
        current.state = ModelVersion.State.ARCHIVED
        current.save(update_fields=["state"])
    version.state = ModelVersion.State.PRODUCTION
    version.save(update_fields=["state"])
    promotion = Promotion(from_version=current, to_version=version, by=by, note=note)
    promotion.full_clean()
    promotion.save()
    return promotion


@transaction.atomic
def model_version_register(
    *, name: str, folder: Path, promote_if_none: bool = True, note: str = ""
) -> ModelVersion:
    """Register a base model folder once; promote it when nothing is in
    production. Calling it again with the same folder changes nothing."""
    existing = model_version_get_by_folder(folder=_folder_for_storage(folder))
    version = existing or model_version_create(name=name, folder=folder)
    if promote_if_none and _production_lock() is None:
        model_version_promote(version=version, note=note)
        version.refresh_from_db()
    return version
