from __future__ import annotations

from typing import Any

from models_admin.models import Dataset, DatasetExample, ModelVersion


def model_version_get_production() -> ModelVersion | None:
    return ModelVersion.objects.filter(state=ModelVersion.State.PRODUCTION).first()


def model_version_get_by_folder(*, folder: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(folder=folder).first()


def dataset_preview(*, dataset: Dataset, limit: int = 5) -> list[dict[str, Any]]:
    """The first examples of a dataset, with their split and token count."""
    rows = DatasetExample.objects.filter(dataset=dataset).order_by("index")[:limit]
    return [
        {"index": row.index, "split": row.split, "tokens": row.tokens, "messages": row.messages}
        for row in rows
    ]
