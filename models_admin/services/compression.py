"""Compressing a model version: a GGUF copy for llama.cpp, quantized,
registered as a candidate version and measured like a checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from inference.llamacpp.export import QUANTIZATIONS, gguf_folder_build
from models_admin.models import Compression, ModelVersion
from models_admin.services.evaluations import evaluation_queue, evaluation_run
from models_admin.services.events import dashboard_notify_on_commit
from models_admin.services.model_versions import model_version_create, model_version_trainable

logger = logging.getLogger(__name__)


def _notify(compression: Compression) -> None:
    dashboard_notify_on_commit(
        topic="versions",
        payload={
            "type": "compression",
            "compression": compression.pk,
            "source": compression.source_id,
            "state": compression.state,
        },
    )


def compression_start(
    *,
    source: ModelVersion,
    quantization: str,
    user: AbstractBaseUser | None = None,
    enqueue: bool = True,
) -> Compression:
    """Queue a GGUF copy of source (a GGUF version: of the transformers
    version it was made from) in the given quantization."""
    if quantization not in QUANTIZATIONS:
        raise ValidationError(
            {
                "quantization": [
                    gettext("Pick one of %(quantizations)s.")
                    % {"quantizations": ", ".join(QUANTIZATIONS)}
                ]
            }
        )
    try:
        source = model_version_trainable(source)
    except ValidationError as exc:
        raise ValidationError({"source": exc.messages}) from None
    busy = Compression.objects.filter(
        source=source,
        quantization=quantization,
        state__in=[Compression.State.QUEUED, Compression.State.RUNNING],
    )
    if busy.exists():
        raise ValidationError(
            {
                "quantization": [
                    gettext("A %(quantization)s copy of %(name)s is already being made.")
                    % {"quantization": quantization, "name": source.name}
                ]
            }
        )
    compression = Compression(
        source=source,
        quantization=quantization,
        created_by_id=user.pk if user is not None else None,
    )
    with transaction.atomic():
        compression.save()
        _notify(compression)
        if enqueue:
            transaction.on_commit(lambda: _enqueue(compression.pk))
    return compression


def _enqueue(compression_id: int) -> None:
    from models_admin.tasks import compression_run_task

    compression_run_task.delay(compression_id)


def _claim(compression_id: int) -> Compression | None:
    with transaction.atomic():
        compression = (
            Compression.objects.select_for_update()
            .select_related("source")
            .filter(pk=compression_id)
            .first()
        )
        if compression is None or compression.finished:
            return None
        compression.state = Compression.State.RUNNING
        compression.started_at = timezone.now()
        compression.error = ""
        compression.save(update_fields=["state", "started_at", "error"])
        _notify(compression)
    return compression


def _finish(compression: Compression, state: str, *, error: str = "") -> Compression:
    compression.state = state
    compression.error = error
    compression.finished_at = timezone.now()
    with transaction.atomic():
        compression.save(update_fields=["state", "error", "finished_at", "result"])
        _notify(compression)
    return compression


def _version_name(source: ModelVersion, quantization: str) -> str:
    base = f"{source.name}-{quantization.upper()}"
    name, suffix = base, 2
    while ModelVersion.objects.filter(name=name).exists():
        name, suffix = f"{base}-{suffix}", suffix + 1
    return name


def compression_run(*, compression_id: int, measure_here: bool = False) -> Compression | None:
    """Make the copy, register it, then queue its measurement on the data
    its source was measured on (or run it in this process, ``measure_here``).
    A failure is recorded with its reason."""
    compression = _claim(compression_id)
    if compression is None:
        return None
    source = compression.source
    folder = (
        Path(settings.MODEL_DIR)
        / "compressed"
        / f"{source.pk}-{compression.quantization}-{compression.pk}"
    )
    try:
        if folder.exists():  # a run that died after building it
            shutil.rmtree(folder)
        gguf_folder_build(source.path, folder, quantization=compression.quantization)
        version = model_version_create(
            name=_version_name(source, compression.quantization),
            folder=folder,
            kind=ModelVersion.Kind.COMPRESSED,
            parent=source,
            dataset=source.dataset,
            metrics={"quantization": compression.quantization},
        )
    except Exception as exc:
        logger.exception("Compression %s failed", compression.pk)
        return _finish(compression, Compression.State.FAILED, error=str(exc))
    compression.result = version
    _finish(compression, Compression.State.COMPLETED)
    dataset = source.dataset
    if dataset is None:
        from models_admin.models import Dataset

        measured = list(source.metrics.get("eval_by_dataset", {}))
        dataset = Dataset.objects.filter(name__in=measured).order_by("-id").first()
    evaluation = evaluation_queue(version=version, dataset=dataset, enqueue=not measure_here)
    if measure_here:
        evaluation_run(evaluation_id=evaluation.pk)
    return compression
