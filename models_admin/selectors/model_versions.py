"""Model versions: production, the canary and which version answers a
conversation."""

from __future__ import annotations

import hashlib
from typing import Any

from models_admin.models import Canary, Dataset, DatasetExample, ModelVersion


def model_version_get_production() -> ModelVersion | None:
    return ModelVersion.objects.filter(state=ModelVersion.State.PRODUCTION).first()


def model_version_get_by_folder(*, folder: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(folder=folder).first()


def canary_get_active() -> Canary | None:
    return Canary.objects.select_related("version").filter(ended_at__isnull=True).first()


def canary_bucket(*, canary_id: int, conversation_id: int) -> float:
    """A conversation's place in [0, 100) for one canary: uniform over
    conversations, fixed for the pair."""
    digest = hashlib.sha256(f"canary:{canary_id}:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def model_version_route(*, conversation_id: int | None) -> ModelVersion | None:
    """The version that answers the next turn of a conversation: the
    canary for its share of conversations, production for the rest."""
    canary = canary_get_active()
    if (
        canary is not None
        and conversation_id is not None
        and canary_bucket(canary_id=canary.pk, conversation_id=conversation_id) < canary.percent
    ):
        return canary.version
    return model_version_get_production()


def model_versions_serving() -> list[ModelVersion]:
    """Production first, then the canary: what workers keep loaded."""
    versions = [v for v in [model_version_get_production()] if v is not None]
    canary = canary_get_active()
    if canary is not None and all(v.pk != canary.version_id for v in versions):
        versions.append(canary.version)
    return versions


def dataset_preview(*, dataset: Dataset, limit: int = 5) -> list[dict[str, Any]]:
    """The first examples of a dataset, with their split and token count
    (and a preference pair's rejected answer and origin)."""
    rows = DatasetExample.objects.filter(dataset=dataset).order_by("index")[:limit]
    return [
        {
            "index": row.index,
            "split": row.split,
            "tokens": row.tokens,
            "messages": row.messages,
            "rejected": row.rejected,
            "origin": row.origin,
        }
        for row in rows
    ]
