from __future__ import annotations

import logging
import signal
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils import timezone

from chat.services.completions import completion_usage_store
from chat.services.messages import generations_end_lost, message_generation_finish
from inference.connection import redis_client, worker_keys
from inference.loading import threads_configure
from inference.worker import InferenceWorker, VersionSpec
from models_admin.filters import content_filter_output, filter_hits_record
from models_admin.models import ModelVersion
from models_admin.selectors import model_version_get_production, model_versions_serving

logger = logging.getLogger(__name__)


def _spec(version: ModelVersion | None) -> VersionSpec | None:
    if version is None:
        return None
    return VersionSpec(id=version.pk, name=version.name, path=version.path)


def _production_version() -> VersionSpec | None:
    close_old_connections()
    return _spec(model_version_get_production())


def _extra_versions() -> list[VersionSpec]:
    close_old_connections()
    return [
        spec
        for version in model_versions_serving()
        if version.state != ModelVersion.State.PRODUCTION and (spec := _spec(version))
    ]


def _generation_store(generation_id: str, final: dict[str, Any], text: str) -> None:
    # Chat answers are stored by the chat app; a generation it does not know
    # (a command-line ``ask``, a benchmark) is left alone but its filter
    # hits are still kept.
    close_old_connections()
    answer = message_generation_finish(generation_id=generation_id, final=final, text=text)
    # An API call's tokens count even when its caller closed the stream.
    completion_usage_store(generation_id=generation_id, final=final)
    hits = final.get("filter_hits")
    if hits and answer is None:
        filter_hits_record(hits=hits, scope="output", generation_id=generation_id)


def _requests_lost(waiting: list[str]) -> None:
    # Answers created since the restart have their request queued or
    # running; older ones that have neither were lost with Redis.
    close_old_connections()
    before = timezone.now() - timedelta(seconds=10)
    generations_end_lost(waiting=set(waiting), before=before)


def _version_lookup(version_id: int) -> VersionSpec | None:
    close_old_connections()
    return _spec(ModelVersion.objects.filter(pk=version_id).first())


class Command(BaseCommand):
    help = "Run an inference worker: claim requests, generate, stream tokens to Redis."

    def handle(self, *args: Any, **options: Any) -> None:
        threads_configure(settings.INFERENCE_THREADS)
        worker = InferenceWorker(
            redis_client=redis_client(),
            keys=worker_keys(),
            production_version=_production_version,
            version_lookup=_version_lookup,
            extra_versions=_extra_versions,
            output_filter_factory=content_filter_output,
            device=settings.INFERENCE_DEVICE,
            dtype=settings.INFERENCE_DTYPE,
            slots=settings.INFERENCE_SLOTS,
            max_context=settings.INFERENCE_MAX_CONTEXT,
            step_token_budget=settings.INFERENCE_STEP_TOKENS,
            speculative_tokens=settings.INFERENCE_SPECULATIVE_TOKENS,
            speculative_max_batch=settings.INFERENCE_SPECULATIVE_MAX_BATCH,
            heartbeat_interval=settings.INFERENCE_HEARTBEAT_INTERVAL,
            heartbeat_ttl=settings.INFERENCE_HEARTBEAT_TTL,
            claim_timeout=settings.INFERENCE_CLAIM_TIMEOUT,
            drain_timeout=settings.INFERENCE_DRAIN_TIMEOUT,
            on_finished=_generation_store,
            on_redis_restart=_requests_lost,
        )

        def stop(signum: int, _frame: object) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Inference worker {worker.worker_id} starting")
        worker.run()
