from __future__ import annotations

from models_admin.models import ModelVersion


def model_version_get_production() -> ModelVersion | None:
    return ModelVersion.objects.filter(state=ModelVersion.State.PRODUCTION).first()


def model_version_get_by_folder(*, folder: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(folder=folder).first()
