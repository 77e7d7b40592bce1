"""Writes of the models_admin app, one module per sub-domain: model
versions and promotion, datasets, training jobs."""

from models_admin.services.model_versions import (
    model_version_create,
    model_version_promote,
    model_version_register,
)

__all__ = ["model_version_create", "model_version_promote", "model_version_register"]
