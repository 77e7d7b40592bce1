"""Reads of the models_admin app, one module per sub-domain."""

from models_admin.selectors.model_versions import (
    canary_bucket,
    canary_get_active,
    dataset_preview,
    model_version_get_by_folder,
    model_version_get_production,
    model_version_route,
    model_versions_serving,
)

__all__ = [
    "canary_bucket",
    "canary_get_active",
    "dataset_preview",
    "model_version_get_by_folder",
    "model_version_get_production",
    "model_version_route",
    "model_versions_serving",
]
